"""The real MongoDB-compatible server through PyMongo's AsyncMongoClient."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError


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
            await accounts.update_one({"_id": "acc"}, {"$inc": {"available": -amount},
                                                       "$set": {"applied.p0": offset}})

        await apply(7, 30)
        await apply(7, 30)  # redelivered
        doc = await accounts.find_one({"_id": "acc"})
        assert doc["available"] == 70 and doc["applied"] == {"p0": 7}
    finally:
        await mongo.drop_database(f"it_{unique}")
