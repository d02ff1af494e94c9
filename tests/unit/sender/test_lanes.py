"""The lane decisions (lanes.py) and the fetch bookkeeping (core.plan_fetch,
core.partition_backlogs): pure functions, so plain values in and out, no clock, no I/O."""

import dataclasses
import math

import pytest

from services.sender.core import (
    Backlog,
    ErrorClass,
    FetchPolicy,
    RetryLimits,
    ThrottleScope,
    partition_backlogs,
    plan_fetch,
)
from services.sender.lanes import (
    IDLE,
    STATUS_HELD,
    TOKEN_REJECTED,
    TOKEN_UNREADABLE,
    Admission,
    GateKind,
    GateStep,
    HoldChange,
    PutBack,
    Tries,
    admission,
    after_accepted,
    dispatcher_wake_at,
    due_chores,
    gate_step,
    hold_change_on_refresh,
    hold_ended,
    is_new_hold,
    is_parked,
    may_forget_sending_record,
    next_take,
    plan_refusal,
    plan_unreachable,
    put_back,
    refusal_hold_reason,
    sending_record_wait,
    started_after_bug,
    token_lost,
)

LIMITS = RetryLimits(transient_max_attempts=3, hold_seconds=300.0)

# --- admission ------------------------------------------------------------------------------


def test_a_message_past_its_validity_expires_at_admission_even_without_a_number() -> None:
    assert admission(expires_at_ms=1_000, now_ms=1_000, configured=False) is Admission.EXPIRE
    assert (
        admission(expires_at_ms=1_001, now_ms=1_000, configured=False) is Admission.NOT_CONFIGURED
    )
    assert admission(expires_at_ms=1_001, now_ms=1_000, configured=True) is Admission.QUEUE


def test_a_message_queued_beyond_the_backlog_lead_is_parked() -> None:
    assert not is_parked(12.0, now=10.0, backlog_seconds=2.0)
    assert is_parked(12.001, now=10.0, backlog_seconds=2.0)


# --- the dispatcher -------------------------------------------------------------------------


def take(
    *,
    held: bool = False,
    blocked_until: float = 0.0,
    unanswered: int = 0,
    all_unanswered: int = 0,
    next_ready_at: float | None = 5.0,
) -> float | None:
    """next_take at now = 5.0, a number cap of 10 and a global cap of 100."""
    return next_take(
        held=held,
        blocked_until=blocked_until,
        unanswered=unanswered,
        cap=10,
        all_unanswered=all_unanswered,
        max_in_flight=100,
        next_ready_at=next_ready_at,
        now=5.0,
    )


def test_the_dispatcher_takes_a_message_whose_time_has_come() -> None:
    assert take() is None


def test_the_dispatcher_waits_for_the_next_message_time() -> None:
    assert take(next_ready_at=7.5) == 7.5
    assert take(next_ready_at=None) == IDLE


def test_a_waba_or_account_hold_idles_the_dispatcher_whatever_else_is_due() -> None:
    assert take(held=True, blocked_until=9.0) == IDLE


def test_a_paused_or_held_number_waits_until_its_block_ends() -> None:
    assert take(blocked_until=9.0) == 9.0
    assert take(blocked_until=math.inf) == math.inf


def test_sends_in_flight_at_the_number_cap_or_the_global_cap_idle_the_dispatcher() -> None:
    assert take(unanswered=10) == IDLE
    assert take(all_unanswered=100) == IDLE
    assert take(unanswered=9, all_unanswered=99) is None


def test_the_dispatcher_wakes_for_the_sweep_only_with_a_queue_and_for_the_refresh_on_hold() -> None:
    assert (
        dispatcher_wake_at(IDLE, queued=False, sweep_due=3.0, on_hold=False, refresh_due=4.0)
        == IDLE
    )
    assert (
        dispatcher_wake_at(IDLE, queued=True, sweep_due=3.0, on_hold=False, refresh_due=4.0) == 3.0
    )
    assert (
        dispatcher_wake_at(IDLE, queued=False, sweep_due=3.0, on_hold=True, refresh_due=4.0) == 4.0
    )
    assert dispatcher_wake_at(2.0, queued=True, sweep_due=3.0, on_hold=True, refresh_due=4.0) == 2.0


