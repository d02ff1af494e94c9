"""The sender's pure core: buckets, pacing, tier window, error table, expiry, commit tracking."""

import math

import pytest

from services.sender.core import (
    ERROR_TABLE,
    META_PAIR_BURST,
    PAIR_BURST,
    PAIR_TAKE_OVER_TOKENS,
    ErrorClass,
    HoldUntil,
    NumberPacer,
    RetryLimits,
    SendQueue,
    ThrottleScope,
    TierWindow,
    TokenBucket,
    classify,
    earliest_send_time,
    is_business_initiated,
    is_expired,
    monotonic_deadline,
    number_burst,
    react_to_error,
    tier_limit,
    unreachable_backoff,
    warm_tokens,
)

LONG_AGO = -10_000.0  # a take-over far in the past: buckets start full

# --- token bucket -------------------------------------------------------------------------------


def test_a_full_bucket_grants_its_burst_at_once_then_paces_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    times = [bucket.reserve(0.0) for _ in range(8)]
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.1, 0.2, 0.3])


def test_a_burst_is_paid_back_before_the_next_burst() -> None:
    bucket = TokenBucket(rate=1 / 6, capacity=40, now=0.0)
    for _ in range(40):
        assert bucket.reserve(0.0) == 0.0
    # The 41st waits one interval; after 20 more minutes nothing is owed and the burst is back.
    assert bucket.reserve(0.0) == pytest.approx(6.0)
    later = 6.0 + 40 * 6.0
    assert [bucket.reserve(later) for _ in range(40)] == [later] * 40
    assert bucket.reserve(later) == pytest.approx(later + 6.0)


def test_reservations_beyond_the_stock_queue_in_order_and_never_exceed_the_rate() -> None:
    bucket = TokenBucket(rate=80, capacity=40, now=0.0)
    times = [bucket.reserve(0.0) for _ in range(400)]
    assert times == sorted(times)
    # In any one-second window at most capacity + rate tokens are granted.
    for start in times:
        in_window = sum(1 for t in times if start <= t < start + 1.0)
        assert in_window <= 40 + 80


def test_available_at_peeks_without_taking_a_token() -> None:
    bucket = TokenBucket(rate=2, capacity=1, now=0.0)
    assert bucket.available_at(0.0) == 0.0
    assert bucket.available_at(0.0) == 0.0
    bucket.reserve(0.0)
    assert bucket.available_at(0.0) == pytest.approx(0.5)
    assert bucket.available_at(0.5) == pytest.approx(0.5)


def test_a_rate_upgrade_keeps_the_debt_and_pays_it_back_faster() -> None:
    bucket = TokenBucket(rate=80, capacity=40, now=0.0)
    for _ in range(120):
        bucket.reserve(0.0)  # 80 tokens of debt: the next would come at 1.0 s
    assert bucket.available_at(0.0) == pytest.approx(81 / 80)
    bucket.retune(rate=1000, capacity=500, now=0.5)  # half the debt was repaid at 80/s
    assert bucket.available_at(0.5) == pytest.approx(0.5 + 41 / 1000)
    assert bucket.capacity == 500


def test_a_rate_downgrade_clips_the_stock_to_the_new_capacity() -> None:
    bucket = TokenBucket(rate=80, capacity=40, now=0.0)
    bucket.retune(rate=20, capacity=10, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.reserve(0.0) == pytest.approx(1 / 20)


def test_drain_empties_the_stock_but_keeps_existing_debt() -> None:
    bucket = TokenBucket(rate=1, capacity=10, now=0.0)
    bucket.drain(0.0)
    assert bucket.available_at(0.0) == pytest.approx(1.0)
    for _ in range(3):
        bucket.reserve(0.0)
    bucket.drain(0.0)
    assert bucket.available_at(0.0) == pytest.approx(4.0)


def test_a_bucket_needs_a_positive_rate_and_room_for_a_token() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, capacity=0.5, now=0.0)


