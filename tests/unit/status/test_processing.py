"""Resolving statuses to our messages (index, callback data, park) and the two workers' shells,
with an in-memory store and publisher."""

from __future__ import annotations

import msgspec
import pytest

from services.status import core
from services.status.processor import WebhookProcessor
from services.status.state_writer import StateWriter
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable, PermanentError
from shared.message_docs import message_document
from shared.messages import (
    INBOUND_RECEIVED,
    STATUS_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    SendRequested,
    StatusChanged,
    WebhookReceived,
)
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.meta_examples import (
    INBOUND_TEXT,
    TEMPLATE_APPROVED,
    THROUGHPUT_UPGRADE,
    WABA_ID,
    status_item,
    status_webhook,
)

REF = core.MessageRef("msg_01", "acc_1", "GB")


def webhook(payload: bytes, received_at: int = 1_750_030_000_000) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=received_at,
        payload=msgspec.Raw(payload),
    )


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=1_750_030_100_000)


@pytest.fixture
def processor(store: FakeStore, publisher: FakePublisher, clock: FakeClock) -> WebhookProcessor:
    return WebhookProcessor(store, publisher, clock)


@pytest.fixture
def writer(store: FakeStore, publisher: FakePublisher, clock: FakeClock) -> StateWriter:
    return StateWriter(store, publisher, clock)


# --- the pure decisions ------------------------------------------------------------------------


def test_the_wamid_index_wins_over_the_callback_data() -> None:
    other = core.MessageRef("msg_02", "acc_2")
    assert core.resolve_status(REF, other) == REF
    assert core.resolve_status(None, other) == other
    assert core.resolve_status(None, None) is None


def test_only_callback_data_shaped_like_our_message_ids_is_looked_up() -> None:
    [ours, foreign, absent] = core.plan_webhook(
        status_webhook(
            status_item("wamid.1", "sent", 1, callback="msg_01"),
            status_item("wamid.2", "sent", 1, callback="crm-ticket-77"),
            status_item("wamid.3", "sent", 1),
        ),
        0,
    ).statuses
    assert core.callback_message_id(ours) == "msg_01"
    assert core.callback_message_id(foreign) is None
    assert core.callback_message_id(absent) is None


def test_a_message_reference_needs_an_account() -> None:
    assert (
        core.message_ref_from_doc(
            {"_id": "msg_01", "account_id": "acc_1", "recipient_region": "GB"}
        )
        == REF
    )
    assert (
        core.message_ref_from_doc(
            {
                "_id": "wamid.1",
                "message_id": "msg_01",
                "account_id": "acc_1",
                "recipient_region": "GB",
            }
        )
        == REF
    )
    assert core.message_ref_from_doc({"_id": "msg_01"}) is None
    assert core.message_ref_from_doc(None) is None


def test_a_parked_status_keeps_the_raw_item_and_replays_identically() -> None:
    [status] = core.plan_webhook(
        status_webhook(
            status_item(
                "wamid.P",
                "delivered",
                7,
                pricing={"billable": True, "type": "regular", "category": "utility"},
            )
        ),
        0,
    ).statuses
    doc = core.parked_status_doc(status, now_ms=123)
    assert doc["_id"] == "wamid.P:delivered" and doc["parked_at"] == 123
    assert core.status_from_parked(doc) == status


# --- the processor -----------------------------------------------------------------------------