def test_chores_are_due_at_their_time_and_only_when_they_matter() -> None:
    due = {"sweep_due": 1.0, "prune_due": 60.0, "refresh_due": 30.0}
    assert due_chores(now=0.5, queued=True, on_hold=True, **due).sweep_expired is False
    chores = due_chores(now=1.0, queued=True, on_hold=False, **due)
    assert (chores.sweep_expired, chores.prune_pairs, chores.refresh_number) == (True, False, False)
    idle = due_chores(now=100.0, queued=False, on_hold=False, **due)
    assert (idle.sweep_expired, idle.prune_pairs, idle.refresh_number) == (False, True, False)
    assert due_chores(now=30.0, queued=False, on_hold=True, **due).refresh_number is True


# --- holds and releases ---------------------------------------------------------------------


def refresh(
    *,
    hold_reason: str | None = None,
    status: str = "active",
    token_fingerprint: str = "f1",
    held_token: str | None = None,
    has_token: bool = True,
) -> HoldChange:
    return hold_change_on_refresh(
        hold_reason=hold_reason,
        status=status,
        token_fingerprint=token_fingerprint,
        held_token=held_token,
        has_token=has_token,
    )


def test_a_number_whose_status_is_not_active_is_held_once() -> None:
    assert refresh(status="banned") is HoldChange.HOLD
    assert refresh(status="banned", hold_reason=STATUS_HELD) is HoldChange.NONE
    # A token hold on a number that also stops being active becomes a status hold.
    assert refresh(status="banned", hold_reason=TOKEN_REJECTED) is HoldChange.HOLD


def test_a_status_hold_ends_when_the_number_is_active_again() -> None:
    assert refresh(hold_reason=STATUS_HELD) is HoldChange.RELEASE


@pytest.mark.parametrize("reason", [TOKEN_REJECTED, TOKEN_UNREADABLE])
def test_a_token_hold_ends_only_when_a_readable_new_token_replaced_the_held_one(
    reason: str,
) -> None:
    assert refresh(hold_reason=reason, held_token="f1") is HoldChange.NONE
    assert (
        refresh(hold_reason=reason, held_token="f1", token_fingerprint="f2", has_token=False)
        is HoldChange.NONE
    )
    assert (
        refresh(hold_reason=reason, held_token="f1", token_fingerprint="f2") is HoldChange.RELEASE
    )


def test_a_period_hold_is_not_ended_by_a_refresh() -> None:
    assert refresh(hold_reason="meta_131057", held_token="f0") is HoldChange.NONE


def test_a_hold_is_news_unless_the_number_is_already_held() -> None:
    assert is_new_hold(None, held_now=False)
    assert is_new_hold("meta_368", held_now=False)  # the earlier hold ran out
    assert not is_new_hold("meta_368", held_now=True)


def test_a_hold_ends_once_its_time_is_over() -> None:
    assert hold_ended("meta_368", held_now=False)
    assert not hold_ended("meta_368", held_now=True)
    assert not hold_ended(None, held_now=False)


def test_a_refusal_holds_until_a_new_token_or_for_a_period_named_by_its_code() -> None:
    assert refusal_hold_reason(190, None) == TOKEN_REJECTED
    assert refusal_hold_reason(131057, 45.0) == "meta_131057"


# --- one send -------------------------------------------------------------------------------


def test_a_sending_record_waits_until_the_number_token_is_within_the_lead() -> None:
    def wait(token_at: float, blocked_until: float = 0.0, held: bool = False) -> float | None:
        return sending_record_wait(
            number_token_at=token_at,
            blocked_until=blocked_until,
            lead_seconds=0.25,
            held=held,
            now=10.0,
        )

    assert wait(10.2) is None
    assert wait(12.0) == 11.75
    assert wait(10.0, blocked_until=15.0) == 14.75
    # A held number's send does not wait here: the gate puts it back.
    assert wait(12.0, held=True) is None


