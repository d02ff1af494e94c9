"""Pure decisions of the sender: pacing buckets, the send queue, the messaging tier, Meta's error
table and expiry (offset commit tracking is the shared pipeline's: shared/pipeline_offsets.py).

No await, no clock, no I/O. Pacing times are monotonic seconds (`now`); tier and expiry times are
wall-clock milliseconds since the epoch (`now_ms`), because they are persisted or come on the wire.

Why our buckets keep Meta from ever answering 130429 (throughput) or 131056 (pair rate)
-------------------------------------------------------------------------------------
Meta models both limits as token buckets refilled at rate r with capacity B. A bucket that starts
full refuses nothing as long as every time window of length T receives at most B + r*T requests.
We model the same limit with the same rate r but a smaller capacity b, and we never send a request
before our bucket granted its token; so any window of length T holds at most b + r*T of our sends.
Requests reach Meta after a network delay between d_min and d_max. The requests arriving in a
window of length T at Meta left us within a window of length T + J, where J = d_max - d_min is the
jitter, so Meta sees at most b + r*(T + J) = (b + r*J) + r*T of them. That stays within B + r*T
whenever J <= (B - b) / r: Meta's bucket always holds at least B - b tokens more than ours does.
  * number: B = 1 s of mps, b = half of it, so up to 0.5 s of jitter is absorbed. Meta counts
    inbound messages against the same throughput: each one we hear of (InboundReceived) takes a
    token from our buckets too, and the margin covers those we have not heard of yet;
  * pair: B = 45, b = 40, r = 1/6 s, so up to 30 s of jitter is absorbed.
When we take a phone number over from another owner (a restart, a rebalance), we do not know
what it sent just before. It ran this same model, so after each of its sends Meta's pair bucket
held at least B - b = 5 tokens more than its own (>= 0): a new owner starts each pair bucket with 4
tokens (one token, 6 s, is kept for jitter) and the number bucket empty (Meta kept at least half a
second of tokens). Both then refill at Meta's rate, so the margins are back within minutes.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

# Float refills can land a hair under a whole token (6 s * 1/6 per s); the epsilon keeps "one
# token every 1/r seconds" exact. It is nine orders of magnitude below the safety margins.
_EPSILON = 1e-9

# --- pacing limits ------------------------------------------------------------------------------

DEFAULT_MPS = 80
COEXISTENCE_MPS = 20
UPGRADED_MPS = 1000
# Our number bucket holds this share of Meta's one-second burst (see the module docstring).
NUMBER_BURST_SHARE = 0.5
PAIR_INTERVAL_SECONDS = 6.0
PAIR_RATE = 1.0 / PAIR_INTERVAL_SECONDS
META_PAIR_BURST = 45
PAIR_BURST = 40  # 5 below Meta's: 30 s of jitter absorbed at 1 token per 6 s
# What a new owner may send to a recipient at once (see the module docstring).
PAIR_TAKE_OVER_TOKENS = META_PAIR_BURST - PAIR_BURST - 1


def number_burst(mps: float) -> float:
    """Our number bucket's capacity: below Meta's one-second burst, but at least one message."""
    return max(1.0, NUMBER_BURST_SHARE * mps)


class TokenBucket:
    """A token bucket whose tokens may be reserved ahead of time.

    `reserve` always succeeds: it commits the next token and answers when that token is (or was)
    available. Reservations beyond the stock leave the bucket in debt (negative tokens), so later
    reservations queue behind earlier ones and the long-run rate never exceeds `rate`.
    """

    __slots__ = ("capacity", "rate", "tokens", "updated_at")

    def __init__(
        self, rate: float, capacity: float, now: float, tokens: float | None = None
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a bucket needs a positive rate and room for one token")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity if tokens is None else min(tokens, capacity)
        self.updated_at = now

    def _refill(self, now: float) -> None:
        if now > self.updated_at:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * self.rate)
            self.updated_at = now

    def available_at(self, now: float) -> float:
        """When the next token could be taken; `now` when one is in stock. Commits nothing."""
        self._refill(now)
        if self.tokens >= 1 - _EPSILON:
            return now
        return self.updated_at + (1 - self.tokens) / self.rate

    def reserve(self, now: float) -> float:
        """Commit the next token; answer the earliest time it may be used (>= now)."""
        at = self.available_at(now)
        self.tokens -= 1
        return at

    def take_if_available(self, now: float) -> float:
        """Take a token if one is in stock and answer `now`; else take nothing and answer when
        one will be (no debt: for checks made at the moment of acting)."""
        at = self.available_at(now)
        if at <= now:
            self.tokens -= 1
        return at

    def force_take(self, now: float, max_debt: float) -> None:
        """Take a token whatever the stock, for traffic Meta counts but we do not pace: the debt
        grows by one, to at most `max_debt` (as Meta's own bucket), and a deeper debt already
        run (reservations ahead) stays as it is."""
        self._refill(now)
        self.tokens = min(self.tokens, max(self.tokens - 1, -max_debt))

    def level(self, now: float) -> float:
        """Tokens in stock now (negative: debt)."""
        self._refill(now)
        return self.tokens

    def hold_at_most(self, tokens: float, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.tokens, tokens)

    def drain(self, now: float) -> None:
        """Meta says the bucket is empty: believe it (keep any debt we already run)."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)

    def retune(self, rate: float, capacity: float, now: float) -> None:
        """Change the rate (a throughput upgrade) keeping the tokens and debt accrued so far."""
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity - _EPSILON


def warm_tokens(
    capacity: float, rate: float, since: float, now: float, at_take_over: float = 0.0
) -> float:
    """Tokens of a bucket that held `at_take_over` tokens at `since` (a take-over) and has
    refilled since."""
    return min(capacity, at_take_over + max(0.0, now - since) * rate)


# --- the send queue of one phone number ---------------------------------------------------------

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(order=True)
class _Queued(Generic[T]):
    ready_at: float
    seq: int
    item: T = field(compare=False)


class SendQueue(Generic[T]):
    """Messages of one phone number ordered by the time they may go (pair and tier permitting).

    A message whose recipient is hot sits far back without blocking anyone else's."""

    def __init__(self) -> None:
        self._heap: list[_Queued[T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: T, ready_at: float) -> None:
        heapq.heappush(self._heap, _Queued(ready_at, next(self._seq), item))

    def next_ready_at(self) -> float | None:
        return self._heap[0].ready_at if self._heap else None

    def pop_ready(self, now: float) -> tuple[T, float] | None:
        """The earliest message whose time has come, with the time it became ready."""
        if self._heap and self._heap[0].ready_at <= now:
            entry = heapq.heappop(self._heap)
            return entry.item, entry.ready_at
        return None

    def remove_where(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every message matching `predicate` (expired, or of a revoked partition)."""
        kept: list[_Queued[T]] = []
        removed: list[T] = []
        for entry in self._heap:
            (removed.append(entry.item) if predicate(entry.item) else kept.append(entry))
        if removed:
            heapq.heapify(kept)
            self._heap = kept
        return removed

    def items(self) -> Iterator[T]:
        return (entry.item for entry in self._heap)


class NumberPacer:
    """Pacing state of one business phone number: its throughput bucket, one bucket per recipient,
    and holds/pauses decided from Meta's answers.

    `origin` is when we took the number over (partition assignment): buckets created then or later
    start with only the take-over allowance plus what they could have refilled since, because the
    previous owner may have used Meta's buckets just before."""

    def __init__(self, mps: float, now: float, origin: float) -> None:
        self.mps = mps
        self.origin = origin
        self.number_bucket = TokenBucket(
            mps, number_burst(mps), now, warm_tokens(number_burst(mps), mps, origin, now)
        )
        # Reservations space sends out, but sends that wake late (a stalled event loop) would
        # all leave at once: the instants they really leave must fit a bucket of the same size.
        self.fire_bucket = TokenBucket(
            mps, number_burst(mps), now, warm_tokens(number_burst(mps), mps, origin, now)
        )
        self._pairs: dict[str, TokenBucket] = {}
        self.paused_until = 0.0  # throttled by Meta or unreachable: nothing goes before this
        self.held_until = 0.0  # Meta refused the number itself (math.inf: until a new token)

    # -- pair buckets ----------------------------------------------------------------------------

    def _pair(self, recipient: str, now: float) -> TokenBucket:
        bucket = self._pairs.get(recipient)
        if bucket is None:
            bucket = self._pairs[recipient] = TokenBucket(
                PAIR_RATE,
                PAIR_BURST,
                now,
                warm_tokens(PAIR_BURST, PAIR_RATE, self.origin, now, PAIR_TAKE_OVER_TOKENS),
            )
        return bucket

    def reserve_pair(self, recipient: str, now: float) -> float:
        """Commit a pair token for a message to `recipient`; the time it may go."""
        return self._pair(recipient, now).reserve(now)

    def pair_throttled(self, recipient: str, now: float) -> None:
        """Meta answered 131056 for this recipient: its bucket is empty, whatever we thought."""
        self._pair(recipient, now).drain(now)

    def prune_pairs(self, now: float) -> int:
        """Forget full pair buckets (a new one would be identical): memory stays bounded by the
        recipients of the last few minutes."""
        full = [r for r, b in self._pairs.items() if b.is_full(now)]
        for recipient in full:
            del self._pairs[recipient]
        return len(full)

    @property
    def tracked_pairs(self) -> int:
        return len(self._pairs)

    # -- the number bucket -----------------------------------------------------------------------

    def reserve_number(self, now: float) -> float:
        return self.number_bucket.reserve(now)

    def fire(self, now: float) -> float:
        """At the moment a send would leave: `now` if it may (a token taken), else when it may."""
        return self.fire_bucket.take_if_available(now)

    def count_inbound(self, now: float) -> None:
        """A user wrote to this number: Meta counts inbound messages against the same
        throughput, so one takes a token from our buckets too (in debt if need be, at most one
        second of the rate, like Meta's bucket)."""
        self.number_bucket.force_take(now, max_debt=self.mps)
        self.fire_bucket.force_take(now, max_debt=self.mps)

    def start_below(self, meta_tokens: float, now: float) -> None:
        """Meta's bucket holds at most `meta_tokens` (inbound we heard of before we paced this
        number took the rest): ours start the usual margin below it."""
        margin = self.mps - number_burst(self.mps)
        for bucket in (self.number_bucket, self.fire_bucket):
            bucket.hold_at_most(meta_tokens - margin, now)

    def set_mps(self, mps: float, now: float) -> None:
        if mps != self.mps:
            self.mps = mps
            self.number_bucket.retune(mps, number_burst(mps), now)
            self.fire_bucket.retune(mps, number_burst(mps), now)

    def take_over(self, now: float, origin: float) -> None:
        """We (re)gained the number at `origin`: assume Meta's buckets were emptied by the
        previous owner just before."""
        self.origin = origin
        self._pairs.clear()
        capacity = number_burst(self.mps)
        self.number_bucket = TokenBucket(
            self.mps, capacity, now, warm_tokens(capacity, self.mps, origin, now)
        )
        self.fire_bucket = TokenBucket(
            self.mps, capacity, now, warm_tokens(capacity, self.mps, origin, now)
        )

    # -- pauses and holds ------------------------------------------------------------------------

    def blocked_until(self) -> float:
        return max(self.paused_until, self.held_until)

    def pause(self, now: float, seconds: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)
        self.number_bucket.drain(now)
        self.fire_bucket.drain(now)

    def hold(self, now: float, seconds: float | None) -> None:
        """Stop dispatching: for `seconds`, or (None) until the number's token is replaced."""
        self.held_until = math.inf if seconds is None else max(self.held_until, now + seconds)

    def release(self) -> None:
        self.held_until = 0.0

    def is_held(self, now: float) -> bool:
        return self.held_until > now


def in_flight_cap(mps: float, lead_seconds: float, ceiling: int) -> int:
    """How many sends of a number may be off its queue without Meta's answer: its burst plus
    `lead_seconds` of its rate, at most `ceiling`. Sized by the rate, so a 1,000 mps number
    keeps enough requests on their way (each spends a database write, a wait for its token and
    Meta's answer) while an 80 mps one does not take `sending` records far ahead of its tokens
    (a crash turns those into `unknown` outcomes)."""
    return max(1, min(ceiling, math.ceil(number_burst(mps) + mps * lead_seconds)))


# --- fetching: hold back only the partitions that are behind ---------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the sender holds of one partition of send-approved."""

    held: int = 0  # its messages in memory: queued, parked, in flight, being finished
    parked: int = 0  # of those, queued to go only later than the lead (recipient, tier, retry)
    drain_per_second: float = 0.0  # what its numbers may send per second now (held ones: 0)

    @property
    def ready(self) -> int:
        """Messages waiting only for their number's throughput (or already on their way)."""
        return max(0, self.held - self.parked)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """When to stop fetching a partition.

    A partition is behind when it holds more messages ready to go than its numbers send in
    `lead_seconds` (at least `floor`): fetching more of it only fills memory, while the
    partitions next to it, other numbers and other tenants, must keep flowing. Messages parked
    for their recipient's pair rate or the tier do not make a number behind (its other
    recipients' messages must still reach it). Memory: once everything held reaches
    `max_held`, every partition holding at least its share (`max_held` / partitions, at least
    `floor`, parked ones included) is held back too. A partition held back is polled again at
    half its budget."""

    lead_seconds: float = 2.0
    floor: int = 100
    max_held: int = 20_000


_NOTHING_HELD = Backlog()


def partitions_to_hold_back(
    backlogs: Mapping[K, Backlog], held_back: AbstractSet[K], policy: FetchPolicy
) -> set[K]:
    """The partitions (of `backlogs`: every assigned one) to leave out of the polls now;
    `held_back`: those left out now (they are polled again only at half their budget)."""
    if not backlogs:
        return set()
    crowded = sum(b.held for b in backlogs.values()) >= policy.max_held
    share = max(policy.floor, policy.max_held / len(backlogs))
    wanted: set[K] = set()
    for partition, backlog in backlogs.items():
        if crowded:
            count, budget = backlog.held, share
        else:
            count = backlog.ready
            budget = max(policy.floor, backlog.drain_per_second * policy.lead_seconds)
        if count > budget / 2 if partition in held_back else count >= budget:
            wanted.add(partition)
    return wanted


@dataclass(frozen=True, slots=True)
class FetchPlan(Generic[K]):
    """Which partitions the consumer polls now (see `plan_fetch`)."""

    poll: frozenset[K]  # assigned and not behind
    held_back: frozenset[K]  # assigned and behind: left out of the polls
    held: int  # messages held of all assigned partitions together
    crowded: bool  # `held` reached the memory bound (FetchPolicy.max_held)


def plan_fetch(
    assigned: AbstractSet[K],
    backlogs: Mapping[K, Backlog],
    held_back: AbstractSet[K],
    policy: FetchPolicy,
) -> FetchPlan[K]:
    """The partitions to poll and to hold back by `partitions_to_hold_back`. An assigned
    partition missing from `backlogs` holds nothing; `held_back` may name partitions no longer
    assigned (they are ignored)."""
    every = {partition: backlogs.get(partition, _NOTHING_HELD) for partition in assigned}
    wanted = partitions_to_hold_back(every, set(held_back) & set(assigned), policy)
    held = sum(b.held for b in every.values())
    return FetchPlan(
        frozenset(set(assigned) - wanted), frozenset(wanted), held, held >= policy.max_held
    )


def partition_backlogs(
    held: Mapping[K, int], parked: Mapping[K, int], sending: Iterable[tuple[K, float]]
) -> dict[K, Backlog]:
    """Each partition's Backlog from its messages held and parked and the rates of its numbers
    that may send now (`sending`: partition and messages per second, one per number; a number
    held, or whose WABA or account is held, is left out). Partitions holding nothing are not
    in the answer."""
    drain: dict[K, float] = {}
    for partition, mps in sending:
        if partition in held:
            drain[partition] = drain.get(partition, 0.0) + mps
    return {
        partition: Backlog(count, parked.get(partition, 0), drain.get(partition, 0.0))
        for partition, count in held.items()
    }


def earliest_send_time(pair_at: float, number_at: float, tier_at: float) -> float:
    """A message goes when its recipient, its number and its portfolio's tier all allow it."""
    return max(pair_at, number_at, tier_at)


# --- messaging tier -----------------------------------------------------------------------------

TIER_LIMITS: dict[str, int | None] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}
TIER_WINDOW_MS = 24 * 3600 * 1000


def tier_limit(messaging_limit: str | None) -> int | None:
    """Unique business-initiated recipients allowed per moving 24 h; None = unlimited. A value we
    do not know (TIER_NOT_SET, a new name) gets the smallest documented tier: safe, not silent."""
    if messaging_limit is None:
        return None
    return TIER_LIMITS.get(messaging_limit.upper(), 250)


def is_business_initiated(message_type: str) -> bool:
    """Templates are what counts against the tier (we cannot see the customer-service window, so
    a template inside it is counted too: conservative)."""
    return message_type == "template"


class TierWindow:
    """A portfolio's unique business-initiated recipients in a moving 24 h window.

    A recipient already in the window costs nothing; a new one needs a free place. When the window
    is full, the next place frees up when its oldest entry leaves."""

    def __init__(self, limit: int | None, window_ms: int = TIER_WINDOW_MS) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._last_at: dict[str, int] = {}
        self._by_time: list[tuple[int, str]] = []  # lazily cleaned: stale pairs are skipped

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        heap = self._by_time
        while heap:
            at, recipient = heap[0]
            if self._last_at.get(recipient) != at:
                heapq.heappop(heap)  # superseded by a later send to the same recipient
            elif at <= horizon:
                heapq.heappop(heap)
                del self._last_at[recipient]
            else:
                break

    def count(self, now_ms: int) -> int:
        self._expire(now_ms)
        return len(self._last_at)

    def available_at(self, recipient: str, now_ms: int) -> int:
        """When a business-initiated message to `recipient` may go (now_ms when it may now)."""
        if self.limit is None:
            return now_ms
        self._expire(now_ms)
        if recipient in self._last_at or len(self._last_at) < self.limit:
            return now_ms
        oldest_at = self._by_time[0][0]
        return oldest_at + self.window_ms

    def record(self, recipient: str, at_ms: int) -> None:
        if at_ms > self._last_at.get(recipient, -1):
            self._last_at[recipient] = at_ms
            heapq.heappush(self._by_time, (at_ms, recipient))

    def merge(self, entries: Iterable[tuple[str, int]]) -> None:
        """Add what another process (or our previous life) recorded."""
        for recipient, at_ms in entries:
            self.record(recipient, at_ms)


# --- Meta's error codes -------------------------------------------------------------------------


class ErrorClass(StrEnum):
    THROTTLE = "throttle"  # refused before processing: resend later, it cannot double-deliver
    TRANSIENT = "transient"  # Meta had a problem: retry a few times with backoff
    HOLD = "hold"  # the number (or account) itself is refused: stop sending on it, alert
    FINAL = "final"  # this message will never go: fail it


class ThrottleScope(StrEnum):
    NUMBER = "number"  # slow the whole phone number down
    PAIR = "pair"  # slow only this recipient down


class HoldUntil(StrEnum):
    NEW_TOKEN = "new_token"  # the access token is dead: wait for the operator to replace it
    PERIOD = "period"  # wait a while, then try again


@dataclass(frozen=True)
class ErrorRule:
    error_class: ErrorClass
    throttle_scope: ThrottleScope | None = None
    throttle_first_delay: float = 0.0  # seconds; doubles per consecutive throttle (pair: x4)
    hold_until: HoldUntil | None = None
    hold_seconds: float | None = None  # None: the configured default hold period


_THROTTLE_NUMBER = ErrorRule(ErrorClass.THROTTLE, ThrottleScope.NUMBER, 1.0)
# App/WABA call budgets (4, 80007, 613) are per hour: seconds of backoff would not help.
_THROTTLE_CALL_BUDGET = ErrorRule(ErrorClass.THROTTLE, ThrottleScope.NUMBER, 60.0)
_THROTTLE_PAIR = ErrorRule(ErrorClass.THROTTLE, ThrottleScope.PAIR, 1.0)
_TRANSIENT = ErrorRule(ErrorClass.TRANSIENT)
_HOLD = ErrorRule(ErrorClass.HOLD, hold_until=HoldUntil.PERIOD)
_HOLD_FOR_TOKEN = ErrorRule(ErrorClass.HOLD, hold_until=HoldUntil.NEW_TOKEN)
# Maintenance (e.g. a throughput upgrade in progress) lasts up to a minute.
_HOLD_MAINTENANCE = ErrorRule(ErrorClass.HOLD, hold_until=HoldUntil.PERIOD, hold_seconds=45.0)
_FINAL = ErrorRule(ErrorClass.FINAL)

# The one table (reference: meta-cloud-api.md §2.3 and §9). Ranges are below.
ERROR_TABLE: dict[int, ErrorRule] = {
    130429: _THROTTLE_NUMBER,
    131056: _THROTTLE_PAIR,
    4: _THROTTLE_CALL_BUDGET,
    80007: _THROTTLE_CALL_BUDGET,
    613: _THROTTLE_CALL_BUDGET,
    1: _TRANSIENT,
    2: _TRANSIENT,
    131000: _TRANSIENT,
    131016: _TRANSIENT,
    133004: _TRANSIENT,
    2494100: _TRANSIENT,
    0: _HOLD_FOR_TOKEN,
    190: _HOLD_FOR_TOKEN,
    3: _HOLD,
    10: _HOLD,
    368: _HOLD,
    131031: _HOLD,
    131042: _HOLD,
    131045: _HOLD,
    131048: _HOLD,
    130497: _HOLD,
    133010: _HOLD,
    131057: _HOLD_MAINTENANCE,
    100: _FINAL,
    131008: _FINAL,
    131009: _FINAL,
    131021: _FINAL,
    131026: _FINAL,
    131047: _FINAL,
    131049: _FINAL,
    131050: _FINAL,
    131051: _FINAL,
    131053: _FINAL,
    135000: _FINAL,
    130472: _FINAL,
    # Messaging limit reached: the tier pacing exists to avoid it; if it still comes, the message
    # must not be retried blindly (the limit lifts after hours).
    131064: _FINAL,
}
_RANGES: tuple[tuple[range, ErrorRule], ...] = (
    (range(200, 300), _HOLD),  # permissions
    (range(132000, 133000), _FINAL),  # template problems
)


def classify(code: int) -> ErrorRule:
    """Meta's error code -> what to do. A code we do not know fails the message (never loops)."""
    rule = ERROR_TABLE.get(code)
    if rule is not None:
        return rule
    for codes, ranged in _RANGES:
        if code in codes:
            return ranged
    return _FINAL


@dataclass(frozen=True)
class RetryLimits:
    transient_max_attempts: int = 3  # Meta-side failures: the request may have been processed
    transient_first_delay: float = 2.0
    transient_max_delay: float = 60.0
    number_throttle_max_delay: float = 30.0
    pair_throttle_max_delay: float = 256.0  # 4^4 s
    hold_seconds: float = 300.0
    unreachable_first_delay: float = 0.5
    unreachable_max_delay: float = 30.0


@dataclass(frozen=True)
class ErrorReaction:
    """What to do with the message, its number and its recipient after Meta refused it."""

    error_class: ErrorClass
    fail: bool = False  # publish failed with the error
    retry_in: float = 0.0  # otherwise: queue the message again, no earlier than this
    pause_number_for: float = 0.0
    hold_number_for: float | None = None  # with hold_number: None = until a new token
    hold_number: bool = False
    drain_pair: bool = False


def react_to_error(
    code: int,
    *,
    attempts: int,
    consecutive_number_throttles: int,
    pair_throttles: int,
    limits: RetryLimits,
) -> ErrorReaction:
    """`attempts` counts Meta answers that may have been processed (this one included);
    throttle counts include this one."""
    rule = classify(code)
    if rule.error_class is ErrorClass.THROTTLE:
        if rule.throttle_scope is ThrottleScope.PAIR:
            # Meta: retry after 4^X seconds, X = 0, 1, 2, ... per failure.
            delay = min(4.0 ** max(0, pair_throttles - 1), limits.pair_throttle_max_delay)
            return ErrorReaction(ErrorClass.THROTTLE, retry_in=delay, drain_pair=True)
        delay = min(
            rule.throttle_first_delay * 2 ** max(0, consecutive_number_throttles - 1),
            max(limits.number_throttle_max_delay, rule.throttle_first_delay),
        )
        return ErrorReaction(ErrorClass.THROTTLE, retry_in=delay, pause_number_for=delay)
    if rule.error_class is ErrorClass.TRANSIENT:
        if attempts >= limits.transient_max_attempts:
            return ErrorReaction(ErrorClass.TRANSIENT, fail=True)
        delay = min(
            limits.transient_first_delay * 2 ** max(0, attempts - 1), limits.transient_max_delay
        )
        return ErrorReaction(ErrorClass.TRANSIENT, retry_in=delay)
    if rule.error_class is ErrorClass.HOLD:
        period = (
            None
            if rule.hold_until is HoldUntil.NEW_TOKEN
            else rule.hold_seconds or limits.hold_seconds
        )
        return ErrorReaction(
            ErrorClass.HOLD, retry_in=period or 0.0, hold_number=True, hold_number_for=period
        )
    return ErrorReaction(ErrorClass.FINAL, fail=True)


def unreachable_backoff(consecutive_failures: int, limits: RetryLimits) -> float:
    """Meta could not be reached at all (nothing was sent): pause the number, then try again."""
    factor: int = 2 ** max(0, consecutive_failures - 1)
    return min(limits.unreachable_first_delay * factor, limits.unreachable_max_delay)


# --- expiry -------------------------------------------------------------------------------------


def is_expired(expires_at_ms: int, now_ms: int) -> bool:
    """Past its validity a message is not sent (a late OTP is worse than none)."""
    return now_ms >= expires_at_ms


def monotonic_deadline(expires_at_ms: int, now_ms: int, now: float) -> float:
    """The monotonic time at which a wall-clock expiry falls."""
    return now + (expires_at_ms - now_ms) / 1000.0
