"""No record can stop status's consumers: a record whose handling raises a bug (planted in a
real repository for one marked id) is retried, ends in its topic's DLQ with the error and its
source position, and the records after it on the same partition are processed."""

from __future__ import annotations

from typing import Any

import msgspec

from services.status import core
from services.status.processor import WebhookProcessor
from services.status.repository import StatusRepository
from services.status.state_writer import StateWriter
from services.status.workers import run_processor, run_state_writer
from shared.clock import SystemClock
from shared.kafka import topic_name
from shared.messages import STATUS_CHANGED, WEBHOOK_RECEIVED, StatusChanged, WebhookReceived
from tests.integration.dlq_probe import check_dead_letter, until, wait_for_dead_letters
from tests.integration.status.conftest import StatusWorld
from tests.unit.status.meta_examples import WABA_ID, status_item, status_webhook


class RepositoryWithABug(StatusRepository):
    """The real repository, raising a bug for one marked wamid or message id."""

    def __init__(self, db: Any, marked: str) -> None:
        super().__init__(db)
        self.marked = marked
        self.raised = 0

    async def find_by_wamid(self, wamid: str) -> Any:
        if wamid == self.marked:
            self.raised += 1
            raise RuntimeError(f"a bug looking up {wamid}")
        return await super().find_by_wamid(wamid)

    async def find_by_wamids(self, wamids: Any) -> Any:
        if self.marked in wamids:
            self.raised += 1
            raise RuntimeError(f"a bug looking up {self.marked}")
        return await super().find_by_wamids(wamids)

    async def load_messages(self, message_ids: Any) -> Any:
        if self.marked in message_ids:
            self.raised += 1
            raise RuntimeError(f"a bug loading {self.marked}")
        return await super().load_messages(message_ids)


def _webhook(payload: bytes) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=1_750_030_000_000,
        payload=msgspec.Raw(payload),
    )


async def _insert_message(world: StatusWorld, message_id: str) -> None:
    await world.db["messages"].insert_one(
        {
            "_id": message_id,
            "account_id": "acc_1",
            "recipient_region": "GB",
            "recipient": "+447911123456",
            "status": "accepted",
            "history": [],
            "created_at": 1_750_000_000_000,
        }
    )


async def test_a_webhook_that_raises_a_bug_is_dead_lettered_and_the_next_one_is_processed(
    world: StatusWorld,
) -> None:
    await _insert_message(world, "msg_after")
    repository = RepositoryWithABug(world.db, marked="wamid.BUG")
    processor = WebhookProcessor(repository, world.publisher, SystemClock())
    world.start(run_processor(world.service, world.prefix, processor, world.producer))
    # One WABA: one key, one partition, in this order.
    await world.publish(
        WEBHOOK_RECEIVED,
        _webhook(
            status_webhook(status_item("wamid.BUG", "sent", 1750030070, callback="msg_before"))
        ),
    )
    await world.publish(
        WEBHOOK_RECEIVED,
        _webhook(
            status_webhook(status_item("wamid.AFTER", "sent", 1750030080, callback="msg_after"))
        ),
    )

    source = topic_name(WEBHOOK_RECEIVED, world.prefix)
    [dead] = await wait_for_dead_letters(world.kafka, f"{source}.dlq", 1, alive=world.check_workers)
    headers = check_dead_letter(
        dead,
        source_topic=source,
        source_offset=0,
        service="status",
        error_type="RuntimeError",
        reason="unexpected",
        attempts=3,
    )
    assert b"a bug looking up wamid.BUG" in headers["error_detail"]
    assert dead.key == WABA_ID.encode()
    assert (
        WEBHOOK_RECEIVED.decode(dead.value).event_id
        == _webhook(
            status_webhook(status_item("wamid.BUG", "sent", 1750030070, callback="msg_before"))
        ).event_id
    )
    assert repository.raised == 4  # once in its batch, then 3 times alone

    events = await world.read(
        STATUS_CHANGED, until=lambda ev: any(e.message_id == "msg_after" for e in ev)
    )
    assert [e.event_id for e in events if e.message_id == "msg_after"] == ["wamid.AFTER:sent"]
    world.check_workers()  # still running
    assert not any(task.done() for task in world.tasks)


async def test_a_status_event_that_raises_a_bug_is_dead_lettered_and_the_next_one_is_applied(
    world: StatusWorld,
) -> None:
    for message_id in ("msg_bug", "msg_ok"):
        await _insert_message(world, message_id)
    repository = RepositoryWithABug(world.db, marked="msg_bug")
    writer = StateWriter(repository, world.publisher, SystemClock())
    world.start(run_state_writer(world.service, world.prefix, writer, world.producer))

    def sent(message_id: str) -> StatusChanged:
        return StatusChanged(
            event_id=f"{message_id}:sent:sender",
            message_id=message_id,
            account_id="acc_1",
            status="sent",
            occurred_at=1_750_030_075_000,
            source="sender",
            phone_number_id="106540352242922",
            wamid=f"wamid.{message_id}",
        )

    await world.publish(STATUS_CHANGED, sent("msg_bug"))  # keyed by account: one partition
    await world.publish(STATUS_CHANGED, sent("msg_ok"))

    source = topic_name(STATUS_CHANGED, world.prefix)
    [dead] = await wait_for_dead_letters(world.kafka, f"{source}.dlq", 1, alive=world.check_workers)
    check_dead_letter(
        dead,
        source_topic=source,
        source_offset=0,
        service="status",
        error_type="RuntimeError",
        reason="unexpected",
        attempts=3,
    )
    assert STATUS_CHANGED.decode(dead.value).message_id == "msg_bug"

    async def applied() -> bool:
        doc = await world.db["messages"].find_one({"_id": "msg_ok"})
        return doc is not None and doc["status"] == "sent"

    await until(applied, 30, "msg_ok sent", alive=world.check_workers)
    stuck = await world.db["messages"].find_one({"_id": "msg_bug"})
    assert stuck is not None and stuck["status"] == "accepted"
    assert not any(task.done() for task in world.tasks)
