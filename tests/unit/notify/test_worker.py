"""The consumer over every example of every topic it reads (schema drift shows here), requests
(test events, replays), alerts (one email per crossing or change), and a status read before
its request."""

from __future__ import annotations

import email
import json
from email.policy import default

import msgspec
import pytest

from services.notify import core
from services.notify.worker import SERVICE
from shared.messages import (
    LOW_BALANCE_ALERTED,
    NOTIFY_REQUESTED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    topics_read_by,
)
from tests.unit.notify.conftest import Notify, build

WABA = "102290129340398"


def bodies(notify: Notify) -> list[dict]:
    return [json.loads(c.body) for c in notify.transport.calls]


async def test_notify_handles_every_example_of_every_topic_it_reads(notify: Notify) -> None:
    notify.store.wabas[WABA] = "acc_demo"
    notify.store.numbers["106540352242922"] = "acc_demo"
    notify.store.balances["acc_demo"] = {"currency": "EUR"}
    notify.store.accounts["acc_demo"] = {"_id": "acc_demo", "email": "ops@example.com"}
    notify.add_endpoint("we_std", events=("*",))
    notify.add_endpoint("we_meta", fmt="meta")
    notify.add_endpoint("we_01HZY", events=("balance.*",))
    topics = topics_read_by(SERVICE)
    assert len(topics) == 11
    offset = 0
    for topic in topics:
        for example in topic.examples:
            offset += 1
            await notify.handle(topic, example, offset=offset)
    await notify.settle()
    types = {b["type"] for b in bodies(notify) if "type" in b}
    assert {
        "message.accepted",
        "message.sent",
        "message.delivered",
        "message.failed",
        "message.rejected",
        "message.received",
        "template.status_changed",
        "phone_number.quality_changed",
        "account.updated",
        "account.hold_changed",
        "balance.low",
        "balance.topped_up",
        "endpoint.test",
    } <= types
    meta = [b for b in bodies(notify) if b.get("object") == "whatsapp_business_account"]
    assert meta, "the webhook example reached the meta endpoint"
    assert {a["kind"] for a in notify.store.alerts.values()} == {
        "balance_low",
        "template_status",
        "number_quality",
        "account_hold",
    }
    low = next(b for b in bodies(notify) if b.get("type") == "balance.low")
    assert low["data"]["currency"] == "EUR"


async def test_a_low_balance_crossing_and_a_template_rejection_mail_once_each(
    notify: Notify,
) -> None:
    notify.store.wabas[WABA] = "acc_demo"
    notify.store.accounts["acc_demo"] = {
        "_id": "acc_demo",
        "email": "ops@example.com",
        "alert_emails": ["cfo@example.com"],
    }
    rejected = {
        **TEMPLATE_STATUS_CHANGED.examples[0],
        "status": "REJECTED",
        "reason": "INVALID_FORMAT",
        "event_id": "1689556908129832:REJECTED:1",
    }
    for offset in (1, 2):  # redelivered records: the same crossing, the same change
        await notify.handle(LOW_BALANCE_ALERTED, LOW_BALANCE_ALERTED.examples[0], offset)
        await notify.handle(TEMPLATE_STATUS_CHANGED, rejected, offset)
    assert await notify.mailer.send_due() == 2
    assert await notify.mailer.send_due() == 0
    subjects = sorted(m["Subject"] for m, _ in notify.mail.sent)
    assert subjects == ["Low balance: 0.09 USD left", 'Template "order_confirmation" rejected']
    for message, to in notify.mail.sent:
        assert to == ["ops@example.com", "cfo@example.com"]
        parsed = email.message_from_bytes(message.as_bytes(), policy=default)
        assert parsed.get_content_type() == "multipart/alternative"
        plain, html = (parsed.get_body(("plain",)), parsed.get_body(("html",)))
        assert plain is not None and html is not None
        assert "<p>" in html.get_content() and "<p>" not in plain.get_content()
    # a second crossing is a new alert
    await notify.handle(
        LOW_BALANCE_ALERTED, {**LOW_BALANCE_ALERTED.examples[0], "event_id": "acc_demo:low:4"}, 3
    )
    assert await notify.mailer.send_due() == 1


