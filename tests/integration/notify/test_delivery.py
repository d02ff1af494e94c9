"""notify on the real broker and database, delivering over real HTTP: every delivery verified
by the standardwebhooks library; a hung receiver on one account does not delay another's
events beyond 1 s; a receiver that disappears for a stretch of (compressed) days gets
everything afterwards with the same ids; trickling and huge answers end at the timeout and
the read cap; 410 disables; low balance and a template rejection each mail once."""

from __future__ import annotations

import json
import time

from standardwebhooks import Webhook

from shared.messages import (
    LOW_BALANCE_ALERTED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    LowBalanceAlerted,
    SendRequested,
    StatusChanged,
    TemplateStatusChanged,
)
from tests.integration.notify.conftest import (
    NotifyWorld,
    fail_with_huge_body,
    gone,
    hang,
    trickle,
)


def request(message_id: str, account_id: str = "acc_a") -> SendRequested:
    example = SEND_REQUESTED.examples[0]
    return SEND_REQUESTED.decode(
        json.dumps(
            {
                **example,
                "event_id": message_id,
                "message_id": message_id,
                "account_id": account_id,
                "accepted_at": int(time.time() * 1000),
            }
        ).encode()
    )


def status(message_id: str, state: str, account_id: str = "acc_a") -> StatusChanged:
    return StatusChanged(
        event_id=f"{message_id}:{state}",
        message_id=message_id,
        account_id=account_id,
        status=state,  # type: ignore[arg-type]
        occurred_at=int(time.time() * 1000),
        source="webhook",
        wamid=f"wamid.{message_id}",
    )


def verify(world: NotifyWorld, path: str, secret: str) -> list[dict]:
    return [Webhook(secret).verify(r.body, r.headers) for r in world.receivers.at(path)]


async def test_a_clients_message_events_arrive_signed_and_verifiable(world: NotifyWorld) -> None:
    [secret] = await world.add_endpoint("we_a", "a", events=("message.*",))
    world.start_notify()
    await world.publish(SEND_REQUESTED, request("msg_1"))
    for state in ("sent", "delivered", "read", "delivered"):  # a duplicate too
        await world.publish(STATUS_CHANGED, status("msg_1", state))
    await world.wait_for(lambda: len(world.receivers.at("a")) >= 4, what="4 deliveries")
    events = verify(world, "a", secret)
    assert sorted(e["type"] for e in events) == [
        "message.accepted",
        "message.delivered",
        "message.read",
        "message.sent",
    ]
    assert all(e["data"]["client_reference"] == "order-1234" for e in events)
    # an attempt is recorded once its answer is read: after the receiver saw the request
    attempts = await world.wait_for(
        lambda: world.db["delivery_attempts"].find({}).to_list(None), what="attempts recorded"
    )
    assert {a["http_status"] for a in attempts} == {200}
    assert all(a["latency_ms"] >= 0 and a["error"] is None for a in attempts)


async def test_a_hung_receiver_does_not_hold_up_another_accounts_events(
    world: NotifyWorld,
) -> None:
    """Account b's events go out while account a's receivers hang (10 s request timeout),
    trickle and fail. Without lanes per endpoint b would wait for a's timeouts (10 s and
    more); with them it waits only for the machine: about 0.1 s alone, up to 1.1 s seen when
    a CI run loads both cores. The bound sits between the two."""
    await world.add_endpoint("we_hung", "hung", account_id="acc_a")
    await world.add_endpoint("we_trickle", "trickle", account_id="acc_a")
    await world.add_endpoint("we_huge", "huge", account_id="acc_a")
    [secret] = await world.add_endpoint("we_b", "b", account_id="acc_b")
    world.receivers.behaviours.update(hung=hang, trickle=trickle, huge=fail_with_huge_body)
    world.start_notify(total_timeout=10.0)
    for i in range(12):  # the hostile endpoints get more than their lanes hold
        await world.publish(SEND_REQUESTED, request(f"msg_a{i}", "acc_a"))
    await world.wait_for(lambda: len(world.receivers.at("hung")) >= 4, what="hung busy")
    sent_at = []
    for i in range(5):
        sent_at.append(time.time())
        await world.publish(SEND_REQUESTED, request(f"msg_b{i}", "acc_b"))
    await world.wait_for(
        lambda: len(world.receivers.at("b")) >= 5, within=10, what="account b's events"
    )
    received = world.receivers.at("b")
    lags = [r.at - s for r, s in zip(received, sent_at, strict=True)]
    assert max(lags) < 3.0, lags
    assert len(verify(world, "b", secret)) == 5
    assert len(world.receivers.at("hung")) == 4  # its own cap: the rest wait in its lane
    # the huge 500 answers are failures recorded with at most 1 KiB of their body
    failed = await world.wait_for(
        lambda: world.db["delivery_attempts"].find({"endpoint_id": "we_huge"}).to_list(None),
        what="huge attempts recorded",
    )
    assert all(a["http_status"] == 500 and len(a["response"]) <= 1024 for a in failed)


