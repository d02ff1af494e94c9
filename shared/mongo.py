"""MongoDB access through PyMongo's native asyncio client (motor is deprecated since 2026-05-14).

Code here and in the services uses only what both MongoDB and FerretDB (the local stand-in)
support: no transactions, no TTL indexes, no reliance on conditional updates being atomic.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from shared.errors import DependencyUnavailable

# The server's code for a write refused by a unique index (in a BulkWriteError's writeErrors).
DUPLICATE_KEY = 11000


def make_client(url: str, **overrides: Any) -> AsyncMongoClient[dict[str, Any]]:
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": 5000,
        "connectTimeoutMS": 5000,
        "tz_aware": True,
    }
    options.update(overrides)
    return AsyncMongoClient(url, **options)


async def mongo_ready(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=2)
        return True
    except (PyMongoError, TimeoutError, OSError):
        return False


def unavailable(exc: PyMongoError) -> DependencyUnavailable:
    """Translate a driver failure that is not about our data into the transient branch."""
    return DependencyUnavailable(f"database unavailable: {type(exc).__name__}",
                                 details={"dependency": "mongodb"})
