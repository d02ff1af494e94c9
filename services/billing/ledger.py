"""The `ledger` collection: one document per credit movement, under a unique key.

The unique `_id` is what makes billing idempotent without transactions: an event whose entry
exists has been decided before (see core.py for how a duplicate is told from an unfinished
attempt).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.billing.core import LedgerEntry, LowBalanceNotice
from services.billing.mongo_errors import translated
from shared.collections import LEDGER
from shared.mongo import DUPLICATE_KEY


@dataclass(frozen=True)
class EntryAmounts:
    """What the reconciler needs of an entry (a LedgerEntry has the same fields)."""

    account_id: str
    kind: str
    amount: int
    reserved_amount: int
    source: str
    source_offset: int


AMOUNT_FIELDS = {"_id": 0, "account_id": 1, "kind": 1, "amount": 1, "reserved_amount": 1,
                 "source": 1, "source_offset": 1}


class Ledger:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._entries = db[LEDGER]

    async def get(self, key: str) -> LedgerEntry | None:
        with translated():
            document = await self._entries.find_one({"_id": key})
        return None if document is None else entry_from_document(document)

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
                await self._entries.insert_many([entry_to_document(e) for e in entries],
                                                ordered=False)
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

    async def amounts(self, chunk: int = 500) -> AsyncIterator[EntryAmounts]:
        """Every entry, with only what the reconciler sums, read in chunks of `chunk`."""
        with translated():
            cursor = self._entries.find({}, AMOUNT_FIELDS, batch_size=chunk)
            async for document in cursor:
                yield EntryAmounts(
                    account_id=document["account_id"], kind=document["kind"],
                    amount=int(document["amount"]),
                    reserved_amount=int(document.get("reserved_amount", 0)),
                    source=document["source"], source_offset=int(document["source_offset"]))

    async def reserves_before(self, cutoff: int) -> list[LedgerEntry]:
        """Reserve entries written at or before `cutoff` (ms), settled or not."""
        with translated():
            documents = await self._entries.find(
                {"kind": "reserve", "at": {"$lte": cutoff}}).to_list(None)
        return [entry_from_document(d) for d in documents]

    async def entries_of(self, account_id: str) -> list[LedgerEntry]:
        with translated():
            documents = await self._entries.find({"account_id": account_id}).to_list(None)
        return [entry_from_document(d) for d in documents]


def entry_to_document(entry: LedgerEntry) -> dict[str, Any]:
    notice = entry.low_balance
    return {
        "_id": entry.key, "account_id": entry.account_id, "kind": entry.kind,
        "amount": entry.amount, "reserved_amount": entry.reserved_amount, "at": entry.at,
        "source": entry.source, "source_offset": entry.source_offset,
        "source_event_id": entry.source_event_id, "message_id": entry.message_id,
        "category": entry.category, "region": entry.region,
        "rate_card_version": entry.rate_card_version,
        "low_balance": None if notice is None else {
            "crossing": notice.crossing, "available": notice.available,
            "threshold": notice.threshold, "occurred_at": notice.occurred_at},
        "available_after": entry.available_after,
    }


def entry_from_document(document: dict[str, Any]) -> LedgerEntry:
    notice = document.get("low_balance")
    return LedgerEntry(
        key=document["_id"], account_id=document["account_id"], kind=document["kind"],
        amount=int(document["amount"]), reserved_amount=int(document.get("reserved_amount", 0)),
        at=int(document["at"]), source=document["source"],
        source_offset=int(document["source_offset"]),
        source_event_id=document["source_event_id"], message_id=document.get("message_id"),
        category=document.get("category", ""), region=document.get("region", ""),
        rate_card_version=document.get("rate_card_version", ""),
        low_balance=None if notice is None else LowBalanceNotice(
            crossing=int(notice["crossing"]), available=int(notice["available"]),
            threshold=int(notice["threshold"]), occurred_at=int(notice["occurred_at"])),
        available_after=(None if document.get("available_after") is None
                         else int(document["available_after"])),
    )
