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
    MongoMessageStore,
)
from shared.collections import (
    ACCOUNTS,
    API_KEYS,
    BALANCES,
    MESSAGES,
    PHONE_NUMBERS,
    TEMPLATES,
    ensure_indexes,
)
from tests.unit.ingest.fakes import FakeDirectory, FakeMessageStore

NOW = 1_764_000_000_000


@pytest.fixture(params=["fake", "mongo"])
async def stores(request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]],
                 unique: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(message store, directory, a function that puts a document into a collection)."""
    if request.param == "fake":
        directory = FakeDirectory()
        tables = {API_KEYS: directory.api_keys, ACCOUNTS: directory.accounts,
                  PHONE_NUMBERS: directory.phones, TEMPLATES: directory.templates,
                  BALANCES: directory.balances}

        async def put_fake(collection: str, doc: dict[str, Any]) -> None:
            tables[collection][doc["_id"]] = doc

        yield FakeMessageStore(), directory, put_fake
        return
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, MESSAGES)

    async def put_mongo(collection: str, doc: dict[str, Any]) -> None:
        await db[collection].insert_one(dict(doc))

    try:
        yield MongoMessageStore(db), MongoDirectory(db), put_mongo
    finally:
        await mongo.drop_database(db.name)


def _doc(message_id: str, account: str = "acc", key: str | None = None,
         ms: int = NOW) -> dict[str, Any]:
    return {"_id": message_id, "account_id": account,
            "idempotency_key": key or core.no_key_placeholder(message_id),
            "status": "accepted", "created_at": core.from_ms(ms), "content": {"body": "x"}}


async def test_a_message_id_is_taken_once(stores: tuple[Any, Any, Any]) -> None:
    store, _, _ = stores
    await store.insert(_doc("m1"))
    with pytest.raises(DuplicateMessage):
        await store.insert(_doc("m1"))


async def test_an_idempotency_key_is_taken_once_per_account(
        stores: tuple[Any, Any, Any]) -> None:
    store, _, _ = stores
    await store.insert(_doc("m1", key="key:1:k"))
    with pytest.raises(DuplicateMessage):
        await store.insert(_doc("m2", key="key:1:k"))
    await store.insert(_doc("m3", account="other", key="key:1:k"))
    await store.insert(_doc("m4", key="key:0:k"))
    found = await store.find_by_idempotency("acc", ["key:1:k", "key:0:k"])
    assert sorted(d["_id"] for d in found) == ["m1", "m4"]


async def test_get_is_scoped_to_the_account(stores: tuple[Any, Any, Any]) -> None:
    store, _, _ = stores
    await store.insert(_doc("m1"))
    assert (await store.get("acc", "m1"))["_id"] == "m1"
    assert await store.get("other", "m1") is None


async def test_list_is_newest_first_with_ties_broken_by_id_and_honours_filters(
        stores: tuple[Any, Any, Any]) -> None:
    store, _, _ = stores
    for message_id, ms in (("a", NOW), ("b", NOW), ("c", NOW + 1), ("d", NOW - 1)):
        await store.insert(_doc(message_id, ms=ms))
    await store.insert(_doc("x", account="other", ms=NOW + 5))
    first = await store.list("acc", core.ListQuery(limit=2))
    assert [d["_id"] for d in first] == ["c", "b", "a"]  # limit + 1
    rest = await store.list("acc", core.ListQuery(limit=2, after=(core.from_ms(NOW), "b")))
    assert [d["_id"] for d in rest] == ["a", "d"]
    window = await store.list("acc", core.ListQuery(limit=10, since=core.from_ms(NOW),
                                                    until=core.from_ms(NOW + 1)))
    assert [d["_id"] for d in window] == ["b", "a"]
    assert await store.list("acc", core.ListQuery(limit=10, status="sent")) == []


async def test_directory_lookups_find_by_id_and_answer_none_when_missing(
        stores: tuple[Any, Any, Any]) -> None:
    _, directory, put = stores
    await put(API_KEYS, {"_id": "h1", "account_id": "acc", "revoked_at": None})
    await put(ACCOUNTS, {"_id": "acc", "status": "active"})
    await put(PHONE_NUMBERS, {"_id": "p1", "account_id": "acc", "waba_id": "w",
                              "portfolio_id": "pf", "display_phone_number": "15550001001"})
    await put(TEMPLATES, {"_id": "w:t:en_US", "waba_id": "w", "name": "t",
                          "language": "en_US", "status": "APPROVED", "body_params": ["1"]})
    await put(BALANCES, {"_id": "acc", "available": 5, "reserved": 1, "currency": "USD"})
    assert (await directory.api_key("h1"))["account_id"] == "acc"
    assert (await directory.account("acc"))["status"] == "active"
    assert (await directory.phone_number("p1"))["waba_id"] == "w"
    assert (await directory.template("w", "t", "en_US"))["body_params"] == ["1"]
    assert (await directory.balance("acc"))["available"] == 5
    for missing in (directory.api_key("h2"), directory.account("x"),
                    directory.phone_number("p2"), directory.template("w", "t", "ar"),
                    directory.balance("x")):
        assert await missing is None


async def test_creating_the_indexes_again_on_restart_is_harmless(
        mongo: AsyncMongoClient[dict[str, Any]], unique: str) -> None:
    db = mongo[f"it_{unique}"]
    try:
        for _ in range(3):  # a service starting three times
            await ensure_indexes(db, MESSAGES)
        info = await db[MESSAGES].index_information()
        assert info["account_id_1_idempotency_key_1"]["unique"] is True
    finally:
        await mongo.drop_database(db.name)


async def test_concurrent_inserts_each_learn_their_own_outcome(
        stores: tuple[Any, Any, Any]) -> None:
    """Inserts arriving together are written together; a duplicate fails only itself."""
    store, _, _ = stores
    docs = [_doc(f"m{i}") for i in range(30)] + [_doc("m7"), _doc("z", key="key:1:k"),
                                                 _doc("y", key="key:1:k")]
    results = await asyncio.gather(*(store.insert(d) for d in docs), return_exceptions=True)
    failed = [docs[i]["_id"] for i, r in enumerate(results) if isinstance(r, DuplicateMessage)]
    assert failed == ["m7", "y"]
    assert all(r is None for r in results if not isinstance(r, DuplicateMessage))
    assert len(await store.list("acc", core.ListQuery(limit=100))) == 31
