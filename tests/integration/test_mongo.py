"""The real MongoDB-compatible server through PyMongo's AsyncMongoClient."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)
from pymongo.uri_parser import parse_uri

from shared.mongo import (
    DEFAULT_TIMEOUT_MS,
    FIND_BY_ID_CONCURRENCY,
    ID_IN_CHUNK,
    find_by_ids,
    make_client,
)
from tests.integration.tcp_proxy import TcpProxy


async def test_insert_find_and_unique_index_violation(mongo, unique: str) -> None:  # type: ignore[no-untyped-def]
    db = mongo[f"it_{unique}"]
    try:
        ledger = db["ledger"]
        await ledger.create_index([("entry_key", 1)], unique=True)
        await ledger.insert_one({"entry_key": "msg-1:reserve", "amount": 4400})
        found = await ledger.find_one({"entry_key": "msg-1:reserve"})
        assert found is not None and found["amount"] == 4400
        with pytest.raises(DuplicateKeyError):
            await ledger.insert_one({"entry_key": "msg-1:reserve", "amount": 4400})
        assert await ledger.count_documents({}) == 1
    finally:
        await mongo.drop_database(f"it_{unique}")


async def test_an_update_that_records_what_it_applied_is_idempotent(mongo, unique: str) -> None:  # type: ignore[no-untyped-def]
    """The pattern billing uses: the balance moves in the same single-document update that
    records the applied offset, and a replay of the same offset changes nothing."""
    db = mongo[f"it_{unique}"]
    try:
        accounts = db["accounts"]
        await accounts.insert_one({"_id": "acc", "available": 100, "applied": {}})

        async def apply(offset: int, amount: int) -> None:
            doc = await accounts.find_one({"_id": "acc"})
            if doc["applied"].get("p0", -1) >= offset:
                return
            await accounts.update_one(
                {"_id": "acc"}, {"$inc": {"available": -amount}, "$set": {"applied.p0": offset}}
            )

        await apply(7, 30)
        await apply(7, 30)  # redelivered
        doc = await accounts.find_one({"_id": "acc"})
        assert doc["available"] == 70 and doc["applied"] == {"p0": 7}
    finally:
        await mongo.drop_database(f"it_{unique}")


def _host_port(url: str) -> tuple[str, int]:
    host, port = parse_uri(url)["nodelist"][0]
    return host, int(port)


async def test_every_operation_has_a_deadline_by_default(mongodb_url: str) -> None:
    client = make_client(mongodb_url)
    try:
        assert client.options.timeout == DEFAULT_TIMEOUT_MS / 1000
    finally:
        await client.close()


async def test_an_operation_on_a_database_that_stops_answering_fails_within_its_timeout(
    mongodb_url: str, unique: str
) -> None:
    """A server that accepted the connection and then went silent (hung, or the network lost):
    the operation raises a driver error once its deadline passes, instead of waiting forever,
    and the client works again once the server answers."""
    proxy = TcpProxy(*_host_port(mongodb_url))
    await proxy.start()
    client = make_client(f"mongodb://{proxy.address}/?directConnection=true", timeout_ms=500)
    probe = client[f"it_{unique}"]["probe"]
    try:
        await probe.insert_one({"_id": 1})
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(PyMongoError):
            # The outer bound only keeps a regression from hanging the run.
            await asyncio.wait_for(probe.find_one({"_id": 1}), 20)
        assert time.monotonic() - started < 2.0
        proxy.resume()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await probe.find_one({"_id": 1}) == {"_id": 1}
                break
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await proxy.stop()
        await client.close()
        cleanup = make_client(mongodb_url)
        await cleanup.drop_database(f"it_{unique}")
        await cleanup.close()


def _commands() -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {
        name: REGISTRY.get_sample_value("hala_mongodb_commands_total", {"command": name}) or 0.0
        for name in ("insert", "find", "getMore", "update", "other")
    }


async def test_each_round_trip_is_counted_once_by_command(mongo, unique: str) -> None:  # type: ignore[no-untyped-def]
    """The benchmark's database operations per message: the client factory's listener counts
    commands sent, so a batch of many documents is one round trip, and a find that needs a
    second batch is two."""
    db = mongo[f"it_{unique}"]
    try:
        before = _commands()
        await db["docs"].insert_many([{"_id": i} for i in range(250)])
        assert await db["docs"].find({}, batch_size=200).to_list(None) != []
        await db["docs"].update_one({"_id": 1}, {"$set": {"seen": True}})
        after = _commands()
        assert {k: after[k] - before[k] for k in after} == {
            "insert": 1,
            "find": 1,
            "getMore": 1,
            "update": 1,
            "other": 0,
        }
    finally:
        await mongo.drop_database(f"it_{unique}")


async def test_find_by_ids_finds_what_exists_with_the_projection_in_index_lookups(
    mongo, unique: str
) -> None:  # type: ignore[no-untyped-def]
    """One `$in` query where the server answers it from the index (MongoDB, the local FerretDB
    build with its patch: its `explain` says `filterPushdown`); each id its own lookup on a
    stock FerretDB (an `$in` scans the collection there)."""
    db = mongo[f"it_{unique}"]
    try:
        await db["docs"].insert_many([{"_id": f"d{i}", "n": i, "big": "x" * 10} for i in range(30)])
        assert await find_by_ids(db["docs"], []) == []
        await find_by_ids(db["docs"], ["d0"])  # the backend is known from here on
        before = _commands()
        found = await find_by_ids(db["docs"], ["d3", "nope", "d7", "d29"], {"n": 1})
        finds = _commands()["find"] - before["find"]
        assert sorted(found, key=lambda d: d["n"]) == [
            {"_id": "d3", "n": 3},
            {"_id": "d7", "n": 7},
            {"_id": "d29", "n": 29},
        ]
        indexed = "ferretdbVersion" not in await mongo.admin.command("buildInfo") or (
            await db.command("explain", {"find": "docs", "filter": {"_id": {"$in": ["d3"]}}})
        ).get("filterPushdown")
        assert finds == (1 if indexed else 4)
    finally:
        await mongo.drop_database(f"it_{unique}")


async def test_find_by_ids_splits_a_long_id_list_into_queries_the_index_answers(
    mongo, unique: str
) -> None:  # type: ignore[no-untyped-def]
    """The local FerretDB build pushes at most 1,000 ids of an `$in` down to SQLite and scans
    the whole collection for more (a status batch's 1,000+ wamids then timed out on every
    retry). More ids than `ID_IN_CHUNK` go out as several `$in` queries, each small enough for
    the index, and together they find every document asked for."""
    db = mongo[f"it_{unique}"]
    asked = 2 * ID_IN_CHUNK + 200
    try:
        await db["docs"].insert_many([{"_id": f"d{i}", "n": i} for i in range(asked)])
        await find_by_ids(db["docs"], ["d0"])  # the backend is known from here on
        indexed = "ferretdbVersion" not in await mongo.admin.command("buildInfo") or (
            await db.command("explain", {"find": "docs", "filter": {"_id": {"$in": ["d3"]}}})
        ).get("filterPushdown")
        if not indexed:
            pytest.skip("this server reads id by id (stock FerretDB): no $in to split")
        before = _commands()
        found = await find_by_ids(db["docs"], [f"d{i}" for i in range(asked)] + ["nope"])
        finds = _commands()["find"] - before["find"]
        assert sorted(d["n"] for d in found) == list(range(asked))
        assert finds == -(-(asked + 1) // ID_IN_CHUNK)  # getMore batches are counted apart
    finally:
        await mongo.drop_database(f"it_{unique}")


class _InFlight(CommandListener):
    """The most `find` commands this client had in flight at once."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.now += 1
            self.most = max(self.most, self.now)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        if event.command_name == "find":
            self.now -= 1

    def failed(self, event: CommandFailedEvent) -> None:
        if event.command_name == "find":
            self.now -= 1


async def test_find_by_ids_keeps_a_bounded_number_of_lookups_in_flight(
    mongodb_url: str, unique: str
) -> None:
    """200 ids are not 200 lookups at once (the pool holds 100: other operations would wait
    for a connection past their deadline); on MongoDB they are one `$in`."""
    listener = _InFlight()
    client = make_client(mongodb_url, event_listeners=[listener])
    db = client[f"it_{unique}"]
    try:
        await db["docs"].insert_many([{"_id": f"d{i}", "n": i} for i in range(200)])
        found = await find_by_ids(db["docs"], [f"d{i}" for i in range(200)] + ["nope"], {"n": 1})
        assert sorted(d["n"] for d in found) == list(range(200))
        assert 1 <= listener.most <= FIND_BY_ID_CONCURRENCY
    finally:
        await client.drop_database(f"it_{unique}")
        await client.close()
