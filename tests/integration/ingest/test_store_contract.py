"""The in-memory stand-ins used by the unit tests behave like the real adapters on the real
database: same unique constraints, same lookups, same ordering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.ingest import core
from services.ingest.repository import (
    DuplicateMessage,
    MongoDirectory,
    MongoIdempotencyStore,
    MongoMessageStore,
)
from shared.collections import (
    ACCOUNTS,
    API_KEYS,
    BALANCES,
    LEDGER,
    MESSAGES,
    PHONE_NUMBERS,
    TEMPLATES,
    ensure_indexes,
)
from tests.unit.ingest.fakes import FakeDirectory, FakeIdempotencyStore, FakeMessageStore

NOW = 1_764_000_000_000


@pytest.fixture(params=["fake", "mongo"])
async def stores(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(idempotency store, message store, directory, a function that puts a document into a
    collection)."""
    if request.param == "fake":
        directory = FakeDirectory()
        tables = {
            API_KEYS: directory.api_keys,
            ACCOUNTS: directory.accounts,
            PHONE_NUMBERS: directory.phones,
            TEMPLATES: directory.templates,
            BALANCES: directory.balances,
        }

        messages = FakeMessageStore()
        tables[MESSAGES] = messages.docs
        tables[LEDGER] = messages.ledger

        async def put_fake(collection: str, doc: dict[str, Any]) -> None:
            tables[collection][doc["_id"]] = doc

        yield FakeIdempotencyStore(), messages, directory, put_fake
        return
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, MESSAGES)

    async def put_mongo(collection: str, doc: dict[str, Any]) -> None:
        await db[collection].insert_one(dict(doc))

    try:
        yield MongoIdempotencyStore(db), MongoMessageStore(db), MongoDirectory(db), put_mongo
    finally:
        await mongo.drop_database(db.name)


def _doc(message_id: str, account: str = "acc", ms: int = NOW) -> dict[str, Any]:
    return {
        "_id": message_id,
        "account_id": account,
        "status": "accepted",
        "created_at": core.from_ms(ms),
        "content": {"body": "x"},
    }


def _record(record_id: str, message_id: str) -> dict[str, Any]:
    return {**_doc(message_id), "_id": record_id, "message_id": message_id, "body_hash": "h"}


