"""Idempotency records (a copy of each keyed request) are deleted 48 h after the request, page
by page, on the real database; younger ones stay, since a retry within 24 h needs them."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from services.ingest.repository import MongoIdempotencyStore
from services.ingest.sweeper import IdempotencySweeper
from shared.clock import FakeClock
from shared.collections import IDEMPOTENCY_KEYS
from shared.message_docs import from_ms

NOW = 1_764_000_000_000
HOUR = 3_600_000


class CountedPages:
    """The real store, counting the pages the sweeper asks for."""

    def __init__(self, store: MongoIdempotencyStore) -> None:
        self.store = store
        self.pages: list[int] = []

    async def created_before(self, cutoff: Any, limit: int) -> list[str]:
        ids = await self.store.created_before(cutoff, limit)
        self.pages.append(len(ids))
        return ids

    async def delete(self, record_ids: list[str]) -> int:
        return await self.store.delete(record_ids)


async def test_records_older_than_48_hours_are_deleted_page_by_page(
    mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> None:
    db = mongo[f"it_{unique}"]
    try:
        records = db[IDEMPOTENCY_KEYS]
        await records.insert_many(
            [
                {
                    "_id": f"acc_1:key:old{i}",
                    "account_id": "acc_1",
                    "recipient": "+447911123456",
                    "created_at": from_ms(NOW - 49 * HOUR - i),
                }
                for i in range(7)
            ]
            + [
                {
                    "_id": f"acc_1:key:young{i}",
                    "account_id": "acc_1",
                    "recipient": "+447911123456",
                    "created_at": from_ms(NOW - 47 * HOUR),
                }
                for i in range(2)
            ]
        )
        store = CountedPages(MongoIdempotencyStore(db))
        sweeper = IdempotencySweeper(store, FakeClock(start_ms=NOW), page_size=3)

        assert await sweeper.sweep_once() == 7
        assert store.pages == [3, 3, 1]  # until a page came back short
        left = {d["_id"] for d in await records.find({}, {"_id": 1}).to_list(None)}
        assert left == {"acc_1:key:young0", "acc_1:key:young1"}
        assert await sweeper.sweep_once() == 0
    finally:
        await mongo.drop_database(db.name)