def test_number_burst_stays_below_metas_one_second_burst_but_allows_one_message() -> None:
    assert number_burst(80) == 40
    assert number_burst(20) == 10
    assert number_burst(1000) == 500
    assert number_burst(1) == 1
    assert PAIR_BURST < META_PAIR_BURST


def test_warm_tokens_count_the_take_over_allowance_and_what_refilled_since() -> None:
    assert warm_tokens(40, 1 / 6, since=0.0, now=0.0) == 0
    assert warm_tokens(40, 1 / 6, since=0.0, now=60.0) == pytest.approx(10)
    assert warm_tokens(40, 1 / 6, since=0.0, now=60.0, at_take_over=4) == pytest.approx(14)
    assert warm_tokens(40, 1 / 6, since=0.0, now=10_000.0, at_take_over=4) == 40


def _our_schedule(mps: int, recipients: list[str]) -> list[tuple[float, str]]:
    """Send times our pacer gives: pair token at admission, number token at dispatch."""
    pacer = NumberPacer(mps, now=0.0, origin=LONG_AGO)
    by_pair = sorted((pacer.reserve_pair(r, 0.0), i, r) for i, r in enumerate(recipients))
    return [(pacer.reserve_number(at), r) for at, _, r in by_pair]


def _meta_refusals(arrivals: list[tuple[float, str]], mps: int) -> tuple[int, int]:
    """Replay arrivals through Meta's buckets (1 s of mps; 45 per pair): (130429s, 131056s)."""
    number = TokenBucket(mps, mps, -1e6)
    pairs: dict[str, TokenBucket] = {}
    refused_number = refused_pair = 0
    for at, recipient in sorted(arrivals):
        if number.available_at(at) > at:
            refused_number += 1
            continue
        number.reserve(at)
        pair = pairs.setdefault(recipient, TokenBucket(1 / 6, META_PAIR_BURST, -1e6))
        if pair.available_at(at) > at:
            refused_pair += 1
            continue
        pair.reserve(at)
    return refused_number, refused_pair


def _worst_jitter(
    sends: list[tuple[float, str]], jitter: float, cuts: list[float]
) -> tuple[int, int]:
    """The adversarial network: everything sent before `cut` is late by `jitter`, everything
    after is on time (the arrivals bunch up). Worst case over the cuts."""
    worst = (0, 0)
    for cut in cuts:
        arrivals = [(t + jitter if t < cut else t, r) for t, r in sends]
        refusals = _meta_refusals(arrivals, 80)
        worst = (max(worst[0], refusals[0]), max(worst[1], refusals[1]))
    return worst


@pytest.mark.parametrize(("jitter", "refused"), [(0.0, False), (0.5, False), (0.7, True)])
def test_the_number_margin_absorbs_up_to_half_a_second_of_jitter(
    jitter: float, refused: bool
) -> None:
    sends = _our_schedule(80, [f"r{i}" for i in range(800)])
    number_refusals, _ = _worst_jitter(sends, jitter, [c / 8 for c in range(1, 80)])
    assert (number_refusals > 0) is refused


@pytest.mark.parametrize(("jitter", "refused"), [(0.0, False), (29.0, False), (40.0, True)])
def test_the_pair_margin_absorbs_up_to_thirty_seconds_of_jitter(
    jitter: float, refused: bool
) -> None:
    sends = _our_schedule(80, ["hot"] * 120 + [f"r{i}" for i in range(100)])
    _, pair_refusals = _worst_jitter(sends, jitter, [float(c) for c in range(1, 600, 3)])
    assert (pair_refusals > 0) is refused


