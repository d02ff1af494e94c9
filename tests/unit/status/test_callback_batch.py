"""Statuses whose wamid is not indexed yet (the state writer is behind, as in a campaign) are
resolved by their callback data from one read per batch, and only a wamid the message's own
document confirms is remembered."""

from __future__ import annotations

import msgspec

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import STATUS_CHANGED, StatusChanged, WebhookReceived
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.meta_examples import WABA_ID, status_item, status_webhook

REF = core.MessageRef("msg_1", "acc_1", "GB")


def _status(
    wamid: str, meta_status: str = "sent", callback: str | None = None
) -> core.WebhookStatus:
    return core.WebhookStatus(
        wamid=wamid,
        meta_status=meta_status,
        occurred_at=1_750_030_000_000,
        waba_id=WABA_ID,
        phone_number_id="106540352242922",
        callback_data=callback,
        pricing=None,
        error=None,
        raw=b"{}",
    )


def _webhook(payload: bytes) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=1_750_030_000_000,
        payload=msgspec.Raw(payload),
    )


def _message(store: FakeStore, message_id: str, wamid: str | None = None) -> None:
    doc = {"_id": message_id, "account_id": "acc_1", "recipient_region": "GB"}
    store.messages[message_id] = doc if wamid is None else {**doc, "wamid": wamid}


def _processor(store: FakeStore, publisher: FakePublisher) -> WebhookProcessor:
    return WebhookProcessor(store, publisher, FakeClock(start_ms=1_750_030_100_000))


# --- the pure helpers ---------------------------------------------------------------------------


def test_the_batch_reads_each_unknown_wamids_message_once_and_nothing_else() -> None:
    statuses = [
        _status("wamid.A", "sent", "msg_a"),
        _status("wamid.A", "delivered", "msg_a"),  # the same message: asked once
        _status("wamid.K", "sent", "msg_known"),  # its wamid is known
        _status("wamid.B", "played", "msg_b"),  # not published: never resolved
        _status("wamid.C", "read", "not-ours"),  # another app's callback data
        _status("wamid.D", "failed"),  # no callback data
        _status("wamid.E", "delivered", "msg_e"),
    ]
    assert core.callback_ids_to_read(statuses, {"wamid.K"}) == ["msg_a", "msg_e"]
    assert core.callback_ids_to_read([], set()) == []


def test_a_message_found_by_callback_data_confirms_only_its_own_wamid() -> None:
    status = _status("wamid.A", "sent", "msg_1")
    assert core.wamid_confirmed(status, core.CallbackMessage(REF, "wamid.A"))
    assert not core.wamid_confirmed(status, core.CallbackMessage(REF, ""))
    assert not core.wamid_confirmed(status, core.CallbackMessage(REF, "wamid.OTHER"))


def test_a_callback_message_needs_an_account_and_keeps_a_string_wamid_only() -> None:
    doc = {"_id": "msg_1", "account_id": "acc_1", "recipient_region": "GB"}
    assert core.callback_message_from_doc(doc) == core.CallbackMessage(REF, "")
    assert core.callback_message_from_doc({**doc, "wamid": "w"}) == core.CallbackMessage(REF, "w")
    assert core.callback_message_from_doc({**doc, "wamid": 7}) == core.CallbackMessage(REF, "")
    assert core.callback_message_from_doc({"_id": "msg_1"}) is None
    assert core.callback_message_from_doc(None) is None


# --- the processor ------------------------------------------------------------------------------


async def test_a_batch_of_unindexed_statuses_reads_their_messages_once() -> None:
    store, publisher = FakeStore(), FakePublisher()
    processor = _processor(store, publisher)
    webhooks = []
    for i in range(30):
        _message(store, f"msg_{i}")
        webhooks.append(
            _webhook(
                status_webhook(
                    status_item(f"wamid.{i}", "sent", 1750030070, callback=f"msg_{i}"),
                    status_item(f"wamid.{i}", "delivered", 1750030071, callback=f"msg_{i}"),
                )
            )
        )

    await processor.handle_events(webhooks)

    assert store.callback_reads == 1
    events: list[StatusChanged] = publisher.events(STATUS_CHANGED)
    assert sorted((e.event_id, e.message_id) for e in events) == sorted(
        (f"wamid.{i}:{s}", f"msg_{i}") for i in range(30) for s in ("sent", "delivered")
    )
    assert store.parked == {}


async def test_no_callback_read_when_every_wamid_is_known() -> None:
    store, publisher = FakeStore(), FakePublisher()
    store.wamid_index["wamid.I"] = core.wamid_index_doc("wamid.I", REF)
    _message(store, "msg_1")
    await _processor(store, publisher).handle(
        _webhook(status_webhook(status_item("wamid.I", "sent", 1750030070, callback="msg_1")))
    )
    assert store.callback_reads == 0
    assert [e.message_id for e in publisher.events(STATUS_CHANGED)] == ["msg_1"]


async def test_unknown_messages_are_parked_after_the_one_read() -> None:
    store, publisher = FakeStore(), FakePublisher()
    await _processor(store, publisher).handle_events(
        [
            _webhook(status_webhook(status_item("wamid.X", "sent", 1750030070, callback="msg_x"))),
            _webhook(status_webhook(status_item("wamid.Y", "sent", 1750030070, callback="msg_y"))),
        ]
    )
    assert store.callback_reads == 1
    assert sorted(store.parked) == ["wamid.X:sent", "wamid.Y:sent"]
    assert publisher.events(STATUS_CHANGED) == []


async def test_only_a_wamid_the_document_carries_is_remembered() -> None:
    """msg_sent's document has the status's wamid (the sender's `sent` is stored): its later
    statuses need no read at all. msg_new's has none yet and msg_other's another one: their
    later statuses are read again (by wamid, then by callback data)."""
    store, publisher = FakeStore(), FakePublisher()
    processor = _processor(store, publisher)
    _message(store, "msg_sent", wamid="wamid.S")
    _message(store, "msg_new")
    _message(store, "msg_other", wamid="wamid.ELSEWHERE")

    def batch(meta_status: str, at: int) -> list[WebhookReceived]:
        return [
            _webhook(status_webhook(status_item(w, meta_status, at, callback=m)))
            for w, m in (("wamid.S", "msg_sent"), ("wamid.N", "msg_new"), ("wamid.O", "msg_other"))
        ]

    await processor.handle_events(batch("sent", 1750030070))
    assert (store.wamid_lookups, store.callback_reads) == (1, 1)
    await processor.handle_events(batch("delivered", 1750030071))
    assert (store.wamid_lookups, store.callback_reads) == (2, 2)
    events = publisher.events(STATUS_CHANGED)
    assert sorted((e.event_id, e.message_id) for e in events) == sorted(
        (f"{w}:{s}", m)
        for w, m in (("wamid.S", "msg_sent"), ("wamid.N", "msg_new"), ("wamid.O", "msg_other"))
        for s in ("sent", "delivered")
    )
    # a batch of msg_sent's statuses alone: remembered, no read of either kind
    await processor.handle(
        _webhook(status_webhook(status_item("wamid.S", "read", 1750030072, callback="msg_sent")))
    )
    assert (store.wamid_lookups, store.callback_reads) == (2, 2)
    assert publisher.events(STATUS_CHANGED)[-1].message_id == "msg_sent"