async def test_a_receiver_gone_for_days_gets_everything_with_the_same_ids_afterwards(
    world: NotifyWorld,
) -> None:
    [secret] = await world.add_endpoint("we_a", "a")
    # the production schedule, a day a second (NOTIFY_TIME_SCALE=86400 in development)
    world.start_notify(
        schedule=(5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
        time_scale=86_400.0,
        poll_interval=0.05,
    )
    await world.receivers.stop()  # the receiver disappears
    for i in range(5):
        await world.publish(SEND_REQUESTED, request(f"msg_{i}"))

    async def retried() -> bool:
        docs = await world.db["deliveries"].find({"attempts": {"$gte": 3}}).to_list(None)
        return len(docs) == 5

    await world.wait_for(retried, what="three failed attempts each")
    await world.receivers.start()  # back, about a simulated day later
    await world.wait_for(
        lambda: len({r.headers["webhook-id"] for r in world.receivers.at("a")}) == 5,
        within=20,
        what="every event after the outage",
    )
    events = verify(world, "a", secret)
    attempts = await world.db["delivery_attempts"].find({}).to_list(None)
    first_ids = {a["event_id"] for a in attempts if a["attempt"] == 1}
    assert {e["id"] for e in events} == first_ids
    assert {a["outcome"] for a in attempts if a["attempt"] == 1} == {"connection_error"}

    # The receiver answers before notify stores the outcome: wait for the last one stored.
    async def all_delivered() -> bool:
        deliveries = await world.db["deliveries"].find({}).to_list(None)
        return len(deliveries) == 5 and {d["state"] for d in deliveries} == {"delivered"}

    await world.wait_for(all_delivered, within=20, what="every delivery stored as delivered")


async def test_410_disables_the_endpoint_and_its_owner_is_mailed(world: NotifyWorld) -> None:
    await world.db["accounts"].insert_one(
        {"_id": "acc_a", "email": "ops@example.com", "alert_emails": ["dev@example.com"]}
    )
    await world.add_endpoint("we_gone", "gone")
    world.receivers.behaviours["gone"] = gone
    world.start_notify()
    await world.publish(SEND_REQUESTED, request("msg_1"))
    state = await world.wait_for(
        lambda: world.db["endpoint_states"].find_one({"_id": "we_gone", "disabled_reason": "gone"}),
        what="disabled",
    )
    assert state["account_id"] == "acc_a"
    await world.publish(SEND_REQUESTED, request("msg_2"))
    [mail] = await world.wait_for(world.mailbox.drain, what="the endpoint-disabled mail")
    assert "we_gone" in mail["Subject"] and mail["X-Rcpt-To"] == "ops@example.com, dev@example.com"
    assert len(world.receivers.at("gone")) == 1  # msg_2 was not sent to a disabled endpoint


async def test_a_low_balance_and_a_template_rejection_each_mail_exactly_once(
    world: NotifyWorld,
) -> None:
    await world.db["accounts"].insert_one({"_id": "acc_a", "email": "ops@example.com"})
    await world.db["wabas"].insert_one({"_id": "102290129340398", "account_id": "acc_a"})
    world.start_notify()
    now = int(time.time() * 1000)
    low = LowBalanceAlerted(
        event_id="acc_a:low:1",
        account_id="acc_a",
        available=90_000,
        threshold=1_000_000,
        occurred_at=now,
    )
    rejected = TemplateStatusChanged(
        event_id="1689:REJECTED:1",
        waba_id="102290129340398",
        template_id="1689",
        name="order_confirmation",
        language="en_US",
        status="REJECTED",
        reason="INVALID_FORMAT",
        occurred_at=now,
    )
    for _ in range(2):  # each published twice: a producer retry, a redelivery
        await world.publish(LOW_BALANCE_ALERTED, low)
        await world.publish(TEMPLATE_STATUS_CHANGED, rejected)
    mails: list = []

    async def both() -> bool:
        mails.extend(world.mailbox.drain())
        return len(mails) >= 2

    await world.wait_for(both, what="two mails")

    async def both_recorded() -> list:
        # The mailer records "sent" after the SMTP server has the mail, so the mail can come first.
        sent = await world.db["email_alerts"].find({"state": "sent"}).to_list(None)
        return sent if len(sent) >= 2 else []

    alerts = await world.wait_for(both_recorded, what="two alerts recorded as sent")
    assert len(alerts) == 2
    mails.extend(world.mailbox.drain())
    assert sorted(m["Subject"] for m in mails) == [
        "Low balance: 0.09 USD left",
        'Template "order_confirmation" rejected',
    ]
    for mail in mails:
        assert mail.get_content_type() == "multipart/alternative"
        assert mail.get_body(("plain",)) is not None and mail.get_body(("html",)) is not None