def _fired(
    sends: list[tuple[float, str]], mps: int, stall_from: float, stall_s: float
) -> list[tuple[float, str]]:
    """When sends really leave if our event loop stalls from `stall_from` for `stall_s` (every
    send due in the stall wakes at its end) and each one passes `NumberPacer.fire` first."""
    import heapq

    pacer = NumberPacer(mps, now=0.0, origin=LONG_AGO)
    stall_end = stall_from + stall_s
    waking = [
        (stall_end if stall_from <= t < stall_end else t, i, r) for i, (t, r) in enumerate(sends)
    ]
    heapq.heapify(waking)
    fired = []
    while waking:
        at, i, recipient = heapq.heappop(waking)
        allowed = pacer.fire(at)
        if allowed <= at:
            fired.append((at, recipient))
        else:
            heapq.heappush(waking, (allowed, i, recipient))
    return fired


@pytest.mark.parametrize(
    ("stall_s", "reservations_alone_refused"), [(0.7, False), (2.0, True), (5.0, True)]
)
def test_sends_woken_together_after_a_stall_still_leave_within_metas_burst(
    stall_s: float, reservations_alone_refused: bool
) -> None:
    sends = _our_schedule(80, [f"r{i}" for i in range(800)])
    stalled = [(1.0 + stall_s if 1.0 <= t < 1.0 + stall_s else t, r) for t, r in sends]
    assert (_meta_refusals(stalled, 80)[0] > 0) is reservations_alone_refused
    fired = _fired(sends, 80, 1.0, stall_s)
    assert len(fired) == len(sends)
    assert _meta_refusals(fired, 80) == (0, 0)


def test_fire_takes_a_token_in_stock_and_only_tells_when_otherwise() -> None:
    bucket = TokenBucket(rate=10, capacity=1, now=0.0)
    assert bucket.take_if_available(0.0) == 0.0
    assert bucket.take_if_available(0.0) == pytest.approx(0.1)
    assert bucket.take_if_available(0.05) == pytest.approx(0.1)  # nothing was taken meanwhile
    assert bucket.take_if_available(0.1) == pytest.approx(0.1)


def test_traffic_taken_by_force_runs_into_debt_at_most_as_deep_as_allowed() -> None:
    bucket = TokenBucket(rate=20, capacity=10, now=0.0)
    for _ in range(40):
        bucket.force_take(0.0, max_debt=20)
    assert bucket.tokens == pytest.approx(-20)
    assert bucket.available_at(0.0) == pytest.approx(21 / 20)
    ahead = TokenBucket(rate=20, capacity=10, now=0.0)
    for _ in range(50):
        ahead.reserve(0.0)  # a backlog reserved ahead: -40
    ahead.force_take(0.0, max_debt=20)
    assert ahead.tokens == pytest.approx(-40)  # a deeper debt is never lifted


def test_inbound_messages_hold_back_sends_as_metas_bucket_would() -> None:
    """A burst of users writing to a 20 mps number (Meta counts them against its throughput):
    the sends we make after hearing of them are not refused, and without counting them some
    would be."""

    def sends_after_inbound(count_them: bool) -> list[tuple[float, str]]:
        pacer = NumberPacer(20, now=0.0, origin=LONG_AGO)
        if count_them:
            for _ in range(40):
                pacer.count_inbound(0.0)
        fired, now = [], 0.0
        while len(fired) < 60:
            at = pacer.fire(now)
            if at <= now:
                fired.append((now, f"r{len(fired)}"))
            now = max(now, at) if at > now else now
        return fired

    def refused(sends: list[tuple[float, str]]) -> int:
        meta = TokenBucket(rate=20, capacity=20, now=0.0)  # Meta's: one second of the rate
        for _ in range(40):
            meta.tokens = max(meta.tokens - 1, -meta.capacity)  # inbound, never refused
        return sum(1 for at, _ in sends if meta.take_if_available(at) > at)

    assert refused(sends_after_inbound(count_them=False)) > 0
    assert refused(sends_after_inbound(count_them=True)) == 0


# --- pacing of one number -----------------------------------------------------------------------