async def test_an_approval_of_a_paused_template_is_mailed_but_not_every_status(
    notify: Notify,
) -> None:
    notify.store.wabas[WABA] = "acc_demo"
    notify.store.accounts["acc_demo"] = {"_id": "acc_demo", "email": "ops@example.com"}
    await notify.handle(
        TEMPLATE_STATUS_CHANGED,
        {**TEMPLATE_STATUS_CHANGED.examples[0], "status": "PENDING", "event_id": "t:P:1"},
    )
    assert notify.store.alerts == {}
    await notify.handle(TEMPLATE_STATUS_CHANGED, TEMPLATE_STATUS_CHANGED.examples[0])
    assert [a["kind"] for a in notify.store.alerts.values()] == ["template_status"]


async def test_a_status_read_before_its_request_waits_briefly_then_uses_status_doc(
    notify: Notify,
) -> None:
    notify.add_endpoint("we_1")
    notify.store.messages["msg_01HZY3V9J6Q8W4T2"] = {
        "_id": "msg_01HZY3V9J6Q8W4T2",
        "account_id": "acc_demo",
        "recipient": "+447911123456",
        "type": "template",
        "client_reference": "order-1234",
        "callback_data": "crm-1",
        "phone_number_id": "106540352242922",
    }
    await notify.handle(STATUS_CHANGED, STATUS_CHANGED.examples[1])
    await notify.settle()
    [body] = bodies(notify)
    assert (body["data"]["client_reference"], body["data"]["biz_opaque_callback_data"]) == (
        "order-1234",
        "crm-1",
    )


async def test_a_test_request_and_replays_deliver_with_the_original_ids(notify: Notify) -> None:
    notify.add_endpoint("we_1", events=("message.*",))
    notify.add_endpoint("we_2", events=("message.accepted",))
    for i in range(3):
        await notify.handle(
            SEND_REQUESTED,
            {
                **SEND_REQUESTED.examples[0],
                "message_id": f"msg_{i}",
                "accepted_at": 1_764_000_000_000 + i,
            },
        )
    await notify.settle()
    live = {c.headers["webhook-id"] for c in notify.transport.calls}
    assert len(notify.transport.calls) == 6 and len(live) == 3
    notify.transport.calls.clear()
    request = {"account_id": "acc_demo", "endpoint_id": "we_1", "requested_at": 1}
    await notify.handle(NOTIFY_REQUESTED, {**request, "event_id": "nreq_t", "kind": "test"})
    await notify.handle(
        NOTIFY_REQUESTED,
        {
            **request,
            "event_id": "nreq_r",
            "kind": "replay",
            "since": 1_764_000_000_000,
            "until": 1_764_000_000_001,
        },
    )
    one = core.accepted_event_id("msg_2")
    await notify.handle(
        NOTIFY_REQUESTED,
        {**request, "event_id": "nreq_1", "kind": "replay", "replay_event_id": one},
    )
    await notify.handle(
        NOTIFY_REQUESTED,
        {**request, "event_id": "nreq_x", "kind": "replay", "endpoint_id": "we_unknown"},
    )
    await notify.settle()
    calls = notify.transport.calls
    assert all(c.url == "https://we_1.example.com/hook" for c in calls)
    types = [json.loads(c.body)["type"] for c in calls]
    assert types.count("endpoint.test") == 1 and types.count("message.accepted") == 3
    replayed = {c.headers["webhook-id"] for c in calls} - {json.loads(calls[0].body)["id"]}
    assert replayed == live  # msg_0 and msg_1 by range, msg_2 by id: the original ids
    # replaying again is a new delivery of the same event
    await notify.handle(
        NOTIFY_REQUESTED,
        {**request, "event_id": "nreq_2", "kind": "replay", "replay_event_id": one},
    )
    await notify.settle()
    assert calls[-1].headers["webhook-id"] == one


