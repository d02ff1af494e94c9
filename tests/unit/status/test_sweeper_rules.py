"""The sweeper's verdicts: stuck `unknown` sends fail, old parked statuses go, old messages are
anonymised."""

from __future__ import annotations

from services.status import core
from shared.messages import StatusChanged

NOW = 1_764_000_000_000


def test_cutoffs_follow_the_configured_timeouts() -> None:
    cutoffs = core.sweep_cutoffs(
        NOW, unknown_timeout_seconds=600, parked_retention_days=7, message_retention_days=30
    )
    assert cutoffs.unknown_before == NOW - 600_000
    assert cutoffs.parked_before == NOW - 7 * 86_400_000
    assert cutoffs.retained_before == NOW - 30 * 86_400_000


def test_a_stuck_unknown_send_is_failed_with_reason_outcome_unknown() -> None:
    event = core.outcome_unknown_failure(core.MessageRef("msg_1", "acc_1", "GB"), NOW)
    assert (event.status, event.reason, event.source, event.occurred_at) == (
        "failed",
        "outcome_unknown",
        "sender",
        NOW,
    )
    assert event.event_id == "msg_1:failed:outcome_unknown"  # the same on every sweep
    assert event.account_id == "acc_1"  # keyed like every status of the account


def test_the_failure_releases_credit_but_a_late_delivery_still_wins() -> None:
    failure = core.outcome_unknown_failure(core.MessageRef("msg_1", "acc_1"), NOW)
    failed = core.converge(core.MessageState(), failure)
    assert failed is not None
    assert failed.status == "failed" and failed.reason == "outcome_unknown"
    late_delivery = StatusChanged(
        event_id="wamid.1:delivered",
        message_id="msg_1",
        account_id="acc_1",
        status="delivered",
        occurred_at=NOW + 1,
        source="webhook",
        wamid="wamid.1",
    )
    delivered = core.converge(failed, late_delivery)
    assert delivered is not None and delivered.status == "delivered"


def test_anonymising_hashes_the_recipient_with_a_key_and_removes_content() -> None:
    update = core.anonymised_fields({"_id": "msg_1", "recipient": "+447911123456"}, b"k1", NOW)
    hashed = update["$set"]["recipient"]
    assert hashed.startswith("hmac-sha256:") and "447911123456" not in hashed
    assert hashed == core.recipient_hash("+447911123456", b"k1")
    assert hashed != core.recipient_hash("+447911123456", b"k2")
    assert update["$set"]["anonymised_at"] == NOW
    assert set(update["$unset"]) == {"content", "request"}


def test_an_already_hashed_recipient_is_not_hashed_again() -> None:
    hashed = core.recipient_hash("+447911123456", b"k1")
    update = core.anonymised_fields({"_id": "msg_1", "recipient": hashed}, b"k1", NOW)
    assert "recipient" not in update["$set"]