def test_a_hot_recipient_delays_only_its_own_messages() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    queue: SendQueue[str] = SendQueue()
    for i in range(60):
        queue.push(f"hot-{i}", pacer.reserve_pair("+100", 0.0))
    for i in range(200):
        queue.push(f"cold-{i}", pacer.reserve_pair(f"+2{i:03}", 0.0))
    ready_now = []
    while (popped := queue.pop_ready(0.0)) is not None:
        ready_now.append(popped[0])
    assert sum(1 for m in ready_now if m.startswith("cold")) == 200
    assert sum(1 for m in ready_now if m.startswith("hot")) == PAIR_BURST
    assert queue.next_ready_at() == pytest.approx(6.0)
    assert len(queue) == 60 - PAIR_BURST


def test_messages_to_one_recipient_keep_their_order() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    queue: SendQueue[int] = SendQueue()
    for i in range(50):
        queue.push(i, pacer.reserve_pair("+100", 0.0))
    order = []
    while (popped := queue.pop_ready(1_000.0)) is not None:
        order.append(popped[0])
    assert order == list(range(50))


def test_a_take_over_allows_only_what_meta_surely_has_left_after_the_previous_owner() -> None:
    pacer = NumberPacer(80, now=100.0, origin=100.0)
    times = [pacer.reserve_pair("+1", 100.0) for _ in range(6)]
    assert times[:PAIR_TAKE_OVER_TOKENS] == [100.0] * PAIR_TAKE_OVER_TOKENS
    assert times[PAIR_TAKE_OVER_TOKENS:] == pytest.approx([106.0, 112.0])
    assert pacer.reserve_number(100.0) == pytest.approx(100.0 + 1 / 80)
    # Long after the take-over, a new recipient starts with a full burst.
    assert pacer.reserve_pair("+2", 100.0 + 240.0) == 340.0
    assert pacer.tracked_pairs == 2
    pacer.take_over(now=500.0, origin=500.0)
    assert pacer.tracked_pairs == 0
    assert [pacer.reserve_pair("+2", 500.0) for _ in range(5)][-1] == pytest.approx(506.0)


def test_a_new_owner_never_makes_meta_refuse_after_the_previous_owner_drained_a_pair() -> None:
    previous = NumberPacer(80, now=0.0, origin=LONG_AGO)
    meta_pair = TokenBucket(1 / 6, META_PAIR_BURST, -1e6)
    for _ in range(PAIR_BURST):  # the old owner empties its bucket, then hands over
        at = previous.reserve_pair("+1", 0.0)
        assert meta_pair.available_at(at) == at
        meta_pair.reserve(at)
    successor = NumberPacer(80, now=0.5, origin=0.5)
    for _ in range(30):
        at = successor.reserve_pair("+1", 0.5)
        assert meta_pair.available_at(at) == at, "Meta would answer 131056"
        meta_pair.reserve(at)


def test_a_throughput_upgrade_raises_the_number_rate_live() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    first = [pacer.reserve_number(0.0) for _ in range(200)]
    assert first[-1] == pytest.approx(160 / 80)
    pacer.set_mps(1000, now=0.0)
    assert pacer.reserve_number(0.0) == pytest.approx(161 / 1000)


def test_pair_throttled_by_meta_empties_that_recipient_only() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    pacer.pair_throttled("+1", 0.0)
    assert pacer.reserve_pair("+1", 0.0) == pytest.approx(6.0)
    assert pacer.reserve_pair("+2", 0.0) == 0.0


def test_full_pair_buckets_are_forgotten_to_bound_memory() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    pacer.reserve_pair("+1", 0.0)
    pacer.reserve_pair("+2", 0.0)
    assert pacer.tracked_pairs == 2
    assert pacer.prune_pairs(1.0) == 0
    assert pacer.prune_pairs(7.0) == 2
    assert pacer.tracked_pairs == 0


