"""guard's rules over sliding windows, on a fake clock: each rule fires past its threshold and
minimum within its window and not otherwise; windows slide (old evidence drops out); a release
starts afresh; replays are recognised; overrides apply; the state survives its document."""

from __future__ import annotations

import pytest

from services.guard import core
from services.guard.core import Account, Rule, Rules
from shared.clock import FakeClock
from shared.messages import MetaError, SendRequested, StatusChanged

ACC = "acc_1"
RULES = Rules(
    failure_rate=Rule(0.5, 900, 10),
    meta_spam=Rule(2, 3600),
    quality_red=Rule(1, 86_400),
    volume_spike=Rule(5.0, 3600, 100),
    new_recipients=Rule(0.9, 3600, 20),
)


def send(clock: FakeClock, n: int = 0) -> SendRequested:
    now = clock.now_ms()
    return SendRequested(
        event_id=f"m{now}{n}",
        message_id=f"m{now}{n}",
        account_id=ACC,
        portfolio_id="p",
        waba_id="w",
        phone_number_id="1",
        recipient=f"+4479111{n:05d}",
        recipient_region="GB",
        message_type="text",
        content={"body": "x"},
        category="service",
        accepted_at=now,
        expires_at=now + 86_400_000,
    )


def status(clock: FakeClock, kind: str, code: int | None = None) -> StatusChanged:
    now = clock.now_ms()
    return StatusChanged(
        event_id=f"s{now}{kind}",
        message_id="m",
        account_id=ACC,
        status=kind,  # type: ignore[arg-type]
        occurred_at=now,
        source="webhook",
        error=MetaError(code=code) if code is not None else None,
    )


def finish(
    account: Account, clock: FakeClock, delivered: int, failed: int, code: int = 131026
) -> None:
    for _ in range(delivered):
        account.status(status(clock, "delivered"))
    for _ in range(failed):
        account.status(status(clock, "failed", code))


def fired(account: Account, clock: FakeClock, rules: Rules = RULES) -> list[str]:
    return [f.rule for f in core.evaluate(account, rules, clock.now_ms())]


def test_a_failure_rate_at_its_threshold_with_enough_finished_holds() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=5, failed=4)
    assert fired(account, clock) == []  # 9 finished: below the minimum of 10
    finish(account, clock, delivered=0, failed=1)
    [hold] = core.evaluate(account, RULES, clock.now_ms())
    assert hold.rule == "failure_rate" and hold.observed["rate"] == 0.5
    assert hold.observed["finished"] == 10 and "50% of the 10 messages" in hold.reason
    assert hold.at == clock.now_ms() and hold.event_id == f"hold:{ACC}:failure_rate:{hold.at}"


def test_a_low_failure_rate_does_not_hold_and_our_own_failures_do_not_count() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=60, failed=20)
    for _ in range(50):  # expired, rejected, failed without Meta's error: not counted
        account.status(status(clock, "expired"))
        account.status(status(clock, "rejected"))
        account.status(status(clock, "failed"))
    assert account.count("failed", clock.now_ms(), 900_000) == 20
    assert fired(account, clock) == []


def test_the_window_slides_failures_older_than_it_drop_out() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=0, failed=8)
    clock.advance(16 * 60)  # past the 15-minute window
    finish(account, clock, delivered=6, failed=2)
    assert account.count("failed", account.latest_at, 900_000) == 2
    assert fired(account, clock) == []
    clock.advance(60)
    finish(account, clock, delivered=0, failed=6)  # 8 of 14 in the window now
    assert fired(account, clock) == ["failure_rate"]


def test_metas_spam_rate_limit_holds_at_its_count() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=100, failed=1, code=core.SPAM_RATE_LIMIT)
    assert fired(account, clock) == []
    clock.advance(30 * 60)
    finish(account, clock, delivered=0, failed=1, code=core.SPAM_RATE_LIMIT)
    [hold] = core.evaluate(account, RULES, clock.now_ms())
    assert hold.rule == "meta_spam" and hold.observed["spam_refusals"] == 2
    clock.advance(61 * 60)  # both now older than the hour
    fresh = Account(ACC)
    fresh.status(status(clock, "failed", core.SPAM_RATE_LIMIT))
    assert fired(fresh, clock) == []


def test_a_volume_spike_against_the_accounts_own_seven_day_baseline() -> None:
    clock, account = FakeClock(), Account(ACC)
    for _hour in range(3 * 24):  # three days at 30 an hour
        for i in range(30):
            account.sent(send(clock, i), new_recipient=False)
        clock.advance(3600)
    for i in range(140):  # under 5x the hourly 30
        account.sent(send(clock, i), new_recipient=False)
    assert fired(account, clock) == []
    for i in range(20):  # 160 in the hour: over 5x 30 and over the minimum of 100
        account.sent(send(clock, i), new_recipient=False)
    [hold] = core.evaluate(account, RULES, clock.now_ms())
    assert hold.rule == "volume_spike" and hold.observed["sent"] == 160
    assert hold.observed["expected"] == pytest.approx(30, abs=1)
    assert "usual 30 (its average over the 71 hours before" in hold.reason


