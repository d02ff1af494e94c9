"""An account hold becomes the client event `account.hold_changed` (its id derived from guard's
event, so a repeated hold is the same event) and an alert email that says why and what to do;
a release is told too."""

from __future__ import annotations

import json

import msgspec
import orjson

from services.notify import alerts, core
from shared.client_events import AccountHoldData, ClientEvent
from shared.messages import ACCOUNT_HOLD_CHANGED

HELD, RELEASED = (
    ACCOUNT_HOLD_CHANGED.decode(orjson.dumps(e)) for e in ACCOUNT_HOLD_CHANGED.examples
)


def test_a_hold_is_a_client_event_with_its_rule_reason_and_figures() -> None:
    event = core.hold_event(HELD)
    body = msgspec.json.decode(event.body, type=ClientEvent)
    data = msgspec.convert(body.data, AccountHoldData)
    assert (body.type, body.account_id, data.held, data.change, data.rule) == (
        "account.hold_changed",
        "acc_demo",
        True,
        "held",
        "failure_rate",
    )
    assert data.observed["rate"] == 0.625 and "62%" in data.reason
    assert core.hold_event(HELD).id == event.id != core.hold_event(RELEASED).id


def test_a_release_is_a_client_event_too() -> None:
    body = json.loads(core.hold_event(RELEASED).body)
    assert body["data"]["held"] is False and body["data"]["change"] == "released"


def test_the_alert_says_why_and_what_happens_to_messages() -> None:
    held = alerts.account_hold(HELD)
    assert held.kind == "account_hold" and held.key == f"hold:{HELD.event_id}"
    assert held.subject == "Sending held: failure rate"
    assert "62% of the 80 messages" in held.text and "403 account_held" in held.text
    released = alerts.account_hold(RELEASED)
    assert released.subject == "Sending released" and "may send again" in released.text
