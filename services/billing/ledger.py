"""The `ledger` collection: one document per credit movement, under a unique key.

The unique `_id` is what makes billing idempotent without transactions: an event whose entry
exists has been decided before (see core.py for how a duplicate is told from an unfinished
attempt).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.billing.core import LedgerEntry, LowBalanceNotice
from services.billing.mongo_errors import translated
from shared.collections import LEDGER
from shared.mongo import DUPLICATE_KEY, find_by_ids


@dataclass(frozen=True)
class EntryAmounts:
    """What the reconciler needs of an entry (a LedgerEntry has the same fields)."""

    account_id: str
    kind: str
    amount: int
    reserved_amount: int
    source: str
    source_offset: int
    at: int = 0
    key: str = ""


AMOUNT_FIELDS = {
    "_id": 1,
    "account_id": 1,
    "kind": 1,
    "amount": 1,
    "reserved_amount": 1,
    "source": 1,
    "source_offset": 1,
    "at": 1,
}

# The deadline of the reconciler's read of the ledger (one query over the whole tail).
READ_TIMEOUT_S = 120.0

# Where a paged reader of the ledger got to: the (at, _id) of the last entry it read. Entries
# are read in (at, _id) order; an entry is written within seconds of its `at` (billing's clock
# when it decided), so a reader that stays a margin behind the present never misses one.
LedgerPosition = tuple[int, str]


def after(position: LedgerPosition | None) -> dict[str, Any]:
    """The filter for entries after `position` in (at, _id) order."""
    if position is None:
        return {}
    at, key = position
    return {"$or": [{"at": {"$gt": at}}, {"at": at, "_id": {"$gt": key}}]}


def _both(*filters: dict[str, Any]) -> dict[str, Any]:
    present = [f for f in filters if f]
    return present[0] if len(present) == 1 else {"$and": present} if present else {}


class Ledger:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._entries = db[LEDGER]

    async def get(self, key: str) -> LedgerEntry | None:
        with translated():
            document = await self._entries.find_one({"_id": key})
        return None if document is None else entry_from_document(document)

    async def get_many(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        """The entries stored under `keys`, by key (a key with none is left out): one `$in`
        per 500 keys (`shared.mongo.find_by_ids`), for a batch's reads."""
        if not keys:
            return {}
        with translated():
            documents = await find_by_ids(self._entries, keys)
        return {d["_id"]: entry_from_document(d) for d in documents}

    async def add(self, entry: LedgerEntry) -> LedgerEntry | None:
        """Insert `entry`; if its key is taken, return the entry stored under it instead."""
        try:
            with translated():
                await self._entries.insert_one(entry_to_document(entry))
            return None
        except DuplicateKeyError:
            stored = await self.get(entry.key)
            if stored is None:  # a unique key never disappears: this is not our collection
                raise
            return stored

    async def add_all(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """Insert `entries` in one round trip; return the keys that were taken already (those
        entries are not written, every other one is)."""
        if not entries:
            return set()
        try:
            with translated():
                await self._entries.insert_many(
                    [entry_to_document(e) for e in entries], ordered=False
                )
            return set()
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {entries[e["index"]].key for e in errors}

    async def remove(self, key: str) -> None:
        """Delete an entry that no balance has applied: the one use is a record given up after
        a bug between its entry and its balance (worker.py), which must leave no money
        half-moved. Entries are otherwise never changed."""
        with translated():
            await self._entries.delete_one({"_id": key})

    async def amounts_of(self, key: str) -> EntryAmounts | None:
        with translated():
            document = await self._entries.find_one({"_id": key}, AMOUNT_FIELDS)
        return None if document is None else _amounts(document)

    async def reserves_page(
        self, position: LedgerPosition | None, cutoff: int, limit: int
    ) -> list[LedgerEntry]:
        """Up to `limit` reserve entries written at or before `cutoff` (ms) and after
        `position`, in (at, _id) order: one page of the reservation sweeper."""
        query = _both({"kind": "reserve", "at": {"$lte": cutoff}}, after(position))
        with translated():
            documents = await self._entries.find(query).sort(_ORDER).limit(limit).to_list(None)
        return [entry_from_document(d) for d in documents]

    async def amounts_after(
        self, position: LedgerPosition | None, batch: int
    ) -> AsyncIterator[list[EntryAmounts]]:
        """Every entry after `position`, in (at, _id) order, with only what the reconciler
        sums, from ONE query, handed out `batch` at a time. FerretDB pushes down no filter but
        a lone `_id` and sorts in memory, so each query costs a scan of the whole ledger:
        reading in pages of 1,000 scanned it once per page (~100 scans a pass at 100 msg/s,
        quadratic as the ledger grew); one query scans it once per pass. On MongoDB it is a
        cursor over the (at, _id) index. The pass has a deadline of its own (a scan of a big
        ledger can outlast one operation's), each batch its own."""
        cursor = self._entries.find(after(position), AMOUNT_FIELDS, batch_size=batch).sort(_ORDER)
        try:
            while True:
                with translated(), pymongo.timeout(READ_TIMEOUT_S):
                    documents = await cursor.to_list(batch)
                if not documents:
                    return
                yield [_amounts(d) for d in documents]
        finally:
            await cursor.close()

    async def entries_of(self, account_id: str) -> list[LedgerEntry]:
        with translated():
            documents = await self._entries.find({"account_id": account_id}).to_list(None)
        return [entry_from_document(d) for d in documents]


_ORDER = [("at", 1), ("_id", 1)]


def _amounts(document: dict[str, Any]) -> EntryAmounts:
    return EntryAmounts(
        account_id=document["account_id"],
        kind=document["kind"],
        amount=int(document["amount"]),
        reserved_amount=int(document.get("reserved_amount", 0)),
        source=document["source"],
        source_offset=int(document["source_offset"]),
        at=int(document.get("at", 0)),
        key=str(document["_id"]),
    )


def entry_to_document(entry: LedgerEntry) -> dict[str, Any]:
    notice = entry.low_balance
    return {
        "_id": entry.key,
        "account_id": entry.account_id,
        "kind": entry.kind,
        "amount": entry.amount,
        "reserved_amount": entry.reserved_amount,
        "at": entry.at,
        "source": entry.source,
        "source_offset": entry.source_offset,
        "source_event_id": entry.source_event_id,
        "message_id": entry.message_id,
        "category": entry.category,
        "region": entry.region,
        "rate_card_version": entry.rate_card_version,
        "low_balance": None
        if notice is None
        else {
            "crossing": notice.crossing,
            "available": notice.available,
            "threshold": notice.threshold,
            "occurred_at": notice.occurred_at,
        },
        "available_after": entry.available_after,
        "reason": entry.reason,
    }


def entry_from_document(document: dict[str, Any]) -> LedgerEntry:
    notice = document.get("low_balance")
    return LedgerEntry(
        key=document["_id"],
        account_id=document["account_id"],
        kind=document["kind"],
        amount=int(document["amount"]),
        reserved_amount=int(document.get("reserved_amount", 0)),
        at=int(document["at"]),
        source=document["source"],
        source_offset=int(document["source_offset"]),
        source_event_id=document["source_event_id"],
        message_id=document.get("message_id"),
        category=document.get("category", ""),
        region=document.get("region", ""),
        rate_card_version=document.get("rate_card_version", ""),
        low_balance=None
        if notice is None
        else LowBalanceNotice(
            crossing=int(notice["crossing"]),
            available=int(notice["available"]),
            threshold=int(notice["threshold"]),
            occurred_at=int(notice["occurred_at"]),
        ),
        available_after=(
            None if document.get("available_after") is None else int(document["available_after"])
        ),
        reason=str(document.get("reason") or ""),
    )
