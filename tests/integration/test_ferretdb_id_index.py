"""Our FerretDB wrapper adds an index on the `_id` expression FerretDB v1.24's SQLite queries use
(deploy/local/ferretdb/main.go): without it every update or delete by _id scans the collection.
This checks the SQLite plan of the local server's files; against a real MongoDB (an external
MONGODB_URL) it checks MongoDB's own plan for the same update instead."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import REPO

DATA_DIR = Path(os.environ.get("HALA_RUN_DIR", REPO / ".run")) / "ferretdb" / "data"


def _plan(database: Path) -> list[str]:
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        table = con.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = 'messages'"
        ).fetchone()[0]
        rows = con.execute(
            f'EXPLAIN QUERY PLAN UPDATE "{table}" SET _ferretdb_sjson = ? '
            "WHERE _ferretdb_sjson->'$._id' = ?",
            ("{}", '"m1"'),
        ).fetchall()
        return [str(row[-1]) for row in rows]
    finally:
        con.close()


async def test_updates_by_id_use_an_index_not_a_scan(mongo, unique: str) -> None:  # type: ignore[no-untyped-def]
    name = f"it_{unique}"
    try:
        await mongo[name]["messages"].insert_many([{"_id": f"m{i}"} for i in range(50)])
        if "ferretdbVersion" not in await mongo.admin.command("buildInfo"):
            explained = await mongo[name].command(
                "explain",
                {"update": "messages", "updates": [{"q": {"_id": "m1"}, "u": {"$set": {"s": 1}}}]},
            )
            assert any(stage in str(explained) for stage in ("IDHACK", "IXSCAN", "EXPRESS"))
            return
        database = DATA_DIR / f"{name}.sqlite"
        assert database.exists(), f"no FerretDB data file at {database}"
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the wrapper indexes new collections every second
            plan = _plan(database)
            if any("USING INDEX" in step for step in plan):
                break
            assert asyncio.get_running_loop().time() < deadline, f"still scanning: {plan}"
            await asyncio.sleep(0.2)
        assert not any(step.startswith("SCAN") for step in plan)
    finally:
        await mongo.drop_database(name)


async def test_an_id_in_is_read_from_the_index_when_the_server_pushes_it_down(  # type: ignore[no-untyped-def]
    mongo, unique: str
) -> None:
    """The local build's patch (deploy/local/ferretdb/patches) pushes `{_id: {$in: [...]}}` down
    to SQLite: FerretDB's `explain` then shows the SQLite plan searching our `_id` index, and the
    answer holds exactly the ids asked for that exist. A server started from an older build (or
    stock FerretDB) says `filterPushdown: false`, and `shared.mongo.find_by_ids` reads id by id
    there: skipped, with the reason."""
    name = f"it_{unique}"
    try:
        if "ferretdbVersion" not in await mongo.admin.command("buildInfo"):
            pytest.skip("not FerretDB: MongoDB answers an $in from its _id index itself")
        messages = mongo[name]["messages"]
        await messages.insert_many([{"_id": f"m{i}", "n": i} for i in range(50)])
        query = {"_id": {"$in": ["m3", "m17", "nope"]}}
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the wrapper indexes new collections every second
            # A query first: SQLite reloads a changed schema when a statement reads the
            # database, and EXPLAIN alone does not.
            await messages.find(query).to_list(None)
            explained = await mongo[name].command("explain", {"find": "messages", "filter": query})
            if not explained.get("filterPushdown"):
                pytest.skip("this FerretDB build does not push an _id $in down (restart infra.sh)")
            plan = " ".join(explained["queryPlanner"]["Plan"])
            if "USING INDEX" in plan:
                break
            assert asyncio.get_running_loop().time() < deadline, f"still scanning: {plan}"
            await asyncio.sleep(0.2)
        assert sorted(d["n"] for d in await messages.find(query).to_list(None)) == [3, 17]
        # Mixed types are not pushed down, and still answered by FerretDB's own filter.
        assert [d["n"] for d in await messages.find({"_id": {"$in": ["m5", 5]}}).to_list(None)] == [
            5
        ]
    finally:
        await mongo.drop_database(name)