def gate(
    *,
    aborted: bool = False,
    held: bool = False,
    blocked_until: float = 0.0,
    now_ms: int = 10_000,
    has_token: bool = True,
) -> GateStep:
    """gate_step at now = 10.0 for a message valid until 50_000 ms."""
    return gate_step(
        aborted=aborted,
        held=held,
        blocked_until=blocked_until,
        now=10.0,
        expires_at_ms=50_000,
        now_ms=now_ms,
        has_token=has_token,
    )


def test_the_gate_reserves_a_token_for_a_clear_number() -> None:
    assert gate() == GateStep(GateKind.RESERVE)


def test_the_gate_puts_back_a_message_of_a_revoked_partition_or_a_held_number() -> None:
    assert gate(aborted=True) == GateStep(GateKind.PUT_BACK)
    assert gate(held=True, blocked_until=math.inf) == GateStep(GateKind.PUT_BACK)


def test_the_gate_waits_out_a_pause_before_looking_at_the_expiry() -> None:
    assert gate(blocked_until=12.0, now_ms=60_000) == GateStep(GateKind.WAIT, 12.0)
    assert gate(now_ms=60_000) == GateStep(GateKind.EXPIRE)
    assert gate(now_ms=60_000, has_token=False) == GateStep(GateKind.EXPIRE)


def test_the_gate_holds_a_number_whose_token_cannot_be_read() -> None:
    assert gate(has_token=False) == GateStep(GateKind.HOLD_UNREADABLE_TOKEN)


def test_a_reserved_token_is_lost_if_the_number_was_blocked_or_the_partition_moved() -> None:
    assert not token_lost(aborted=False, blocked_until=10.0, now=10.0)
    assert token_lost(aborted=False, blocked_until=10.5, now=10.0)
    assert token_lost(aborted=True, blocked_until=0.0, now=10.0)


# --- putting back ---------------------------------------------------------------------------


def test_a_message_put_back_forgets_its_sending_record_only_if_no_request_left() -> None:
    assert put_back(started=True, calls=0, aborted=False) == PutBack(True, drop=False)
    assert put_back(started=True, calls=1, aborted=False) == PutBack(False, drop=False)
    assert put_back(started=False, calls=0, aborted=False) == PutBack(False, drop=False)
    assert put_back(started=True, calls=0, aborted=True) == PutBack(True, drop=True)
    assert may_forget_sending_record(started=True, calls=0)
    assert not may_forget_sending_record(started=True, calls=2)


def test_after_a_bug_a_message_that_may_have_reached_meta_goes_through_start_send_again() -> None:
    assert started_after_bug(started=True, calls=1) is False
    assert started_after_bug(started=True, calls=0) is True
    assert started_after_bug(started=False, calls=0) is False


# --- refusal bookkeeping --------------------------------------------------------------------


def test_a_number_throttle_does_not_count_the_call_and_pauses_the_number() -> None:
    plan = plan_refusal(130429, Tries(calls=1, number_throttles=1), LIMITS)
    assert plan.tries == Tries(calls=0, number_throttles=2)
    assert plan.throttled is ThrottleScope.NUMBER
    assert plan.reaction.pause_number_for == plan.reaction.retry_in == 2.0  # 1 s, doubled
    assert (plan.hold_reason, plan.pay_pair_again, plan.record_attempt) == (None, False, False)


def test_a_pair_throttle_counts_against_the_message_and_drains_its_recipient() -> None:
    plan = plan_refusal(131056, Tries(calls=1, pair_throttles=1, number_throttles=3), LIMITS)
    assert plan.tries == Tries(calls=0, pair_throttles=2, number_throttles=3)
    assert plan.throttled is ThrottleScope.PAIR
    assert plan.reaction.drain_pair and plan.reaction.retry_in == 4.0
    assert plan.reaction.pause_number_for == 0.0


def test_a_transient_error_keeps_the_call_pays_the_pair_again_and_is_recorded() -> None:
    plan = plan_refusal(131000, Tries(calls=1), LIMITS)
    assert plan.tries == Tries(calls=1, transient_failures=1)
    assert plan.reaction.error_class is ErrorClass.TRANSIENT and not plan.reaction.fail
    assert plan.pay_pair_again and plan.record_attempt and plan.throttled is None


