"""guard's MongoDB adapter: its own collections (`account_holds`, `guard_states`,
`guard_recipients`: guard is their only writer) and reads of the admin CLI's `accounts`
(per-account rule overrides) and `phone_numbers`, and of status's `number_states` (which of an
account's numbers Meta flagged).

Driver failures become DependencyUnavailable (transient: the batch is retried, then the process
stops without committing). Lookups by `_id`, concurrently (FerretDB pushes only a lone `_id`
filter down to an index).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from shared.collections import (
    ACCOUNT_HOLDS,
    ACCOUNTS,
    GUARD_RECIPIENTS,
    GUARD_STATES,
    NUMBER_STATES,
    PHONE_NUMBERS,
)
from shared.mongo import DUPLICATE_KEY, unavailable

Doc = dict[str, Any]
T = TypeVar("T")


async def _call(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except PyMongoError as exc:
        raise unavailable(exc) from exc


class GuardStore(Protocol):
    async def states(self, account_ids: list[str]) -> dict[str, Doc]: ...
    async def save_state(self, doc: Doc) -> None: ...
    async def recipients(self, ids: list[str]) -> dict[str, Doc]: ...
    async def insert_recipients(self, docs: list[Doc]) -> None:
        """Insert; a document whose id exists is left as it is."""
        ...

    async def hold(self, account_id: str) -> Doc | None: ...
    async def set_hold(self, account_id: str, fields: Doc) -> Doc:
        """`$set` the fields on the account's hold document; the document afterwards."""
        ...

    async def rule_overrides(self, account_id: str) -> Doc | None: ...
    async def flagged_numbers(self, account_id: str) -> list[int]:
        """When each of the account's numbers was flagged (quality RED), for the numbers
        whose latest quality event is a flag."""
        ...


class MongoGuardStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db

    async def _by_ids(
        self, collection: str, ids: list[str], projection: Doc | None = None
    ) -> dict[str, Doc]:
        found = await _call(
            lambda: asyncio.gather(
                *(self._db[collection].find_one({"_id": i}, projection) for i in ids)
            )
        )
        return {doc["_id"]: doc for doc in found if doc is not None}

    async def states(self, account_ids: list[str]) -> dict[str, Doc]:
        return await self._by_ids(GUARD_STATES, account_ids)

    async def save_state(self, doc: Doc) -> None:
        await _call(
            lambda: self._db[GUARD_STATES].replace_one({"_id": doc["_id"]}, doc, upsert=True)
        )

    async def recipients(self, ids: list[str]) -> dict[str, Doc]:
        return await self._by_ids(GUARD_RECIPIENTS, ids)

    async def insert_recipients(self, docs: list[Doc]) -> None:
        if not docs:
            return
        try:
            await self._db[GUARD_RECIPIENTS].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise unavailable(exc) from exc
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def hold(self, account_id: str) -> Doc | None:
        return await _call(lambda: self._db[ACCOUNT_HOLDS].find_one({"_id": account_id}))

    async def set_hold(self, account_id: str, fields: Doc) -> Doc:
        holds = self._db[ACCOUNT_HOLDS]
        try:
            await _call(
                lambda: holds.update_one({"_id": account_id}, {"$set": fields}, upsert=True)
            )
        except DuplicateKeyError:  # another guard process created it meanwhile
            await _call(lambda: holds.update_one({"_id": account_id}, {"$set": fields}))
        return await self.hold(account_id) or {"_id": account_id}

    async def rule_overrides(self, account_id: str) -> Doc | None:
        doc = await _call(
            lambda: self._db[ACCOUNTS].find_one({"_id": account_id}, {"guard_rules": 1})
        )
        rules = (doc or {}).get("guard_rules")
        return rules if isinstance(rules, dict) else None

    async def flagged_numbers(self, account_id: str) -> list[int]:
        numbers = await _call(
            lambda: (
                self._db[PHONE_NUMBERS].find({"account_id": account_id}, {"_id": 1}).to_list(None)
            )
        )
        states = await self._by_ids(
            NUMBER_STATES, [n["_id"] for n in numbers], {"quality_event": 1, "quality_event_at": 1}
        )
        return [
            int(s["quality_event_at"])
            for s in states.values()
            if s.get("quality_event") == "FLAGGED" and isinstance(s.get("quality_event_at"), int)
        ]

    # --- retention ---------------------------------------------------------------------------
    async def recipients_before(self, cutoff_ms: int, limit: int) -> list[str]:
        docs = await _call(
            lambda: (
                self._db[GUARD_RECIPIENTS]
                .find({"first_seen": {"$lt": cutoff_ms}}, {"_id": 1})
                .limit(limit)
                .to_list(None)
            )
        )
        return [str(d["_id"]) for d in docs]

    async def delete_recipients(self, ids: list[str]) -> int:
        result = await _call(lambda: self._db[GUARD_RECIPIENTS].delete_many({"_id": {"$in": ids}}))
        return result.deleted_count
