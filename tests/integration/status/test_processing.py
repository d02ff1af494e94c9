"""The processor and the state writer on the real broker and database: webhooks become
StatusChanged events (through the wamid index, the callback data, or parked until the sender's
`sent` arrives), inbound messages open the window, and message documents converge."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from services.status import core
from shared.messages import (
    INBOUND_RECEIVED,
    STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    MetaError,
    Pricing,
    StatusChanged,
    WebhookReceived,
)
from tests.integration.status.conftest import StatusWorld
from tests.unit.status.meta_examples import INBOUND_TEXT, WABA_ID, status_item, status_webhook

REGULAR = {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}


def _webhook(payload: bytes) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=1_750_030_000_000,
        payload=msgspec.Raw(payload),
    )


async def _insert_message(world: StatusWorld, message_id: str, status: str = "accepted") -> None:
    await world.db["messages"].insert_one(
        {
            "_id": message_id,
            "account_id": "acc_1",
            "recipient_region": "GB",
            "recipient": "+447911123456",
            "idempotency_key": f"none:{message_id}",
            "status": status,
            "history": [],
            "created_at": 1_750_000_000_000,
        }
    )


def _ids(events: list[StatusChanged]) -> set[str]:
    return {e.event_id for e in events}


async def test_statuses_resolve_through_the_wamid_index_or_the_callback_data(
    world: StatusWorld,
) -> None:
    await _insert_message(world, "msg_indexed")
    await _insert_message(world, "msg_callback", status="unknown")
    await world.db["wamid_index"].insert_one(
        core.wamid_index_doc("wamid.IDX", core.MessageRef("msg_indexed", "acc_1", "GB"))
    )
    world.start_processor()
    await world.publish(
        WEBHOOK_RECEIVED,
        _webhook(
            status_webhook(
                status_item("wamid.IDX", "delivered", 1750030080, pricing=REGULAR),
                status_item("wamid.CB", "sent", 1750030070, callback="msg_callback"),
            )
        ),
    )

    events = await world.read(STATUS_CHANGED, until=lambda ev: len(ev) >= 2)
    by_id = {e.event_id: e for e in events}
    delivered, sent = by_id["wamid.IDX:delivered"], by_id["wamid.CB:sent"]
    assert (delivered.message_id, delivered.account_id, delivered.recipient_region) == (
        "msg_indexed",
        "acc_1",
        "GB",
    )
    assert delivered.pricing == Pricing(
        billable=True, pricing_model="PMP", type="regular", category="utility"
    )
    assert delivered.occurred_at == 1_750_030_080_000
    assert (sent.message_id, sent.status, sent.wamid) == ("msg_callback", "sent", "wamid.CB")
    assert await world.db["parked_statuses"].count_documents({}) == 0


async def test_a_status_for_an_unknown_wamid_is_parked_then_resolved_by_the_senders_sent(
    world: StatusWorld,
) -> None:
    await _insert_message(world, "msg_late")
    world.start_processor()
    world.start_state_writer()
    await world.publish(
        WEBHOOK_RECEIVED,
        _webhook(
            status_webhook(
                status_item("wamid.LATE", "delivered", 1750030080, pricing=REGULAR),
                status_item("wamid.LATE", "read", 1750030090),
            )
        ),
    )

    async def parked_two() -> bool:
        return await world.db["parked_statuses"].count_documents({"wamid": "wamid.LATE"}) == 2

    await world.wait_for(parked_two, what="both statuses parked")

    await world.publish(
        STATUS_CHANGED,
        StatusChanged(
            event_id="msg_late:sent:sender",
            message_id="msg_late",
            account_id="acc_1",
            status="sent",
            occurred_at=1_750_030_075_000,
            source="sender",
            phone_number_id="106540352242922",
            wamid="wamid.LATE",
        ),
    )

    events = await world.read(
        STATUS_CHANGED, until=lambda ev: {"wamid.LATE:delivered", "wamid.LATE:read"} <= _ids(ev)
    )
    released = [e for e in events if e.source == "webhook"]
    assert all(e.message_id == "msg_late" and e.recipient_region == "GB" for e in released)

    async def converged() -> bool:
        doc = await world.db["messages"].find_one({"_id": "msg_late"})
        return doc is not None and doc["status"] == "read"

    await world.wait_for(converged, what="msg_late read")
    doc = await world.db["messages"].find_one({"_id": "msg_late"})
    assert doc is not None
    assert [h["status"] for h in doc["history"]] == ["sent", "delivered", "read"]
    assert doc["pricing"]["type"] == "regular"
    assert await world.db["parked_statuses"].count_documents({}) == 0
    assert await world.db["wamid_index"].find_one({"_id": "wamid.LATE"}) == {
        "_id": "wamid.LATE",
        "message_id": "msg_late",
        "account_id": "acc_1",
        "recipient_region": "GB",
    }


async def test_the_state_writer_converges_under_shuffled_and_duplicated_events(
    world: StatusWorld,
) -> None:
    await _insert_message(world, "msg_conv")

    def ev(status: str, at: int, source: str = "webhook", **extra: Any) -> StatusChanged:
        return StatusChanged(
            event_id=f"wamid.CONV:{status}:{source}",
            message_id="msg_conv",
            account_id="acc_1",
            status=status,  # type: ignore[arg-type]
            occurred_at=at,
            source=source,  # type: ignore[arg-type]
            wamid="wamid.CONV",
            **extra,
        )

    pricing = Pricing(billable=True, pricing_model="PMP", type="regular", category="utility")
    events = [
        ev("sent", 10, "sender"),
        ev("sent", 11, pricing=pricing),
        ev("delivered", 20, pricing=pricing),
        ev("read", 30),
        ev("failed", 40, error=MetaError(code=131026, title="Undeliverable")),
    ]
    stream = events * 2
    random.Random(11).shuffle(stream)
    for event in stream:
        await world.publish(STATUS_CHANGED, event)
    world.start_state_writer()

    expected: core.MessageState = core.MessageState()
    for event in events:
        expected = core.converge(expected, event) or expected

    async def all_applied() -> bool:
        doc = await world.db["messages"].find_one({"_id": "msg_conv"})
        return doc is not None and core.state_from_doc(doc) == expected

    await world.wait_for(all_applied, what="msg_conv converged")
    doc = await world.db["messages"].find_one({"_id": "msg_conv"})
    assert doc is not None
    assert (doc["status"], doc["error"], doc["wamid"]) == ("read", None, "wamid.CONV")
    assert doc["recipient"] == "+447911123456"  # ingest's fields are left alone
    assert [h["status"] for h in doc["history"]] == ["sent", "delivered", "read", "failed"]


async def test_an_inbound_message_updates_the_conversation_and_is_published(
    world: StatusWorld,
) -> None:
    world.start_processor()
    older = INBOUND_TEXT.replace(b'"1749416383"', b'"1749416000"').replace(b"RgA=", b"OLD=")
    await world.publish(WEBHOOK_RECEIVED, _webhook(INBOUND_TEXT))
    await world.publish(WEBHOOK_RECEIVED, _webhook(older))  # arrives late: must not rewind

    events = await world.read(INBOUND_RECEIVED, until=lambda ev: len(ev) >= 2)
    assert {e.sender for e in events} == {"16505551234"}

    async def conversation_seen() -> bool:
        return await world.db["conversations"].count_documents({}) == 1

    await world.wait_for(conversation_seen, what="conversation")
    doc = await world.db["conversations"].find_one({"_id": "106540352242922:16505551234"})
    assert doc is not None
    assert doc["last_inbound_at"] == 1_749_416_383_000
    assert doc["wa_id"] == "16505551234"
