"""Smoke check: does PyMongo Async work against the local database (deploy/local/infra.sh)?

insert, find, a unique index that really rejects a duplicate (DuplicateKeyError),
find_one_and_update with $inc, then drops its database.

Usage: .venv/bin/python deploy/local/smoke_mongo.py [--url mongodb://127.0.0.1:27017/]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError


def step(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


async def main(url: str) -> None:
    t0 = time.monotonic()
    client = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
    db = client[f"smoke_{uuid.uuid4().hex[:8]}"]
    try:
        await client.admin.command("ping")
        info = await client.admin.command("buildInfo")
        step(f"{url}: ping OK, server reports version {info.get('version')}")

        coll = db["messages"]
        res = await coll.insert_one({"wamid": "wamid.1", "tenant": "t1", "n": 1})
        doc = await coll.find_one({"_id": res.inserted_id})
        assert doc and doc["wamid"] == "wamid.1", doc
        await coll.insert_many([{"wamid": f"wamid.{i}", "tenant": "t1", "n": i} for i in (2, 3)])
        found = [d["n"] async for d in coll.find({"tenant": "t1"}).sort("n", ASCENDING)]
        assert found == [1, 2, 3], found
        step("insert_one / insert_many / find OK")

        await coll.create_index([("wamid", ASCENDING)], unique=True, name="wamid_unique")
        try:
            await coll.insert_one({"wamid": "wamid.1", "tenant": "t1", "n": 99})
        except DuplicateKeyError as exc:
            step(f"unique index OK (DuplicateKeyError, code {exc.code})")
        else:
            raise AssertionError("duplicate wamid was accepted despite the unique index")

        bal = db["balances"]
        await bal.insert_one({"_id": "acct-1", "balance": 10})
        after = await bal.find_one_and_update(
            {"_id": "acct-1", "balance": {"$gte": 3}},
            {"$inc": {"balance": -3}},
            return_document=ReturnDocument.AFTER,
        )
        assert after and after["balance"] == 7, after
        step("find_one_and_update with a conditional $inc OK")
    finally:
        await client.drop_database(db.name)
        await client.close()
    step(f"ALL OK in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--url",
        default=os.environ.get("MONGODB_URL")
        or f"mongodb://127.0.0.1:{os.environ.get('MONGO_PORT', '27017')}/",
    )
    args = ap.parse_args()
    try:
        asyncio.run(main(args.url))
    except Exception as exc:
        print(f"[smoke] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
