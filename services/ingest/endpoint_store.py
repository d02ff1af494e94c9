"""ingest's adapter for webhook endpoints: `webhook_endpoints` (written here, and by the admin
CLI for a client), and reads of notify's `endpoint_states` and `delivery_attempts`.

Driver failures become DependencyUnavailable (503).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.ingest.conversations import Cursor
from shared.collections import DELIVERY_ATTEMPTS, ENDPOINT_STATES, WEBHOOK_ENDPOINTS
from shared.mongo import unavailable

Doc = dict[str, Any]


class EndpointStore(Protocol):
    async def insert(self, doc: Doc) -> None: ...
    async def get(self, endpoint_id: str) -> Doc | None:
        """By id alone: the caller checks the owner."""
        ...

    async def count_in_use(self, account_id: str) -> int:
        """The account's endpoints that are not deleted."""
        ...

    async def page(self, account_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        """The account's endpoints that are not deleted, newest first, past the cursor
        (created_at, id), up to limit + 1."""
        ...

    async def update(self, endpoint_id: str, changes: Doc) -> None: ...
    async def states(self, endpoint_ids: list[str]) -> dict[str, Doc]:
        """notify's `endpoint_states` of these endpoints (those it has), by id."""
        ...

    async def attempts(self, endpoint_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        """The endpoint's delivery attempts, newest first, past the cursor (at, id), up to
        limit + 1."""
        ...


class MongoEndpointStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._endpoints = db[WEBHOOK_ENDPOINTS]
        self._states = db[ENDPOINT_STATES]
        self._attempts = db[DELIVERY_ATTEMPTS]

    async def insert(self, doc: Doc) -> None:
        try:
            await self._endpoints.insert_one(doc)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def get(self, endpoint_id: str) -> Doc | None:
        try:
            return await self._endpoints.find_one({"_id": endpoint_id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def count_in_use(self, account_id: str) -> int:
        try:
            return await self._endpoints.count_documents(
                {"account_id": account_id, "deleted_at": None}
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def page(self, account_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}, {"deleted_at": None}]
        if after is not None:
            conditions.append(_older(after))
        return await _find(self._endpoints, {"$and": conditions}, "created_at", limit + 1)

    async def update(self, endpoint_id: str, changes: Doc) -> None:
        try:
            await self._endpoints.update_one({"_id": endpoint_id}, {"$set": changes})
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def states(self, endpoint_ids: list[str]) -> dict[str, Doc]:
        # Lookups by _id, all in flight at once: FerretDB pushes only a lone _id filter down to
        # its index (see MongoMessageStore.ledger_entries_of).
        try:
            found = await asyncio.gather(
                *(self._states.find_one({"_id": endpoint_id}) for endpoint_id in endpoint_ids)
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return {doc["_id"]: doc for doc in found if doc is not None}

    async def attempts(self, endpoint_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        conditions: list[Doc] = [{"endpoint_id": endpoint_id}]
        if after is not None:
            conditions.append(
                {"$or": [{"at": {"$lt": after.at}}, {"at": after.at, "_id": {"$lt": after.id}}]}
            )
        return await _find(self._attempts, {"$and": conditions}, "at", limit + 1)


def _older(after: Cursor) -> Doc:
    return {
        "$or": [
            {"created_at": {"$lt": after.at}},
            {"created_at": after.at, "_id": {"$lt": after.id}},
        ]
    }


async def _find(collection: Any, query: Doc, time_field: str, limit: int) -> list[Doc]:
    try:
        return await (
            collection.find(query)
            .sort([(time_field, DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .to_list(None)
        )
    except PyMongoError as exc:
        raise unavailable(exc) from exc
