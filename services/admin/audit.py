"""The audit log's I/O: `audit_log` is append-only, and this module is the only code that
touches it. It inserts (a new unique `_id` each time, so an insert can never overwrite an
entry) and reads; there is no update, replace or delete of it anywhere in the code base (a test
holds every module to that). In production, the admin tool's MongoDB user is granted only
`insert` and `find` on `audit_log` (README), so the database refuses anything else too.

Written by the admin CLI today, by the console later: each writer inserts its own entries."""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.admin.core import from_ms
from shared.collections import AUDIT_LOG

Db = AsyncDatabase[dict[str, Any]]


async def append(db: Db, entry: dict[str, Any]) -> None:
    await db[AUDIT_LOG].insert_one(entry)


async def entries(
    db: Db, *, account_id: str | None = None, since_ms: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Newest first."""
    query: dict[str, Any] = {}
    if account_id is not None:
        query["target.account_id"] = account_id
    if since_ms is not None:
        query["at"] = {"$gte": from_ms(since_ms)}
    return await (
        db[AUDIT_LOG]
        .find(query)
        .sort([("at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
        .to_list(None)
    )