def test_a_new_account_has_no_baseline_to_spike_against() -> None:
    clock, account = FakeClock(), Account(ACC)
    for i in range(1000):
        account.sent(send(clock, i), new_recipient=False)
    assert fired(account, clock) == []


def test_a_share_of_never_seen_recipients_at_its_threshold_holds() -> None:
    clock, account = FakeClock(), Account(ACC)
    for i in range(18):
        account.sent(send(clock, i), new_recipient=True)
    assert fired(account, clock) == []  # 18 sends: under the minimum of 20
    account.sent(send(clock, 18), new_recipient=False)
    account.sent(send(clock, 19), new_recipient=True)
    [hold] = core.evaluate(account, RULES, clock.now_ms())
    assert hold.rule == "new_recipients" and hold.observed["share"] == 0.95
    for i in range(20, 40):  # now half of 40: under the share
        account.sent(send(clock, i), new_recipient=False)
    assert fired(account, clock) == []


def test_a_fired_rule_fires_once_until_a_release_which_starts_the_windows_afresh() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=0, failed=10)
    [hold] = core.evaluate(account, RULES, clock.now_ms())
    account.fired[hold.rule] = hold.at
    finish(account, clock, delivered=0, failed=10)
    assert fired(account, clock) == []
    account.release(clock.now_ms() + 5)
    assert account.count("failed", account.latest_at, 900_000) == 0
    finish(account, clock, delivered=0, failed=10)  # timed before the release's clock
    [again] = core.evaluate(account, RULES, clock.now_ms())
    assert again.at > account.released_at  # so the new hold is not taken for a released one


def test_old_evidence_read_from_history_does_not_hold() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=0, failed=20)
    assert core.evaluate(account, RULES, clock.now_ms() + 16 * 60_000) == []


def test_a_record_applied_before_is_recognised() -> None:
    account = Account(ACC)
    assert not account.seen("t:0", 5)
    account.mark("t:0", 5)
    assert account.seen("t:0", 5) and account.seen("t:0", 4) and not account.seen("t:0", 6)


def test_quality_red_counts_recently_flagged_numbers_after_the_last_release() -> None:
    clock = FakeClock()
    now = clock.now_ms()
    rule = Rule(2, 86_400)
    assert core.quality_red(ACC, [now - 1000], rule, 0, now) is None
    hold = core.quality_red(ACC, [now - 1000, now - 2000], rule, 0, now)
    assert hold is not None and hold.at == now - 1000 and hold.observed["flagged_numbers"] == 2
    assert core.quality_red(ACC, [now - 1000, now - 90_000_000], rule, 0, now) is None
    assert core.quality_red(ACC, [now - 1000, now - 2000], rule, now - 1500, now) is None


def test_per_account_overrides_replace_only_what_they_name() -> None:
    rules = RULES.with_overrides(
        {
            "failure_rate": {"threshold": 0.9, "minimum": 3},
            "nonsense": {"threshold": 1},
            "meta_spam": {"window_seconds": "x", "threshold": -1},
        }
    )
    assert rules.failure_rate == Rule(0.9, 900, 3)
    assert rules.meta_spam == RULES.meta_spam
    assert RULES.with_overrides(None) is RULES


def test_the_state_survives_its_document() -> None:
    clock, account = FakeClock(), Account(ACC)
    finish(account, clock, delivered=3, failed=2, code=core.SPAM_RATE_LIMIT)
    account.sent(send(clock), new_recipient=True)
    account.mark("p.messages.send-requested.v1:2", 41)
    account.fired["meta_spam"] = 5
    again = core.account_from_doc(ACC, core.state_doc(account, clock.now_ms()))
    assert again == account
    assert core.account_from_doc(ACC, None) == Account(ACC)


def test_old_buckets_are_pruned_but_the_baseline_keeps_seven_days() -> None:
    clock, account = FakeClock(), Account(ACC)
    account.sent(send(clock), new_recipient=True)
    clock.advance(3 * 3600)
    account.sent(send(clock), new_recipient=True)
    account.prune(RULES.longest_minute_window_ms)
    assert len(account.minutes["sent"]) == 1 and len(account.hours) == 2
    clock.advance(8 * 86_400)
    account.sent(send(clock), new_recipient=True)
    account.prune(RULES.longest_minute_window_ms)
    assert len(account.hours) == 1
