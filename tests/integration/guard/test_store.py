"""guard's MongoDB adapter against the real database (the contract tests/unit/guard/fakes.py
stands for): an account's windows come back as they were saved (positions included); hold
fields are set one by one; a recipient stored twice stays the first; flagged numbers are read
from status's number states; the retention pass forgets old recipients page by page."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.guard import core
from services.guard.repository import MongoGuardStore
from services.guard.worker import sweep_recipients
from shared import holds
from shared.clock import FakeClock
from shared.collections import (
    ACCOUNT_HOLDS,
    GUARD_RECIPIENTS,
    GUARD_STATES,
    NUMBER_STATES,
    PHONE_NUMBERS,
    ensure_indexes,
)
from shared.messages import MetaError, StatusChanged


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], unique: str) -> Any:
    database: AsyncDatabase[dict[str, Any]] = mongo[f"it_{unique}"]
    await ensure_indexes(database, ACCOUNT_HOLDS, GUARD_STATES, GUARD_RECIPIENTS)
    yield database
    await mongo.drop_database(database.name)


async def test_windows_and_positions_come_back_as_saved(db: Any) -> None:
    store, clock = MongoGuardStore(db), FakeClock()
    account = core.Account("acc_1")
    account.status(
        StatusChanged(
            event_id="s",
            message_id="m",
            account_id="acc_1",
            status="failed",
            occurred_at=clock.now_ms(),
            source="webhook",
            error=MetaError(code=131048),
        )
    )
    account.mark("t1.messages.status-changed.v1:3", 17)  # a topic name has dots
    account.fired["meta_spam"] = clock.now_ms()
    await store.save_state(core.state_doc(account, clock.now_ms()))
    await store.save_state(core.state_doc(account, clock.now_ms()))  # replaced, not added
    docs = await store.states(["acc_1", "acc_none"])
    assert list(docs) == ["acc_1"]
    assert core.account_from_doc("acc_1", docs["acc_1"]) == account


async def test_hold_fields_are_set_one_by_one(db: Any) -> None:
    store = MongoGuardStore(db)
    fired = core.Fired("acc_1", "failure_rate", 1000, "why", {"rate": 0.6})
    doc = await store.set_hold("acc_1", core.hold_fields(fired, 1001))
    assert holds.is_held(doc) and doc["holds"]["failure_rate"]["reason"] == "why"
    doc = await store.set_hold("acc_1", core.release_fields("acc_1", doc, 900, "ana", "ok", 5))
    assert doc["released_at"] == 1000 and not holds.is_held(doc)  # after the hold it releases
    other = core.Fired("acc_1", "meta_spam", 2000, "spam", {})
    doc = await store.set_hold("acc_1", core.hold_fields(other, 2001))
    assert list(holds.active_holds(doc)) == ["meta_spam"]
    assert doc["holds"]["failure_rate"]["at"] == 1000  # the other rule's field untouched


async def test_a_recipient_stored_twice_stays_the_first(db: Any) -> None:
    store = MongoGuardStore(db)
    await store.insert_recipients(
        [{"_id": "acc_1:h1", "account_id": "acc_1", "first_seen": 1, "message_id": "m1"}]
    )
    await store.insert_recipients(
        [
            {"_id": "acc_1:h1", "account_id": "acc_1", "first_seen": 2, "message_id": "m2"},
            {"_id": "acc_1:h2", "account_id": "acc_1", "first_seen": 2, "message_id": "m2"},
        ]
    )
    found = await store.recipients(["acc_1:h1", "acc_1:h2", "acc_1:h3"])
    assert {k: v["message_id"] for k, v in found.items()} == {"acc_1:h1": "m1", "acc_1:h2": "m2"}


async def test_flagged_numbers_come_from_status_number_states(db: Any) -> None:
    await db[PHONE_NUMBERS].insert_many(
        [
            {"_id": "1", "account_id": "acc_1"},
            {"_id": "2", "account_id": "acc_1"},
            {"_id": "3", "account_id": "acc_2"},
        ]
    )
    await db[NUMBER_STATES].insert_many(
        [
            {"_id": "1", "quality_event": "FLAGGED", "quality_event_at": 10},
            {"_id": "2", "quality_event": "UNFLAGGED", "quality_event_at": 20},
            {"_id": "3", "quality_event": "FLAGGED", "quality_event_at": 30},
        ]
    )
    assert await MongoGuardStore(db).flagged_numbers("acc_1") == [10]


async def test_the_retention_pass_forgets_old_recipients_page_by_page(db: Any) -> None:
    store, clock = MongoGuardStore(db), FakeClock()
    old = clock.now_ms() - 100 * 86_400_000
    await store.insert_recipients(
        [{"_id": f"acc_1:old{i}", "account_id": "acc_1", "first_seen": old} for i in range(7)]
        + [{"_id": "acc_1:new", "account_id": "acc_1", "first_seen": clock.now_ms()}]
    )
    assert await sweep_recipients(store, clock, memory_days=90, page=3) == 7
    assert [d["_id"] async for d in db[GUARD_RECIPIENTS].find({})] == ["acc_1:new"]


async def test_an_accounts_rule_overrides_are_read_from_its_document(db: Any) -> None:
    from services.admin import commands, trust

    await commands.prepare(db)
    account = await commands.create_account(
        db,
        name="G",
        email="g@example.com",
        phone="+971501234567",
        business_name="G LLC",
        fb_business_manager_id="123456789012",
    )
    store = MongoGuardStore(db)
    assert await store.rule_overrides(account["_id"]) is None
    await commands.update_account(
        db,
        account["_id"],
        guard_rules=trust.guard_rule_overrides(None, ["failure_rate.threshold=0.8"]),
    )
    overrides = await store.rule_overrides(account["_id"])
    assert core.Rules().with_overrides(overrides).failure_rate.threshold == 0.8