async def test_another_accounts_endpoint_is_never_a_target(notify: Notify) -> None:
    notify.add_endpoint("we_other", account_id="acc_other")
    await notify.handle(SEND_REQUESTED, SEND_REQUESTED.examples[0])
    await notify.handle(
        NOTIFY_REQUESTED,
        {
            "event_id": "nreq",
            "account_id": "acc_demo",
            "endpoint_id": "we_other",
            "kind": "test",
            "requested_at": 1,
        },
    )
    await notify.settle()
    assert notify.transport.calls == []


async def test_a_batch_is_one_insert_per_collection_and_its_statuses_read_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notify = build(endpoint_ttl_s=2.0)  # notify's default endpoint cache
    notify.add_endpoint("we_1", events=("message.*",))
    reads: list[str] = []
    for name in ("endpoints_of_account", "events_by_ids", "message_details", "message_doc"):
        real = getattr(notify.store, name)

        async def counted(*args: object, _real: object = real, _name: str = name) -> object:
            reads.append(_name)
            return await _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(notify.store, name, counted)
    events: list[tuple[object, dict]] = []
    for i in range(20):
        message = f"msg_{i:02d}"
        for state in ("delivered", "sent"):  # statuses first: they are on another topic
            status = {
                **STATUS_CHANGED.examples[0],
                "event_id": f"{message}:{state}",
                "message_id": message,
                "status": state,
            }
            events.append((STATUS_CHANGED, status))
        request = {**SEND_REQUESTED.examples[0], "message_id": message, "event_id": message}
        events.append((SEND_REQUESTED, request))
    events.append(events[0])  # a redelivered record in the same batch
    await notify.handle_batch(events)  # type: ignore[arg-type]
    await notify.settle()
    assert notify.store.writes == {"events": 1, "deliveries": 1}
    assert reads == ["endpoints_of_account"]  # once for the 61 records of one account
    assert len(notify.store.events) == len(notify.store.deliveries) == 60
    assert len(notify.transport.calls) == 60  # the duplicate is not delivered twice
    sent = [json.loads(c.body) for c in notify.transport.calls]
    assert {e["data"]["client_reference"] for e in sent} == {"order-1234"}  # the request's


async def test_a_status_whose_request_came_in_an_earlier_run_reads_it_once_per_batch(
    notify: Notify,
) -> None:
    notify.add_endpoint("we_1", events=("message.*",))
    requests = [
        (SEND_REQUESTED, {**SEND_REQUESTED.examples[0], "message_id": f"m{i}", "event_id": f"m{i}"})
        for i in range(3)
    ]
    await notify.handle_batch(requests)  # type: ignore[arg-type]
    restarted = build()  # a new process: nothing in memory, the same database
    restarted.store = notify.store
    restarted.worker._store = notify.store  # type: ignore[attr-defined]
    restarted.directory._store = notify.store  # type: ignore[attr-defined]
    asked: list[list[str]] = []
    real = notify.store.events_by_ids

    async def counted(ids: list[str]) -> dict:
        asked.append(list(ids))
        return await real(ids)

    notify.store.events_by_ids = counted  # type: ignore[method-assign]
    statuses = [
        (
            STATUS_CHANGED,
            {
                **STATUS_CHANGED.examples[0],
                "event_id": f"m{i}:sent",
                "message_id": f"m{i}",
                "status": "sent",
            },
        )
        for i in range(3)
    ]
    await restarted.handle_batch(statuses)  # type: ignore[arg-type]
    assert asked == [[core.accepted_event_id(f"m{i}") for i in range(3)]]
    sent = [d for d in notify.store.events.values() if d["type"] == "message.sent"]
    assert len(sent) == 3 and all('"order-1234"' in d["payload"] for d in sent)


async def test_a_record_of_another_topic_or_shape_is_a_permanent_error(notify: Notify) -> None:
    from shared.errors import PermanentError
    from tests.unit.notify.conftest import FakeRecord

    with pytest.raises(PermanentError):
        await notify.worker.handle_record(FakeRecord("other.topic", b"{}", 1))  # type: ignore[arg-type]
    with pytest.raises(PermanentError):
        await notify.worker.handle_record(
            FakeRecord(  # type: ignore[arg-type]
                WEBHOOK_RECEIVED.name, msgspec.json.encode({"event_id": 1}), 1
            )
        )
