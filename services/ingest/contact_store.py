"""ingest's adapter for an account's contact lists and holds: reads of `suppressions` (status
writes it), `account_holds` (guard writes it); `blocked_recipients` and `opt_out_keywords`
(written here and by the admin CLI: inserts, deletes and whole-document replaces only).

Driver failures become DependencyUnavailable (503). Every lookup on the send path is by `_id`
(FerretDB pushes only a lone `_id` filter down to an index).
"""

from __future__ import annotations

from typing import Any, Protocol

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.ingest.conversations import Cursor
from shared import contact_lists
from shared.collections import ACCOUNT_HOLDS, BLOCKED_RECIPIENTS, OPT_OUT_KEYWORDS, SUPPRESSIONS
from shared.mongo import unavailable

Doc = dict[str, Any]


class ContactStore(Protocol):
    async def hold(self, account_id: str) -> Doc | None: ...
    async def blocked(self, blocked_id: str) -> Doc | None: ...
    async def suppression(self, suppression_id: str) -> Doc | None: ...

    async def suppressions(
        self, account_id: str, phone_number_id: str | None, limit: int, after: Cursor | None
    ) -> list[Doc]:
        """The account's suppressed contacts, latest first by `at`, past the cursor, up to
        limit + 1."""
        ...

    async def blocked_page(self, account_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        """The account's blocked numbers, newest first, past the cursor, up to limit + 1."""
        ...

    async def block(self, doc: Doc) -> bool:
        """Insert; False when the number is blocked already."""
        ...

    async def unblock(self, blocked_id: str) -> bool:
        """Delete; False when it was not blocked."""
        ...

    async def keywords(self, account_id: str) -> Doc | None: ...
    async def replace_keywords(self, doc: Doc) -> None: ...


class MongoContactStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._holds = db[ACCOUNT_HOLDS]
        self._blocked = db[BLOCKED_RECIPIENTS]
        self._suppressions = db[SUPPRESSIONS]
        self._keywords = db[OPT_OUT_KEYWORDS]

    @staticmethod
    async def _by_id(collection: Any, _id: str) -> Doc | None:
        try:
            found: Doc | None = await collection.find_one({"_id": _id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return found

    async def hold(self, account_id: str) -> Doc | None:
        return await self._by_id(self._holds, account_id)

    async def blocked(self, blocked_id: str) -> Doc | None:
        return await self._by_id(self._blocked, blocked_id)

    async def suppression(self, suppression_id: str) -> Doc | None:
        return await self._by_id(self._suppressions, suppression_id)

    async def keywords(self, account_id: str) -> Doc | None:
        return await self._by_id(self._keywords, account_id)

    async def suppressions(
        self, account_id: str, phone_number_id: str | None, limit: int, after: Cursor | None
    ) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}, {"suppressed": True}]
        if phone_number_id is not None:
            conditions.append({"phone_number_id": phone_number_id})
        if after is not None:
            conditions.append(_past("at", after))
        return await _page(self._suppressions, {"$and": conditions}, "at", limit + 1)

    async def blocked_page(self, account_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        conditions: list[Doc] = [contact_lists.blocked_entries(account_id)]
        if after is not None:
            conditions.append(_past("created_at", after))
        return await _page(self._blocked, {"$and": conditions}, "created_at", limit + 1)

    async def block(self, doc: Doc) -> bool:
        """The account's marker first (shared/contact_lists.py), then the entry."""
        marker = contact_lists.blocks_marker_doc(doc["account_id"], doc["created_at"])
        try:
            try:
                await self._blocked.insert_one(marker)
            except DuplicateKeyError:
                pass  # the account has blocked before
            await self._blocked.insert_one(dict(doc))
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return True

    async def unblock(self, blocked_id: str) -> bool:
        try:
            result = await self._blocked.delete_one({"_id": blocked_id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return result.deleted_count > 0

    async def replace_keywords(self, doc: Doc) -> None:
        try:
            try:
                await self._keywords.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            except DuplicateKeyError:  # a concurrent first write created it: replace that one
                await self._keywords.replace_one({"_id": doc["_id"]}, doc)
        except PyMongoError as exc:
            raise unavailable(exc) from exc


def _past(field: str, after: Cursor) -> Doc:
    return {"$or": [{field: {"$lt": after.at}}, {field: after.at, "_id": {"$lt": after.id}}]}


async def _page(collection: Any, query: Doc, field: str, limit: int) -> list[Doc]:
    try:
        found: list[Doc] = await (
            collection.find(query)
            .sort([(field, DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .to_list(None)
        )
    except PyMongoError as exc:
        raise unavailable(exc) from exc
    return found