async def test_a_status_with_an_indexed_wamid_is_published_for_its_message(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.wamid_index["wamid.A"] = core.wamid_index_doc("wamid.A", REF)
    await processor.handle(webhook(status_webhook(status_item("wamid.A", "delivered", 100))))
    [event] = publisher.events(STATUS_CHANGED)
    assert (
        event.event_id,
        event.message_id,
        event.account_id,
        event.status,
        event.source,
        event.occurred_at,
        event.recipient_region,
        event.wamid,
    ) == ("wamid.A:delivered", "msg_01", "acc_1", "delivered", "webhook", 100_000, "GB", "wamid.A")
    assert store.parked == {}


async def test_a_wamid_found_once_is_not_looked_up_again(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await processor.handle(webhook(status_webhook(status_item("wamid.A", "sent", 100))))
    assert store.wamid_lookups == 2 and store.parked  # unknown: looked up, parked, again
    store.wamid_index["wamid.A"] = core.wamid_index_doc("wamid.A", REF)
    for status in ("delivered", "read"):
        await processor.handle(webhook(status_webhook(status_item("wamid.A", status, 101))))
    assert store.wamid_lookups == 3  # found once, then remembered
    assert [e.status for e in publisher.events(STATUS_CHANGED)] == ["delivered", "read"]


async def test_a_status_with_only_callback_data_is_resolved_through_the_message(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.messages["msg_01"] = {
        "_id": "msg_01",
        "account_id": "acc_1",
        "recipient_region": "GB",
        "status": "unknown",
    }
    await processor.handle(
        webhook(status_webhook(status_item("wamid.B", "sent", 100, callback="msg_01")))
    )
    [event] = publisher.events(STATUS_CHANGED)
    assert (event.message_id, event.account_id, event.recipient_region) == ("msg_01", "acc_1", "GB")


async def test_an_unknown_wamid_is_parked_and_nothing_is_published(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await processor.handle(
        webhook(status_webhook(status_item("wamid.C", "delivered", 100, callback="msg_missing")))
    )
    assert publisher.published == []
    assert list(store.parked) == ["wamid.C:delivered"]


async def test_a_wamid_indexed_while_parking_is_published_at_once(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    original_park = store.park_status

    async def park_then_writer_indexes(doc: dict) -> None:  # type: ignore[type-arg]
        await original_park(doc)
        # The state writer indexes the wamid right after we parked, before our re-check.
        store.wamid_index["wamid.D"] = core.wamid_index_doc("wamid.D", REF)

    store.park_status = park_then_writer_indexes  # type: ignore[method-assign]
    await processor.handle(webhook(status_webhook(status_item("wamid.D", "read", 100))))
    assert [e.event_id for e in publisher.events(STATUS_CHANGED)] == ["wamid.D:read"]
    assert store.parked == {}


async def test_played_and_unknown_statuses_are_counted_not_published(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.wamid_index["wamid.E"] = core.wamid_index_doc("wamid.E", REF)
    await processor.handle(
        webhook(
            status_webhook(
                status_item("wamid.E", "played", 100), status_item("wamid.E", "teleported", 100)
            )
        )
    )
    assert publisher.published == [] and store.parked == {}


async def test_an_inbound_message_opens_the_window_and_is_published(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await processor.handle(webhook(INBOUND_TEXT))
    conversation = store.conversations["106540352242922:16505551234"]
    assert conversation["last_inbound_at"] == 1_749_416_383_000
    [event] = publisher.events(INBOUND_RECEIVED)
    assert event.sender == "16505551234" and event.content == {
        "body": "Does it come in another color?"
    }


async def test_a_template_update_sets_the_status_and_is_published(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.templates.append(
        {
            "_id": f"{WABA_ID}:order_confirmation:en_US",
            "waba_id": WABA_ID,
            "name": "order_confirmation",
            "language": "en_US",
            "status": "PENDING",
        }
    )
    await processor.handle(webhook(TEMPLATE_APPROVED))
    assert store.templates[0]["status"] == "APPROVED"
    [event] = publisher.events(TEMPLATE_STATUS_CHANGED)
    assert event.status == "APPROVED"


async def test_a_throughput_upgrade_is_published_for_the_number_found_by_display_number(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.phone_numbers["106540352242922"] = {
        "_id": "106540352242922",
        "waba_id": WABA_ID,
        "display_phone_number": "+15550783881",
    }
    await processor.handle(webhook(THROUGHPUT_UPGRADE))
    [event] = publisher.events(THROUGHPUT_CHANGED)
    assert (event.phone_number_id, event.messages_per_second) == ("106540352242922", 1000)


async def test_a_throughput_upgrade_for_an_unknown_number_is_dropped(
    processor: WebhookProcessor, publisher: FakePublisher
) -> None:
    await processor.handle(webhook(THROUGHPUT_UPGRADE))
    assert publisher.published == []


async def test_a_record_that_is_not_a_webhook_event_is_permanent(
    processor: WebhookProcessor,
) -> None:
    class Record:
        value = b'{"not": "an event"}'
        topic = "p.webhooks.received.v1"

    with pytest.raises(PermanentError):
        await processor.handle_record(Record())  # type: ignore[arg-type]


# --- the state writer --------------------------------------------------------------------------


def sent_by_sender(wamid: str = "wamid.F", at: int = 10) -> StatusChanged:
    return StatusChanged(
        event_id="msg_01:sent:sender",
        message_id="msg_01",
        account_id="acc_1",
        status="sent",
        occurred_at=at,
        source="sender",
        phone_number_id="106540352242922",
        wamid=wamid,
    )


async def test_the_senders_sent_indexes_the_wamid_and_releases_parked_statuses(
    processor: WebhookProcessor, writer: StateWriter, store: FakeStore, publisher: FakePublisher
) -> None:
    store.messages["msg_01"] = {
        "_id": "msg_01",
        "account_id": "acc_1",
        "recipient_region": "GB",
        "status": "accepted",
        "history": [],
    }
    await processor.handle(
        webhook(
            status_webhook(
                status_item("wamid.F", "delivered", 20), status_item("wamid.F", "read", 30)
            )
        )
    )
    assert sorted(store.parked) == ["wamid.F:delivered", "wamid.F:read"]

    await writer.handle(sent_by_sender())
    assert store.wamid_index["wamid.F"] == {
        "_id": "wamid.F",
        "message_id": "msg_01",
        "account_id": "acc_1",
        "recipient_region": "GB",
    }
    assert store.parked == {}
    released = publisher.events(STATUS_CHANGED)
    assert sorted(e.event_id for e in released) == ["wamid.F:delivered", "wamid.F:read"]
    assert all(e.message_id == "msg_01" and e.recipient_region == "GB" for e in released)

    for e in released:  # they come back through the topic
        await writer.handle(e)
    doc = store.messages["msg_01"]
    assert doc["status"] == "read"
    assert [h["status"] for h in doc["history"]] == ["sent", "delivered", "read"]
    assert doc["wamid"] == "wamid.F" and doc["updated_at"] == 1_750_030_100_000


async def test_a_duplicate_event_writes_nothing(writer: StateWriter, store: FakeStore) -> None:
    await writer.handle(sent_by_sender())
    before = dict(store.messages["msg_01"])
    writes = store.message_writes
    await writer.handle(sent_by_sender())
    assert store.message_writes == writes and store.messages["msg_01"] == before


async def test_a_message_without_a_document_gets_a_minimal_one(
    writer: StateWriter, store: FakeStore
) -> None:
    await writer.handle(
        StatusChanged(
            event_id="msg_9:rejected",
            message_id="msg_9",
            account_id="acc_1",
            status="rejected",
            occurred_at=5,
            source="billing",
            reason="insufficient_credit",
        )
    )
    doc = store.messages["msg_9"]
    assert (doc["status"], doc["status_reason"], doc["account_id"], doc["created_at"]) == (
        "rejected",
        "insufficient_credit",
        "acc_1",
        5,
    )
    assert doc["created_by"] == "status" and "type" not in doc


def _request(message_id: str = "msg_9", accepted_at: int = 3) -> SendRequested:
    return SendRequested(
        event_id=message_id,
        message_id=message_id,
        account_id="acc_1",
        portfolio_id="p",
        waba_id="w",
        phone_number_id="106540352242922",
        recipient="+447912345678",
        recipient_region="GB",
        message_type="text",
        content={"body": "hi"},
        category="service",
        accepted_at=accepted_at,
        expires_at=accepted_at + 60_000,
        client_reference="r",
    )


async def test_a_request_creates_the_messages_document(
    writer: StateWriter, store: FakeStore
) -> None:
    await writer.handle_request(_request())
    doc = store.messages["msg_9"]
    assert doc == message_document(_request())
    assert (doc["status"], doc["recipient"], doc["content"]) == (
        "accepted",
        "+447912345678",
        '{"body":"hi"}',
    )


async def test_a_redelivered_request_changes_nothing(writer: StateWriter, store: FakeStore) -> None:
    await writer.handle_request(_request())
    await writer.handle(
        StatusChanged(
            event_id="msg_9:sent",
            message_id="msg_9",
            account_id="acc_1",
            status="sent",
            occurred_at=7,
            source="sender",
            wamid="wamid.Z",
        )
    )
    before = dict(store.messages["msg_9"])
    await writer.handle_request(_request())
    assert store.messages["msg_9"] == before and before["status"] == "sent"


async def test_a_request_read_after_its_status_completes_the_minimal_document(
    writer: StateWriter, store: FakeStore
) -> None:
    await writer.handle(
        StatusChanged(
            event_id="msg_9:rejected",
            message_id="msg_9",
            account_id="acc_1",
            status="rejected",
            occurred_at=5,
            source="billing",
            reason="insufficient_credit",
        )
    )
    await writer.handle_request(_request(accepted_at=3))
    doc = store.messages["msg_9"]
    assert doc["status"] == "rejected" and doc["status_reason"] == "insufficient_credit"
    assert [h["status"] for h in doc["history"]] == ["accepted", "rejected"]
    assert doc["history"][0] == {"status": "accepted", "at": 3, "source": "ingest"}
    assert (doc["recipient"], doc["type"], doc["client_reference"]) == (
        "+447912345678",
        "text",
        "r",
    )
    assert doc["created_at"] == message_document(_request(accepted_at=3))["created_at"]


async def test_an_unreadable_parked_status_is_dropped(
    writer: StateWriter, store: FakeStore, publisher: FakePublisher
) -> None:
    store.parked["wamid.G:sent"] = {"_id": "wamid.G:sent", "wamid": "wamid.G", "raw": "{oops"}
    await writer.handle(sent_by_sender(wamid="wamid.G"))
    assert store.parked == {} and publisher.published == []


async def test_parked_statuses_stay_parked_when_their_release_cannot_be_published(
    processor: WebhookProcessor, writer: StateWriter, store: FakeStore, publisher: FakePublisher
) -> None:
    await processor.handle(webhook(status_webhook(status_item("wamid.H", "delivered", 20))))
    publisher.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await writer.handle(sent_by_sender(wamid="wamid.H"))
    assert list(store.parked) == ["wamid.H:delivered"]
    assert "msg_01" not in store.messages  # nothing recorded: the retry will do it all again

    publisher.unavailable = False
    await writer.handle(sent_by_sender(wamid="wamid.H"))
    assert store.parked == {}
    assert [e.event_id for e in publisher.events(STATUS_CHANGED)] == ["wamid.H:delivered"]


def _sent(message_id: str = "msg_9", status: str = "sent", at: int = 7) -> StatusChanged:
    return StatusChanged(
        event_id=f"{message_id}:{status}",
        message_id=message_id,
        account_id="acc_1",
        status=status,
        occurred_at=at,  # type: ignore[arg-type]
        source="webhook",
        wamid="wamid.Z",
    )


async def test_the_writer_reads_a_message_it_wrote_from_memory(
    writer: StateWriter, store: FakeStore
) -> None:
    await writer.handle_request(_request())
    await writer.handle(_sent())
    await writer.handle(_sent(status="delivered", at=9))
    assert store.loads == 0 and store.message_reads == 0  # the request's insert found it new
    assert store.messages["msg_9"]["status"] == "delivered"
    assert [h["status"] for h in store.messages["msg_9"]["history"]] == [
        "accepted",
        "sent",
        "delivered",
    ]


async def test_after_partitions_move_the_writer_reads_the_document_again(
    writer: StateWriter, store: FakeStore
) -> None:
    await writer.handle_request(_request())
    writer.forget_all()
    # Meanwhile another process, the partition's owner for a while, applied `delivered`.
    store.messages["msg_9"]["history"].append({"status": "delivered", "at": 9, "source": "webhook"})
    reads = store.message_reads
    await writer.handle(_sent(status="read", at=12))
    assert store.message_reads == reads + 1
    assert [h["status"] for h in store.messages["msg_9"]["history"]] == [
        "accepted",
        "delivered",
        "read",
    ]


async def test_a_write_finished_after_partitions_moved_is_not_remembered(
    store: FakeStore, publisher: FakePublisher
) -> None:
    writer = StateWriter(store, publisher, FakeClock())
    saving = store.write_messages

    async def save_while_partitions_move(*args: object) -> None:
        writer.forget_all()
        await saving(*args)  # type: ignore[arg-type]

    await writer.handle_request(_request())
    store.write_messages = save_while_partitions_move  # type: ignore[method-assign]
    await writer.handle(_sent())
    store.write_messages = saving  # type: ignore[method-assign]
    reads = store.message_reads
    await writer.handle(_sent(status="delivered", at=9))
    assert store.message_reads == reads + 1


async def test_a_batch_costs_one_write_and_ends_where_one_event_at_a_time_ends(
    store: FakeStore, publisher: FakePublisher, clock: FakeClock
) -> None:
    def change(message_id: str, status: str, at: int, source: str) -> StatusChanged:
        return StatusChanged(
            event_id=f"{message_id}:{status}:{source}",
            message_id=message_id,
            account_id="acc_1",
            status=status,  # type: ignore[arg-type]
            occurred_at=at,
            source=source,  # type: ignore[arg-type]
            wamid=f"wamid.{message_id}",
        )

    batch: list[SendRequested | StatusChanged] = []
    for m in ("msg_a", "msg_b"):
        batch += [_request(m), change(m, "sent", 7, "sender"), change(m, "delivered", 9, "webhook")]
    batch.append(change("msg_c", "read", 12, "webhook"))  # its request comes later
    one_by_one = FakeStore()
    single = StateWriter(one_by_one, FakePublisher(), clock)
    for event in batch:
        await single.apply([event])

    writer = StateWriter(store, publisher, clock)
    await writer.apply(batch)
    # one insert of the requests' documents, one read (msg_c), one write of every message
    assert store.message_reads == 1 and store.message_writes == 1
    assert store.messages == one_by_one.messages
    assert [store.messages[m]["status"] for m in ("msg_a", "msg_b", "msg_c")] == [
        "delivered",
        "delivered",
        "read",
    ]
    assert sorted(store.wamid_index) == ["wamid.msg_a", "wamid.msg_b", "wamid.msg_c"]
