"""The sweeper on the real database and broker: stuck `unknown` sends are failed (and the state
writer applies it), old parked statuses are deleted, old messages are anonymised."""

from __future__ import annotations

from datetime import UTC, datetime

from services.status import core
from services.status.sweeper import Sweeper, SweepPolicy
from shared.clock import FakeClock
from shared.messages import STATUS_CHANGED
from tests.integration.status.conftest import StatusWorld

NOW = 1_764_000_000_000
DAY = 86_400_000


async def test_one_sweep_fails_stuck_sends_drops_old_parked_and_anonymises_old_messages(
    world: StatusWorld,
) -> None:
    messages = world.db["messages"]
    await messages.insert_many(
        [
            {
                "_id": "msg_stuck",
                "account_id": "acc_1",
                "recipient_region": "GB",
                "idempotency_key": "a",
                "status": "unknown",
                "status_at": NOW - 601_000,
                "recipient": "+447911123456",
                "content": {"body": "hi"},
                "created_at": NOW - 1000,
            },
            {
                "_id": "msg_recent_unknown",
                "account_id": "acc_1",
                "idempotency_key": "b",
                "status": "unknown",
                "status_at": NOW - 60_000,
                "created_at": NOW - 1000,
            },
            {
                "_id": "msg_old_ms",
                "account_id": "acc_1",
                "idempotency_key": "c",
                "status": "read",
                "recipient": "+447911123456",
                "content": {"body": "secret"},
                "created_at": NOW - 31 * DAY,
            },
            {
                "_id": "msg_old_date",
                "account_id": "acc_1",
                "idempotency_key": "d",
                "status": "delivered",
                "recipient": "+15550001234",
                "content": {"body": "x"},
                "created_at": datetime.fromtimestamp((NOW - 40 * DAY) / 1000, tz=UTC),
            },
        ]
    )
    await world.db["parked_statuses"].insert_many(
        [
            {
                "_id": "wamid.old:read",
                "wamid": "wamid.old",
                "raw": "{}",
                "parked_at": NOW - 8 * DAY,
            },
            {"_id": "wamid.new:read", "wamid": "wamid.new", "raw": "{}", "parked_at": NOW - DAY},
        ]
    )
    await world.db["conversations"].insert_many(
        [
            {"_id": "p:old", "last_inbound_at": NOW - 31 * DAY},
            {"_id": "p:new", "last_inbound_at": NOW - DAY},
        ]
    )
    sweeper = Sweeper(
        world.repository,
        world.publisher,
        FakeClock(start_ms=NOW),
        SweepPolicy(recipient_hash_key=b"it-key"),
    )

    report = await sweeper.sweep_once()

    assert (
        report.unknown_failed,
        report.parked_deleted,
        report.parked_remaining,
        report.anonymised,
        report.conversations_deleted,
    ) == (1, 1, 1, 2, 1)
    [failure] = await world.read(STATUS_CHANGED, until=lambda events: len(events) >= 1)
    assert (failure.message_id, failure.status, failure.reason) == (
        "msg_stuck",
        "failed",
        "outcome_unknown",
    )
    old = await messages.find_one({"_id": "msg_old_ms"})
    assert old is not None
    assert old["recipient"] == core.recipient_hash("+447911123456", b"it-key")
    assert "content" not in old and old["anonymised_at"] == NOW and old["status"] == "read"
    old_date = await messages.find_one({"_id": "msg_old_date"})
    assert old_date is not None and "content" not in old_date
    stuck = await messages.find_one({"_id": "msg_stuck"})
    assert stuck is not None and stuck["content"] == {"body": "hi"}  # recent: untouched

    # A second sweep finds nothing new to anonymise (the stuck one is failed by the writer).
    again = await sweeper.sweep_once()
    assert (again.anonymised, again.parked_deleted) == (0, 0)

    world.start_state_writer()

    async def failed() -> bool:
        doc = await messages.find_one({"_id": "msg_stuck"})
        return doc is not None and doc["status"] == "failed"

    await world.wait_for(failed, what="msg_stuck failed")
    doc = await messages.find_one({"_id": "msg_stuck"})
    assert doc is not None and doc["status_reason"] == "outcome_unknown"


