"""The error tree every service speaks. Adapters translate library exceptions into it; cores raise
only these; one HTTP middleware turns them into responses (shared/http.py)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base: a known failure with a machine-readable `code`."""

    code = "service_error"
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details = details or {}


class PermanentError(ServiceError):
    """Retrying will not help: the input or a business rule says no."""

    code = "permanent_error"
    http_status = 400


class TransientError(ServiceError):
    """A dependency is unavailable or asked us to slow down; retrying later may succeed."""

    code = "dependency_unavailable"
    http_status = 503


class InvalidRequest(PermanentError):
    code = "invalid_request"
    http_status = 400


class Unauthorized(PermanentError):
    code = "unauthorized"
    http_status = 401


class Forbidden(PermanentError):
    code = "forbidden"
    http_status = 403


class NotFound(PermanentError):
    code = "not_found"
    http_status = 404


class Conflict(PermanentError):
    code = "conflict"
    http_status = 409


class InvalidSignature(PermanentError):
    code = "invalid_signature"
    http_status = 401


class InsufficientCredit(PermanentError):
    code = "insufficient_credit"
    http_status = 402


class DependencyUnavailable(TransientError):
    code = "dependency_unavailable"
    http_status = 503


# `details.record_written` of the DependencyUnavailable a producer's send raises: "no" (refused,
# purged or rejected: it will never be written) or "unknown" (it may have been, e.g. it was on
# the wire when the time ran out): whoever answers for the record must not say it was not sent.
RECORD_NOT_WRITTEN, RECORD_WRITTEN_UNKNOWN = "no", "unknown"


class RateLimited(TransientError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
