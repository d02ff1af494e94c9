"""notify's pure decisions: events and their ids, who receives them, signing (checked by the
`standardwebhooks` library, a verifier we did not write), the retry schedule and endpoint
health."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import msgspec
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.notify import core
from shared.client_events import ClientEvent
from shared.messages import (
    LOW_BALANCE_ALERTED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    NotifyRequested,
    StatusChanged,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
NOW = 1_764_000_000_000


def endpoint(**overrides: object) -> core.Endpoint:
    fields: dict[str, object] = dict(
        id="we_1",
        account_id="acc_demo",
        url="https://example.com/hook",
        events=("message.*",),
        format="standard",
        enabled=True,
        enabled_at=NOW - 10_000,
        secrets=(core.SecretEntry("enc", NOW - 10_000, None),),
        created_at=NOW - 10_000,
    )
    fields.update(overrides)
    return core.Endpoint(**fields)  # type: ignore[arg-type]


def status(status_: str = "delivered", **overrides: object) -> StatusChanged:
    example = dict(STATUS_CHANGED.examples[1])
    example.update(status=status_, **overrides)
    return STATUS_CHANGED.decode(msgspec.json.encode(example))


def test_a_status_is_one_event_whatever_its_source_and_however_often_it_comes() -> None:
    from_webhook = core.status_event(status("delivered"), None)
    duplicate = core.status_event(
        status("delivered", event_id="other:delivered", source="sender", occurred_at=NOW), None
    )
    read = core.status_event(status("read"), None)
    assert from_webhook is not None and duplicate is not None and read is not None
    assert from_webhook.id == duplicate.id != read.id
    assert from_webhook.type == "message.delivered" and read.type == "message.read"
    assert core.status_event(status("approved"), None) is None
    assert core.status_event(status("unknown"), None) is None


def test_a_status_event_carries_the_requests_reference_and_the_clients_callback_data() -> None:
    request = SEND_REQUESTED.decode(msgspec.json.encode(SEND_REQUESTED.examples[0]))
    accepted = core.accepted_event(request)
    details = core.MessageDetails.from_dict(accepted.details or {})
    event = core.status_event(status("delivered", message_id=request.message_id), details)
    assert event is not None
    body = msgspec.json.decode(event.body, type=ClientEvent)
    assert body.id == event.id and body.type == "message.delivered"
    assert body.account_id == "acc_demo" and body.timestamp.endswith("Z")
    assert body.data["client_reference"] == "order-1234"
    assert body.data["to"] == request.recipient and body.data["type"] == "template"
    assert body.data["pricing"]["category"] == "utility"
    accepted_body = json.loads(accepted.body)
    assert accepted_body["type"] == "message.accepted"
    assert accepted_body["data"]["message_id"] == request.message_id


def test_failed_carries_metas_error_and_rejected_our_reason() -> None:
    failed = core.status_event(
        STATUS_CHANGED.decode(msgspec.json.encode(STATUS_CHANGED.examples[2])), None
    )
    rejected = core.status_event(
        STATUS_CHANGED.decode(msgspec.json.encode(STATUS_CHANGED.examples[3])), None
    )
    assert failed is not None and rejected is not None
    assert json.loads(failed.body)["data"]["error"]["code"] == 131047
    assert json.loads(rejected.body)["data"]["reason"] == "insufficient_credit"


def test_an_endpoint_receives_its_types_of_its_account_in_its_format_while_enabled() -> None:
    event = core.status_event(status("delivered"), None)
    assert event is not None
    health = core.Health()
    assert core.wants(endpoint(), health, event, NOW)
    assert core.wants(endpoint(events=("*",)), health, event, NOW)
    assert core.wants(endpoint(events=("message.delivered",)), health, event, NOW)
    assert not core.wants(endpoint(events=("message.read", "balance.*")), health, event, NOW)
    assert not core.wants(endpoint(account_id="acc_other"), health, event, NOW)
    assert not core.wants(endpoint(format="meta"), health, event, NOW)
    assert not core.wants(endpoint(enabled=False), health, event, NOW)
    # created after the event happened: no history
    assert not core.wants(endpoint(created_at=NOW + 1), health, event, NOW)
    disabled = core.Health(disabled_at=NOW - 5_000, disabled_reason="gone")
    assert not core.wants(endpoint(), disabled, event, NOW)
    # the client enabled it again after notify disabled it
    assert core.wants(endpoint(enabled_at=NOW - 1_000), disabled, event, NOW)


def test_every_live_secret_signs_and_the_standard_webhooks_library_verifies_each() -> None:
    event = core.status_event(status("read"), None)
    assert event is not None
    now_s = int(datetime.now(UTC).timestamp())
    headers = core.delivery_headers(event.id, event.body, [NEW_SECRET, SECRET], "standard", now_s)
    assert headers["webhook-id"] == event.id
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, NEW_SECRET):
        assert Webhook(secret).verify(event.body, headers)["id"] == event.id
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(event.body, headers)
    tampered = event.body.replace(b"read", b"sent")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    # signed at enqueue time and sent later: the library's 5-minute window refuses it
    old = core.delivery_headers(event.id, event.body, [SECRET], "standard", now_s - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(event.body, old)


def test_meta_endpoints_also_get_metas_signature_under_the_newest_secret() -> None:
    from pywa.utils import webhook_updates_validator

    body = b'{"object":"whatsapp_business_account","entry":[]}'
    headers = core.delivery_headers("evt_1", body, [NEW_SECRET, SECRET], "meta", 1_764_000_000)
    assert webhook_updates_validator(NEW_SECRET, body, headers["X-Hub-Signature-256"])
    assert not webhook_updates_validator(SECRET, body, headers["X-Hub-Signature-256"])
    assert "X-Hub-Signature-256" not in core.delivery_headers(
        "evt_1", body, [SECRET], "standard", 1_764_000_000
    )


def test_a_rotated_out_secret_signs_until_it_expires() -> None:
    ep = endpoint(
        secrets=(
            core.SecretEntry("old", NOW - 50_000, NOW + 1_000),
            core.SecretEntry("new", NOW - 10, None),
        )
    )
    assert [s.encrypted for s in core.live_secrets(ep, NOW)] == ["new", "old"]
    assert [s.encrypted for s in core.live_secrets(ep, NOW + 1_000)] == ["new"]


def test_the_schedule_retries_for_more_than_three_days_with_bounded_jitter() -> None:
    schedule = core.DEFAULT_RETRY_SCHEDULE_SECONDS
    assert sum(schedule) > 3 * 86_400
    lows = [core.retry_delay(n, schedule, 0.2, 0.0) for n in range(1, len(schedule) + 1)]
    highs = [core.retry_delay(n, schedule, 0.2, 0.999999) for n in range(1, len(schedule) + 1)]
    for base, low, high in zip(schedule, lows, highs, strict=True):
        assert low is not None and high is not None
        assert base * 0.8 == pytest.approx(low) and high == pytest.approx(base * 1.2, rel=1e-5)
    assert core.retry_delay(len(schedule) + 1, schedule, 0.2, 0.5) is None


@pytest.mark.parametrize(
    ("status_code", "outcome", "state"),
    [
        (200, "delivered", "delivered"),
        (204, "delivered", "delivered"),
        (301, "http_error", "pending"),
        (400, "http_error", "pending"),
        (500, "http_error", "pending"),
        (410, "gone", "failed"),
        (429, "throttled", "pending"),
        (503, "throttled", "pending"),
    ],
)
def test_what_an_answer_means(status_code: int, outcome: str, state: str) -> None:
    update = core.after_attempt(1, core.AttemptResult(status_code, 0.1), NOW, (5.0,), 0.0, 0.5)
    assert (update.outcome, update.state) == (outcome, state)


def test_retry_after_is_honoured_as_seconds_or_a_date_and_never_sooner_than_scheduled() -> None:
    seconds = core.after_attempt(
        1, core.AttemptResult(429, 0.1, retry_after="120"), NOW, (5.0,), 0.0, 0.5
    )
    assert seconds.next_at == NOW + 120_000
    date = datetime.fromtimestamp(NOW / 1000 + 600, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    dated = core.after_attempt(
        1, core.AttemptResult(503, 0.1, retry_after=date), NOW, (5.0,), 0.0, 0.5
    )
    assert dated.next_at == NOW + 600_000
    short = core.after_attempt(
        1, core.AttemptResult(429, 0.1, retry_after="1"), NOW, (30.0,), 0.0, 0.5
    )
    assert short.next_at == NOW + 30_000
    no_answer = core.after_attempt(
        1, core.AttemptResult(None, 10.0, "timeout"), NOW, (5.0,), 0.0, 0.5
    )
    assert (no_answer.outcome, no_answer.next_at) == ("timeout", NOW + 5_000)


def test_an_endpoint_is_disabled_by_410_or_by_three_days_without_a_success() -> None:
    ep, day = endpoint(), 86_400_000
    health, change = core.health_after(core.Health(), ep, "gone", NOW, 3 * day)
    assert (change, health.disabled_reason) == ("disabled", "gone")
    health, change = core.health_after(core.Health(), ep, "timeout", NOW, 3 * day)
    assert (change, health.failing_since) == ("failing", NOW)
    health, change = core.health_after(health, ep, "http_error", NOW + 2 * day, 3 * day)
    assert change is None and health.disabled_at is None
    health, change = core.health_after(health, ep, "http_error", NOW + 3 * day, 3 * day)
    assert (change, health.disabled_reason) == ("disabled", "failing")
    # re-enabled by the client: the clock starts again
    again = endpoint(enabled_at=NOW + 3 * day + 1)
    health, change = core.health_after(health, again, "timeout", NOW + 3 * day + 5, 3 * day)
    assert change == "failing" and health.failing_since == NOW + 3 * day + 5
    health, change = core.health_after(health, again, "delivered", NOW + 3 * day + 9, 3 * day)
    assert change == "recovered" and health.failing_since is None


def test_a_test_event_for_a_meta_endpoint_is_meta_shaped() -> None:
    request = NotifyRequested(
        event_id="nreq_1", account_id="acc_demo", endpoint_id="we_1", kind="test", requested_at=NOW
    )
    standard = core.endpoint_test_event(request, "standard")
    meta = core.endpoint_test_event(request, "meta")
    assert json.loads(standard.body)["type"] == "endpoint.test"
    assert json.loads(meta.body)["object"] == "whatsapp_business_account"
    assert standard.id == meta.id == core.endpoint_test_event(request, "standard").id


def test_a_low_balance_event_counts_crossings_by_billings_event_id() -> None:
    alert = LOW_BALANCE_ALERTED.decode(msgspec.json.encode(LOW_BALANCE_ALERTED.examples[0]))
    event = core.low_balance_event(alert, "USD")
    data = json.loads(event.body)["data"]
    assert (data["available"], data["threshold"], data["currency"]) == (90_000, 1_000_000, "USD")
    assert event.id == core.low_balance_event(alert, "USD").id
