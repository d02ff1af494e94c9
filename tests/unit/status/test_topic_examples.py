"""status's consumers run over every example of the topics they read (schema drift shows here)."""

from __future__ import annotations

import msgspec

from services.status import core
from services.status.processor import WebhookProcessor
from services.status.state_writer import StateWriter
from shared.clock import FakeClock
from shared.messages import (
    SEND_REQUESTED,
    STATUS_CHANGED,
    SUPPRESSION_CHANGE_REQUESTED,
    WEBHOOK_RECEIVED,
    topics_read_by,
)
from tests.unit.status.fakes import FakePublisher, FakeStore


class _Record:
    def __init__(self, value: bytes, topic: str = "") -> None:
        self.value = value
        self.topic = topic


def test_status_reads_exactly_the_topics_it_has_workers_for() -> None:
    assert {t.name for t in topics_read_by("status")} == {
        WEBHOOK_RECEIVED.name,
        STATUS_CHANGED.name,
        SEND_REQUESTED.name,
        SUPPRESSION_CHANGE_REQUESTED.name,
    }


async def test_the_processor_handles_every_webhook_example() -> None:
    store, publisher = FakeStore(), FakePublisher()
    store.wamid_index["wamid.HBgL"] = core.wamid_index_doc(
        "wamid.HBgL", core.MessageRef("msg_01HZY3V9J6Q8W4T2", "acc_demo", "GB")
    )
    processor = WebhookProcessor(store, publisher, FakeClock())
    for example in WEBHOOK_RECEIVED.examples:
        await processor.handle_record(_Record(msgspec.json.encode(example)))  # type: ignore[arg-type]
    [event] = publisher.events(STATUS_CHANGED)
    assert (event.event_id, event.status, event.message_id) == (
        "wamid.HBgL:delivered",
        "delivered",
        "msg_01HZY3V9J6Q8W4T2",
    )


async def test_the_processor_applies_every_suppression_request_example() -> None:
    store, publisher = FakeStore(), FakePublisher()
    store.phone_numbers["106540352242922"] = {
        "_id": "106540352242922",
        "account_id": "acc_demo",
        "waba_id": "102290129340398",
    }
    processor = WebhookProcessor(store, publisher, FakeClock())
    for example in SUPPRESSION_CHANGE_REQUESTED.examples:
        record = _Record(msgspec.json.encode(example), "p." + SUPPRESSION_CHANGE_REQUESTED.name)
        await processor.handle_record(record)  # type: ignore[arg-type]
    [doc] = store.suppressions.values()
    assert (doc["suppressed"], doc["source"], doc["at"]) == (False, "operator", 1764000100000)


async def test_the_state_writer_handles_every_status_changed_example() -> None:
    store, publisher = FakeStore(), FakePublisher()
    writer = StateWriter(store, publisher, FakeClock())
    for example in STATUS_CHANGED.examples:
        record = _Record(msgspec.json.encode(example), "p." + STATUS_CHANGED.name)
        await writer.handle_record(record)  # type: ignore[arg-type]
    assert store.messages["msg_01HZY3V9J6Q8W4T2"]["status"] == "delivered"
    assert store.messages["msg_3"]["status"] == "failed"
    assert store.messages["msg_4"]["status"] == "rejected"


async def test_the_state_writer_creates_a_document_for_every_send_requested_example() -> None:
    store, publisher = FakeStore(), FakePublisher()
    writer = StateWriter(store, publisher, FakeClock())
    for example in SEND_REQUESTED.examples:
        record = _Record(msgspec.json.encode(example), "p." + SEND_REQUESTED.name)
        await writer.handle_record(record)  # type: ignore[arg-type]
    assert {m: d["status"] for m, d in store.messages.items()} == {
        e["message_id"]: "accepted" for e in SEND_REQUESTED.examples
    }