def test_pause_and_hold_block_the_number_until_their_time() -> None:
    pacer = NumberPacer(80, now=0.0, origin=LONG_AGO)
    pacer.pause(0.0, 2.0)
    assert pacer.blocked_until() == 2.0
    assert pacer.reserve_number(2.0) == pytest.approx(2.0)  # drained, refilled 160 by then
    pacer.hold(0.0, 30.0)
    assert pacer.is_held(29.0) and not pacer.is_held(30.0)
    pacer.hold(0.0, None)
    assert pacer.blocked_until() == math.inf
    pacer.release()
    assert not pacer.is_held(0.0)


def test_earliest_send_time_is_the_latest_of_recipient_number_and_tier() -> None:
    assert earliest_send_time(1.0, 2.0, 0.5) == 2.0
    assert earliest_send_time(7.0, 2.0, 0.5) == 7.0
    assert earliest_send_time(1.0, 2.0, 9.0) == 9.0


def test_queue_removes_messages_matching_a_predicate_and_keeps_the_order_of_the_rest() -> None:
    queue: SendQueue[int] = SendQueue()
    for i in range(10):
        queue.push(i, float(10 - i))
    assert sorted(queue.remove_where(lambda i: i % 2 == 0)) == [0, 2, 4, 6, 8]
    order = []
    while (popped := queue.pop_ready(100.0)) is not None:
        order.append(popped[0])
    assert order == [9, 7, 5, 3, 1]
    assert queue.next_ready_at() is None


# --- tier ---------------------------------------------------------------------------------------


def test_tier_limits_follow_metas_names_and_unknown_names_get_the_smallest_tier() -> None:
    assert tier_limit("TIER_250") == 250
    assert tier_limit("TIER_2K") == 2000
    assert tier_limit("TIER_10K") == 10_000
    assert tier_limit("TIER_100K") == 100_000
    assert tier_limit("TIER_UNLIMITED") is None
    assert tier_limit("TIER_NOT_SET") == 250
    assert is_business_initiated("template")
    assert not is_business_initiated("text")


def test_a_recipient_already_in_the_window_is_free_and_a_new_one_waits_for_the_oldest() -> None:
    window = TierWindow(limit=2, window_ms=1000)
    assert window.available_at("a", 0) == 0
    window.record("a", 0)
    window.record("b", 100)
    assert window.available_at("a", 200) == 200
    assert window.available_at("c", 200) == 1000  # when "a" leaves
    assert window.available_at("c", 1000) == 1000
    window.record("c", 1000)
    assert window.count(1000) == 2


def test_a_repeat_send_renews_a_recipients_place_in_the_window() -> None:
    window = TierWindow(limit=2, window_ms=1000)
    window.record("a", 0)
    window.record("b", 100)
    window.record("a", 900)
    # "b" leaves first now.
    assert window.available_at("c", 950) == 1100
    assert window.count(1100) == 1


def test_an_unlimited_tier_admits_everyone() -> None:
    window = TierWindow(limit=None)
    for i in range(1000):
        window.record(str(i), 0)
    assert window.available_at("new", 0) == 0


def test_tier_places_recorded_elsewhere_are_merged() -> None:
    window = TierWindow(limit=1, window_ms=1000)
    window.merge([("a", 500), ("a", 400)])
    assert window.available_at("b", 600) == 1500


# --- error table --------------------------------------------------------------------------------

THROTTLE = (130429, 131056, 4, 80007, 613)
TRANSIENT = (1, 2, 131000, 131016, 133004, 2494100)
HOLD = (0, 190, 3, 10, 200, 250, 299, 368, 131031, 131042, 131045, 131048, 130497, 133010, 131057)
FINAL = (
    100,
    131008,
    131009,
    131021,
    131026,
    131047,
    131049,
    131050,
    131051,
    131053,
    132000,
    132001,
    132015,
    132999,
    135000,
    130472,
    131064,
    999_999,
    42,
)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (THROTTLE, ErrorClass.THROTTLE),
        (TRANSIENT, ErrorClass.TRANSIENT),
        (HOLD, ErrorClass.HOLD),
        (FINAL, ErrorClass.FINAL),
    ],
    ids=["throttle", "transient", "hold", "final"],
)
def test_every_documented_code_has_its_class(codes: tuple[int, ...], expected: ErrorClass) -> None:
    for code in codes:
        assert classify(code).error_class is expected, code