async def test_inbound_messages_past_retention_lose_content_and_contact(world: StatusWorld) -> None:
    inbound = world.db["inbound_messages"]
    base = {
        "account_id": "acc_1",
        "phone_number_id": "p",
        "direction": "inbound",
        "type": "text",
        "content": '{"text": {"body": "my address is ..."}}',
        "contact_name": "Sheena",
        "user_id": "US.1",
        "sent_at": NOW - 31 * DAY,
    }
    await inbound.insert_many(
        [
            {"_id": "wamid.old", **base, "wa_id": "16505551234", "received_at": NOW - 31 * DAY},
            {"_id": "wamid.new", **base, "wa_id": "16505551234", "received_at": NOW - DAY},
        ]
    )
    await world.db["conversations"].insert_many(
        [
            {"_id": "p:talked", "last_message_at": NOW - DAY, "last_inbound_at": NOW - 40 * DAY},
            {"_id": "p:silent", "last_message_at": NOW - 31 * DAY},
        ]
    )
    sweeper = Sweeper(
        world.repository,
        world.publisher,
        FakeClock(start_ms=NOW),
        SweepPolicy(recipient_hash_key=b"it-key"),
    )

    report = await sweeper.sweep_once()

    assert (report.inbound_anonymised, report.conversations_deleted) == (1, 1)
    old = await inbound.find_one({"_id": "wamid.old"})
    assert old is not None
    assert old["wa_id"] == core.recipient_hash("16505551234", b"it-key")
    assert not {"content", "contact_name", "user_id"} & set(old)
    assert (old["anonymised_at"], old["type"], old["sent_at"]) == (NOW, "text", NOW - 31 * DAY)
    new = await inbound.find_one({"_id": "wamid.new"})
    assert new is not None and new["contact_name"] == "Sheena" and new["wa_id"] == "16505551234"
    assert {d["_id"] for d in await world.db["conversations"].find().to_list(None)} == {"p:talked"}
    assert (await sweeper.sweep_once()).inbound_anonymised == 0


async def test_one_sweep_catches_up_with_everything_past_retention_page_after_page(
    world: StatusWorld,
) -> None:
    """More has aged out than one page holds: a single pass anonymises all of it (pages of 5
    here), and leaves what is recent alone."""
    old = [
        {
            "_id": f"msg_old_{i:02}",
            "account_id": "acc_1",
            "status": "delivered",
            "recipient": "+447911123456",
            "content": '{"body": "x"}',
            "created_at": NOW - 31 * DAY - i,
        }
        for i in range(23)
    ]
    await world.db["messages"].insert_many(
        [
            *old,
            {
                "_id": "msg_recent",
                "account_id": "acc_1",
                "status": "delivered",
                "recipient": "+447911123456",
                "content": "{}",
                "created_at": NOW - DAY,
            },
        ]
    )
    await world.db["inbound_messages"].insert_many(
        [
            {
                "_id": f"wamid.old{i}",
                "account_id": "acc_1",
                "wa_id": "16505551234",
                "content": "{}",
                "received_at": NOW - 31 * DAY - i,
            }
            for i in range(12)
        ]
    )
    sweeper = Sweeper(
        world.repository,
        world.publisher,
        FakeClock(start_ms=NOW),
        SweepPolicy(recipient_hash_key=b"it-key", batch_size=5),
    )

    report = await sweeper.sweep_once()

    assert (report.anonymised, report.inbound_anonymised) == (23, 12)
    assert (
        await world.db["messages"].count_documents({"anonymised_at": {"$exists": False}}) == 1
    )  # msg_recent
    assert await world.db["messages"].count_documents({"content": {"$exists": True}}) == 1
    assert (
        await world.db["inbound_messages"].count_documents({"anonymised_at": {"$exists": False}})
        == 0
    )
    assert (await sweeper.sweep_once()).anonymised == 0
