"""The translation of PyMongo failures that is common to billing's two collections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError

from shared.mongo import unavailable


def is_transient(exc: PyMongoError) -> bool:
    return (
        isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
        or exc.timeout
        or exc.has_error_label("RetryableWriteError")
    )


@contextmanager
def translated() -> Iterator[None]:
    """Database outages become DependencyUnavailable (retried); anything else is left alone:
    it is about our data or our code, and retrying it blindly would hide it."""
    try:
        yield
    except PyMongoError as exc:
        if is_transient(exc):
            raise unavailable(exc) from exc
        raise