def test_transient_errors_past_the_cap_fail_the_message_without_more_bookkeeping() -> None:
    plan = plan_refusal(131000, Tries(calls=3, transient_failures=2), LIMITS)
    assert plan.reaction.fail and plan.tries.transient_failures == 3
    assert (plan.pay_pair_again, plan.record_attempt, plan.hold_reason) == (False, False, None)


@pytest.mark.parametrize(
    ("code", "reason", "hold_for"),
    [(190, TOKEN_REJECTED, None), (368, "meta_368", 300.0), (131057, "meta_131057", 45.0)],
)
def test_a_hold_refusal_does_not_count_the_call_and_holds_the_number(
    code: int, reason: str, hold_for: float | None
) -> None:
    plan = plan_refusal(code, Tries(calls=1), LIMITS)
    assert plan.tries == Tries(calls=0)
    assert plan.hold_reason == reason and plan.reaction.hold_number_for == hold_for


def test_a_final_refusal_fails_the_message_and_keeps_its_call() -> None:
    plan = plan_refusal(131026, Tries(calls=1, number_throttles=2), LIMITS)
    assert plan.reaction.fail and plan.tries == Tries(calls=1, number_throttles=2)


def test_an_acceptance_ends_the_numbers_streaks_and_keeps_the_message_counts() -> None:
    tries = Tries(
        calls=2, transient_failures=1, pair_throttles=1, number_throttles=4, unreachable=3
    )
    assert after_accepted(tries) == Tries(calls=2, transient_failures=1, pair_throttles=1)


def test_an_unreachable_meta_does_not_count_the_call_and_backs_off_more_each_time() -> None:
    tries, first = plan_unreachable(Tries(calls=1), LIMITS)
    assert tries == Tries(calls=0, unreachable=1) and first == 0.5
    tries, second = plan_unreachable(dataclasses.replace(tries, calls=1), LIMITS)
    assert tries == Tries(calls=0, unreachable=2) and second == 1.0


# --- fetching -------------------------------------------------------------------------------

POLICY = FetchPolicy(lead_seconds=2.0, floor=10, max_held=100)


def test_plan_fetch_holds_back_the_partition_behind_and_polls_the_one_caught_up() -> None:
    backlogs = {
        "behind": Backlog(held=30, drain_per_second=2.0),
        "caught_up": Backlog(held=2, drain_per_second=2.0),
    }
    plan = plan_fetch({"behind", "caught_up", "empty"}, backlogs, {"caught_up", "revoked"}, POLICY)
    assert plan.held_back == {"behind"} and plan.poll == {"caught_up", "empty"}
    assert plan.held == 32 and not plan.crowded


def test_plan_fetch_keeps_a_partition_held_back_until_it_is_down_to_half_its_budget() -> None:
    # budget: max(floor 10, 2 s at 2/s) = 10; held back from 10 ready, polled again at 5
    assert plan_fetch({"p"}, {"p": Backlog(held=6)}, {"p"}, POLICY).held_back == {"p"}
    assert plan_fetch({"p"}, {"p": Backlog(held=6)}, set(), POLICY).held_back == set()
    assert plan_fetch({"p"}, {"p": Backlog(held=5)}, {"p"}, POLICY).poll == {"p"}


def test_plan_fetch_forgets_what_is_no_longer_assigned() -> None:
    plan = plan_fetch(set(), {"gone": Backlog(held=30)}, {"gone"}, POLICY)
    assert plan.held_back == plan.poll == frozenset() and plan.held == 0


def test_plan_fetch_reports_crowded_memory() -> None:
    backlogs = {"a": Backlog(held=60, parked=60), "b": Backlog(held=40, parked=40)}
    plan = plan_fetch({"a", "b"}, backlogs, set(), POLICY)
    assert plan.crowded and plan.held == 100
    assert plan.held_back == {"a"} and plan.poll == {"b"}


def test_partition_backlogs_sum_the_rates_of_the_numbers_that_may_send() -> None:
    backlogs = partition_backlogs(
        {"p0": 5, "p1": 3}, {"p0": 2}, [("p0", 80.0), ("p0", 20.0), ("p2", 1000.0)]
    )
    assert backlogs == {"p0": Backlog(5, 2, 100.0), "p1": Backlog(3, 0, 0.0)}