def test_table_entries_are_consistent() -> None:
    for code, rule in ERROR_TABLE.items():
        if rule.error_class is ErrorClass.THROTTLE:
            assert rule.throttle_scope is not None and rule.throttle_first_delay > 0, code
        if rule.error_class is ErrorClass.HOLD:
            assert rule.hold_until is not None, code
    assert classify(131056).throttle_scope is ThrottleScope.PAIR
    assert classify(130429).throttle_scope is ThrottleScope.NUMBER
    assert classify(190).hold_until is HoldUntil.NEW_TOKEN
    assert classify(0).hold_until is HoldUntil.NEW_TOKEN
    assert classify(131057).hold_seconds == 45.0


LIMITS = RetryLimits()


def test_pair_throttle_backs_off_four_to_the_x_seconds_for_that_pair_only() -> None:
    delays = [
        react_to_error(
            131056, attempts=0, consecutive_number_throttles=0, pair_throttles=n, limits=LIMITS
        )
        for n in (1, 2, 3, 4, 5, 9)
    ]
    assert [d.retry_in for d in delays] == [1, 4, 16, 64, 256, 256]
    assert all(d.drain_pair and not d.fail and d.pause_number_for == 0 for d in delays)


def test_number_throttle_pauses_the_number_with_capped_doubling() -> None:
    delays = [
        react_to_error(
            130429, attempts=0, consecutive_number_throttles=n, pair_throttles=0, limits=LIMITS
        ).pause_number_for
        for n in (1, 2, 3, 10)
    ]
    assert delays == [1, 2, 4, 30]
    call_budget = react_to_error(
        4, attempts=0, consecutive_number_throttles=1, pair_throttles=0, limits=LIMITS
    )
    assert call_budget.pause_number_for == 60 and not call_budget.fail


def test_transient_errors_are_retried_with_backoff_until_the_attempt_cap() -> None:
    first = react_to_error(
        131000, attempts=1, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
    )
    second = react_to_error(
        2, attempts=2, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
    )
    last = react_to_error(
        131016, attempts=3, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
    )
    assert (first.fail, first.retry_in) == (False, 2.0)
    assert (second.fail, second.retry_in) == (False, 4.0)
    assert last.fail


def test_hold_codes_hold_the_number_for_a_period_or_until_a_new_token() -> None:
    token = react_to_error(
        190, attempts=0, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
    )
    assert token.hold_number and token.hold_number_for is None and not token.fail
    maintenance = react_to_error(
        131057, attempts=0, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
    )
    assert maintenance.hold_number_for == 45.0 and maintenance.retry_in == 45.0
    policy = react_to_error(
        368,
        attempts=0,
        consecutive_number_throttles=0,
        pair_throttles=0,
        limits=RetryLimits(hold_seconds=120),
    )
    assert policy.hold_number_for == 120


def test_final_and_unknown_codes_fail_the_message() -> None:
    for code in (132001, 131047, 123456789):
        reaction = react_to_error(
            code, attempts=1, consecutive_number_throttles=0, pair_throttles=0, limits=LIMITS
        )
        assert reaction.fail and reaction.error_class is ErrorClass.FINAL


def test_unreachable_meta_is_retried_with_capped_backoff() -> None:
    assert [unreachable_backoff(n, LIMITS) for n in (1, 2, 3, 20)] == [0.5, 1.0, 2.0, 30.0]


# --- expiry -------------------------------------------------------------------------------------


def test_a_message_is_expired_from_its_expiry_instant_on() -> None:
    assert not is_expired(1_000, 999)
    assert is_expired(1_000, 1_000)
    assert is_expired(1_000, 5_000)
    assert monotonic_deadline(11_000, now_ms=1_000, now=50.0) == 60.0
