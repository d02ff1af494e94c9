"""The dispatcher over days of simulated time (a fake clock): retries keep the event's id, an
endpoint back after two days gets everything, one failing for three days is disabled and its
owner mailed, a hung endpoint holds only its own lane, and a restart loses nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from standardwebhooks import Webhook

from services.notify.core import AttemptResult
from services.notify.dispatcher import DeliveryPolicy, Dispatcher
from shared.messages import SEND_REQUESTED, STATUS_CHANGED
from tests.unit.notify.conftest import DAY_MS, Notify, build
from tests.unit.notify.fakes import Call


def message_events(n: int) -> list[dict]:
    base = SEND_REQUESTED.examples[0]
    return [{**base, "event_id": f"msg_{i}", "message_id": f"msg_{i}"} for i in range(n)]


async def send(notify: Notify, n: int) -> None:
    for i, event in enumerate(message_events(n)):
        await notify.handle(SEND_REQUESTED, event, offset=i)
    await notify.settle()


async def advance_until_quiet(notify: Notify, until_ms: int) -> None:
    """Move the clock from one due delivery to the next, delivering each round."""
    while True:
        due = [
            d["next_at"]
            for d in notify.store.deliveries.values()
            if d["state"] == "pending" and d["next_at"] is not None
        ]
        if not due or min(due) > until_ms:
            return
        step = max(0, min(due) - notify.clock.now_ms())
        notify.clock.advance(step / 1000)
        await notify.run_due()


def verified_ids(calls: list[Call], secret: str) -> list[str]:
    """Each call's signature is the one the standardwebhooks library computes for its id,
    timestamp and body (its verify() reads the real clock; these timestamps are the fake
    clock's, days apart)."""
    ids = []
    for call in calls:
        msg_id, timestamp = call.headers["webhook-id"], int(call.headers["webhook-timestamp"])
        expected = Webhook(secret).sign(
            msg_id, datetime.fromtimestamp(timestamp, tz=UTC), call.body.decode()
        )
        assert call.headers["webhook-signature"].split(" ")[0] == expected
        ids.append(msg_id)
    return ids


async def test_an_endpoint_down_for_two_days_then_back_gets_every_event_with_its_id(
    notify: Notify,
) -> None:
    secret = notify.add_endpoint("we_1", events=("message.*",))
    up_at = notify.clock.now_ms() + 2 * DAY_MS
    notify.transport.answer = lambda call: 200 if notify.clock.now_ms() >= up_at else 503
    await send(notify, 3)
    assert len(notify.transport.calls) == 3
    await advance_until_quiet(notify, notify.clock.now_ms() + 4 * DAY_MS)
    states = {d["event_id"]: d["state"] for d in notify.store.deliveries.values()}
    assert set(states.values()) == {"delivered"}
    delivered = [c for c in notify.transport.calls if notify.clock.now_ms() >= up_at]
    first_ids = verified_ids(notify.transport.calls[:3], secret)
    assert sorted(set(verified_ids(notify.transport.calls, secret))) == sorted(first_ids)
    # every attempt carried the same body for the same id; the last ones succeeded
    bodies: dict[str, bytes] = {}
    for call in notify.transport.calls:
        assert bodies.setdefault(call.headers["webhook-id"], call.body) == call.body
    assert delivered
    attempts = sorted(notify.store.attempts.values(), key=lambda a: (a["event_id"], a["attempt"]))
    per_event = {a["event_id"]: a["attempt"] for a in attempts}
    assert all(n >= 7 for n in per_event.values())  # 2 days in: the 7th try and later
    assert notify.dispatcher.disabled == []  # type: ignore[attr-defined]
    assert notify.store.states["we_1"]["failing_since"] is None  # recovered


async def test_three_days_without_a_success_disable_the_endpoint_and_mail_its_owner_once(
    notify: Notify,
) -> None:
    notify.store.accounts["acc_demo"] = {
        "_id": "acc_demo",
        "email": "ops@example.com",
        "alert_emails": ["oncall@example.com", "OPS@example.com"],
    }
    notify.add_endpoint("we_1")
    notify.transport.answer = lambda call: AttemptResult(None, 0.01, "connection_error", "down")
    await send(notify, 2)
    await advance_until_quiet(notify, notify.clock.now_ms() + 5 * DAY_MS)
    state = notify.store.states["we_1"]
    assert state["disabled_reason"] == "failing"
    assert state["disabled_at"] - state["failing_since"] >= 3 * DAY_MS
    assert notify.dispatcher.disabled == ["we_1"]  # type: ignore[attr-defined]
    # the tenth attempt (~75 h in) is the schedule's last: one delivery failed on it, the
    # other found the endpoint disabled
    assert sorted(d["state"] for d in notify.store.deliveries.values()) == ["cancelled", "failed"]
    # new events are no longer sent to it
    calls = len(notify.transport.calls)
    await notify.handle(SEND_REQUESTED, {**SEND_REQUESTED.examples[0], "message_id": "msg_x"})
    await notify.settle()
    assert len(notify.transport.calls) == calls
    assert await notify.mailer.send_due() == 1
    [(message, to)] = notify.mail.sent
    assert to == ["ops@example.com", "oncall@example.com"]
    assert "we_1" in message["Subject"]
    assert await notify.mailer.send_due() == 0


async def test_410_disables_at_once(notify: Notify) -> None:
    notify.add_endpoint("we_1")
    notify.transport.answer = lambda call: 410
    await send(notify, 1)
    assert notify.store.states["we_1"]["disabled_reason"] == "gone"
    [delivery] = notify.store.deliveries.values()
    assert delivery["state"] == "failed"


async def test_a_hung_endpoint_does_not_delay_another_accounts_events() -> None:
    notify = build(per_endpoint_concurrency=4)
    notify.add_endpoint("we_hung", account_id="acc_demo", url="https://hung.example/h")
    notify.add_endpoint("we_ok", account_id="acc_other", url="https://ok.example/h")
    notify.transport.hang.add("https://hung.example/h")
    for i, event in enumerate(message_events(20)):
        await notify.handle(SEND_REQUESTED, event, offset=i)
    await notify.handle(
        SEND_REQUESTED,
        {**SEND_REQUESTED.examples[0], "message_id": "msg_b", "account_id": "acc_other"},
        offset=99,
    )
    for _ in range(10):
        await asyncio.sleep(0)  # let the lanes start
    assert len(notify.transport.to("https://hung.example/h")) == 4  # its cap, no more
    assert len(notify.transport.to("https://ok.example/h")) == 1
    ok = [d for d in notify.store.deliveries.values() if d["endpoint_id"] == "we_ok"]
    assert [d["state"] for d in ok] == ["delivered"]
    notify.transport.released.set()
    await notify.settle()


async def test_a_restarted_dispatcher_delivers_what_the_dead_one_left_pending(
    notify: Notify,
) -> None:
    notify.add_endpoint("we_1")
    notify.transport.hang.add("https://we_1.example.com/hook")
    await send_without_waiting(notify, 5)
    for _ in range(10):
        await asyncio.sleep(0)
    await notify.dispatcher.stop()  # killed mid-attempt: nothing was recorded
    assert {d["state"] for d in notify.store.deliveries.values()} == {"pending"}
    notify.transport.hang.clear()
    restarted = Dispatcher(
        notify.store, notify.directory, notify.transport, notify.clock, DeliveryPolicy(jitter=0.0)
    )
    assert await restarted.recover() == 5
    await restarted.wait_idle()
    assert {d["state"] for d in notify.store.deliveries.values()} == {"delivered"}
    ids = {c.headers["webhook-id"] for c in notify.transport.calls}
    assert len(ids) == 5  # the same five events, retried under their own ids


async def send_without_waiting(notify: Notify, n: int) -> None:
    for i, event in enumerate(message_events(n)):
        await notify.handle(SEND_REQUESTED, event, offset=i)


async def test_a_status_for_an_account_without_endpoints_costs_no_lookup(notify: Notify) -> None:
    await notify.handle(STATUS_CHANGED, STATUS_CHANGED.examples[1])
    assert notify.store.events == {} and notify.store.deliveries == {}