async def test_an_idempotency_record_is_taken_once_and_found_by_id(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    records, _, _, _ = stores
    await records.insert(_record("acc:key:1:k", "m1"))
    with pytest.raises(DuplicateMessage):
        await records.insert(_record("acc:key:1:k", "m2"))
    await records.insert(_record("other:key:1:k", "m3"))
    await records.insert(_record("acc:key:0:k", "m4"))
    found = await records.find(["acc:key:1:k", "acc:key:0:k", "acc:key:9:k"])
    assert sorted(r["message_id"] for r in found) == ["m1", "m4"]


async def test_concurrent_records_with_one_id_store_exactly_one(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    records, _, _, _ = stores
    outcomes = await asyncio.gather(
        *(records.insert(_record("acc:key:1:k", f"m{i}")) for i in range(5)), return_exceptions=True
    )
    assert sum(1 for o in outcomes if o is None) == 1
    assert all(isinstance(o, DuplicateMessage) for o in outcomes if o is not None)


async def test_get_is_scoped_to_the_account(stores: tuple[Any, Any, Any, Any]) -> None:
    _, store, _, put = stores
    await put(MESSAGES, _doc("m1"))
    assert (await store.get("acc", "m1"))["_id"] == "m1"
    assert await store.get("other", "m1") is None


async def test_list_is_newest_first_with_ties_broken_by_id_and_honours_filters(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    _, store, _, put = stores
    for message_id, ms in (("a", NOW), ("b", NOW), ("c", NOW + 1), ("d", NOW - 1)):
        await put(MESSAGES, _doc(message_id, ms=ms))
    await put(MESSAGES, _doc("x", account="other", ms=NOW + 5))
    first = await store.list("acc", core.ListQuery(limit=2))
    assert [d["_id"] for d in first] == ["c", "b", "a"]  # limit + 1
    rest = await store.list("acc", core.ListQuery(limit=2, after=(core.from_ms(NOW), "b")))
    assert [d["_id"] for d in rest] == ["a", "d"]
    window = await store.list(
        "acc", core.ListQuery(limit=10, since=core.from_ms(NOW), until=core.from_ms(NOW + 1))
    )
    assert [d["_id"] for d in window] == ["b", "a"]
    assert await store.list("acc", core.ListQuery(limit=10, status="sent")) == []


async def test_ledger_entries_of_a_page_come_back_per_message_in_one_call(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    _, store, _, put = stores
    await put(LEDGER, {"_id": "m1:reserve", "kind": "reserve", "amount": 10})
    await put(LEDGER, {"_id": "m1:settle", "kind": "charge", "amount": 8})
    await put(LEDGER, {"_id": "m2:reserve", "kind": "reserve", "amount": 10})
    await put(LEDGER, {"_id": "topup:x", "kind": "topup", "amount": 99})
    # m4: released after a guessed failure, then charged late when Meta billed its delivery
    await put(LEDGER, {"_id": "m4:reserve", "kind": "reserve", "amount": 10})
    await put(LEDGER, {"_id": "m4:settle", "kind": "release", "amount": 10})
    await put(LEDGER, {"_id": "m4:late-charge", "kind": "charge", "amount": 7})
    entries = await store.ledger_entries_of(["m1", "m2", "m3", "m4"])
    assert list(entries) == ["m1", "m2", "m3", "m4"]
    assert [(r and r["amount"], s and s["amount"]) for r, s in entries.values()] == [
        (10, 8),
        (10, None),
        (None, None),
        (10, 7),
    ]
    assert core.price_view(*entries["m4"], "USD") == {
        "state": "charged",
        "amount": 7,
        "currency": "USD",
        "unit": "micros",
    }
    assert entries["m1"] == await store.ledger_entries("m1")
    assert await store.ledger_entries_of([]) == {}


async def test_directory_lookups_find_by_id_and_answer_none_when_missing(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    _, _, directory, put = stores
    await put(API_KEYS, {"_id": "h1", "account_id": "acc", "revoked_at": None})
    await put(ACCOUNTS, {"_id": "acc", "status": "active"})
    await put(
        PHONE_NUMBERS,
        {
            "_id": "p1",
            "account_id": "acc",
            "waba_id": "w",
            "portfolio_id": "pf",
            "display_phone_number": "15550001001",
        },
    )
    await put(
        TEMPLATES,
        {
            "_id": "w:t:en_US",
            "waba_id": "w",
            "name": "t",
            "language": "en_US",
            "status": "APPROVED",
            "body_params": ["1"],
        },
    )
    await put(BALANCES, {"_id": "acc", "available": 5, "reserved": 1, "currency": "USD"})
    assert (await directory.api_key("h1"))["account_id"] == "acc"
    assert (await directory.account("acc"))["status"] == "active"
    assert (await directory.phone_number("p1"))["waba_id"] == "w"
    assert (await directory.template("w", "t", "en_US"))["body_params"] == ["1"]
    assert (await directory.balance("acc"))["available"] == 5
    for missing in (
        directory.api_key("h2"),
        directory.account("x"),
        directory.phone_number("p2"),
        directory.template("w", "t", "ar"),
        directory.balance("x"),
    ):
        assert await missing is None


async def test_creating_the_indexes_again_on_restart_is_harmless_and_drops_retired_ones(
    mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> None:
    db = mongo[f"it_{unique}"]
    try:
        # An earlier version's unique (account, idempotency key) index: keyless documents
        # would all collide on it now.
        await db[MESSAGES].create_index([("account_id", 1), ("idempotency_key", 1)], unique=True)
        for _ in range(3):  # a service starting three times
            await ensure_indexes(db, MESSAGES)
        info = await db[MESSAGES].index_information()
        assert "account_id_1_idempotency_key_1" not in info
        assert "account_id_1_created_at_-1" in info
        await db[MESSAGES].insert_many(
            [{"_id": "m1", "account_id": "a"}, {"_id": "m2", "account_id": "a"}]
        )
    finally:
        await mongo.drop_database(db.name)


async def test_concurrent_inserts_each_learn_their_own_outcome(
    stores: tuple[Any, Any, Any, Any],
) -> None:
    """Records arriving together are written together; a duplicate fails only itself."""
    records, _, _, _ = stores
    batch = [_record(f"acc:key:1:k{i}", f"m{i}") for i in range(30)] + [
        _record("acc:key:1:k7", "dup7"),
        _record("acc:key:1:z", "z"),
        _record("acc:key:1:z", "y"),
    ]
    results = await asyncio.gather(*(records.insert(r) for r in batch), return_exceptions=True)
    failed = [
        batch[i]["message_id"] for i, r in enumerate(results) if isinstance(r, DuplicateMessage)
    ]
    assert failed == ["dup7", "y"]
    assert all(r is None for r in results if not isinstance(r, DuplicateMessage))
    found = await records.find([r["_id"] for r in batch])
    assert len({r["_id"] for r in found}) == 31
