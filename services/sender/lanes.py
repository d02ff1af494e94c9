"""Pure decisions of a lane: one phone number's queue and the sends taken off it.

When a message is queued, expired or failed at admission; when the dispatcher takes the next one
or waits (and until when); which periodic chores are due; when a send must wait, goes back to the
queue, expires or holds its number; when a hold ends; what a refusal from Meta or an unreachable
Meta changes in the counts a lane and a message keep (the refusal bookkeeping).

No await, no clock, no I/O: the engine (engine.py) passes `now` (monotonic seconds) and `now_ms`
(wall-clock milliseconds) in, keeps the state and applies what these functions answer. The
pacing buckets, the queue and Meta's error table these decisions use are in core.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from services.sender.core import (
    ErrorClass,
    ErrorReaction,
    RetryLimits,
    ThrottleScope,
    classify,
    is_expired,
    react_to_error,
    unreachable_backoff,
)

IDLE = math.inf  # nothing to do until something wakes the lane
SWEEP_INTERVAL_SECONDS = 1.0  # how often a lane's queue is swept for expired messages
PRUNE_INTERVAL_SECONDS = 60.0  # how often a lane forgets its full pair buckets

# Why a number is held (the `phone_number_held` log's reason; `meta_<code>` for a period hold).
STATUS_HELD = "status_held"  # its status in `phone_numbers` is not `active`
TOKEN_REJECTED = "token_rejected"  # Meta refused the access token: until it is replaced
TOKEN_UNREADABLE = "token_unreadable"  # we could not decrypt it: until it is replaced
_TOKEN_HOLDS = (TOKEN_REJECTED, TOKEN_UNREADABLE)


# --- admission --------------------------------------------------------------------------------


class Admission(StrEnum):
    QUEUE = "queue"
    EXPIRE = "expire"  # past its validity: `expired` without calling Meta
    NOT_CONFIGURED = "not_configured"  # its number is unknown: `failed` without calling Meta


def admission(*, expires_at_ms: int, now_ms: int, configured: bool) -> Admission:
    """What becomes of a message as it arrives."""
    if is_expired(expires_at_ms, now_ms):
        return Admission.EXPIRE
    if not configured:
        return Admission.NOT_CONFIGURED
    return Admission.QUEUE


def is_parked(ready_at: float, now: float, backlog_seconds: float) -> bool:
    """Queued to go later than the backlog lead (its recipient's pair rate, the tier, a retry):
    such a message does not make its partition behind (core.partitions_to_hold_back)."""
    return ready_at > now + backlog_seconds


# --- the dispatcher ---------------------------------------------------------------------------


def next_take(
    *,
    held: bool,
    blocked_until: float,
    unanswered: int,
    cap: int,
    all_unanswered: int,
    max_in_flight: int,
    next_ready_at: float | None,
    now: float,
) -> float | None:
    """None when the lane's next message may be taken off its queue now; otherwise when to look
    again (IDLE: only when something wakes the lane).

    `held`: Meta holds the number's WABA, or guard holds its account (a release wakes the lane);
    `blocked_until`: the number's own pause or hold; `unanswered`/`cap`: its sends Meta has not
    answered yet and how many it may have (core.in_flight_cap); `all_unanswered`/
    `max_in_flight`: the same for every number together (a send answered wakes the lane)."""
    if held:
        return IDLE
    if blocked_until > now:
        return blocked_until
    if unanswered >= cap or all_unanswered >= max_in_flight:
        return IDLE
    if next_ready_at is None:
        return IDLE
    return None if next_ready_at <= now else next_ready_at


def dispatcher_wake_at(
    take_at: float, *, queued: bool, sweep_due: float, on_hold: bool, refresh_due: float
) -> float:
    """When the dispatcher looks again: at `take_at` (next_take's answer), or sooner for the
    expiry sweep of a non-empty queue, or for the number's refresh while it is held (a
    replaced token or a changed status ends the hold)."""
    wake_at = take_at
    if queued:
        wake_at = min(wake_at, sweep_due)
    if on_hold:
        wake_at = min(wake_at, refresh_due)
    return wake_at


@dataclass(frozen=True, slots=True)
class Chores:
    sweep_expired: bool = False  # take the expired messages out of the queue
    prune_pairs: bool = False  # forget the full pair buckets
    refresh_number: bool = False  # read the number again (token, status, throughput)


def due_chores(
    *,
    now: float,
    queued: bool,
    on_hold: bool,
    sweep_due: float,
    prune_due: float,
    refresh_due: float,
) -> Chores:
    """The dispatcher's periodic chores due now. The sweep and the refresh matter only with
    messages waiting (or, for the refresh, while the number is held)."""
    return Chores(
        sweep_expired=queued and now >= sweep_due,
        prune_pairs=now >= prune_due,
        refresh_number=(queued or on_hold) and now >= refresh_due,
    )


# --- holds ------------------------------------------------------------------------------------


class HoldChange(StrEnum):
    NONE = "none"
    HOLD = "hold"  # hold the number (STATUS_HELD) until its status is active again
    RELEASE = "release"  # end the number's hold


def hold_change_on_refresh(
    *,
    hold_reason: str | None,
    status: str,
    token_fingerprint: str | None,
    held_token: str | None,
    has_token: bool,
) -> HoldChange:
    """What reading the number again changes: a status other than `active` holds it; `active`
    again ends a status hold; a token hold ends once an operator replaced the token (another
    fingerprint, and readable)."""
    if status != "active" and hold_reason != STATUS_HELD:
        return HoldChange.HOLD
    if hold_reason == STATUS_HELD and status == "active":
        return HoldChange.RELEASE
    if hold_reason in _TOKEN_HOLDS and token_fingerprint != held_token and has_token:
        return HoldChange.RELEASE
    return HoldChange.NONE


def is_new_hold(hold_reason: str | None, held_now: bool) -> bool:
    """Whether a hold is news (log, alert, reason recorded). Other sends in flight bring the
    same refusal: while the number is held, one alert is enough (the hold may be extended)."""
    return not (hold_reason is not None and held_now)


def hold_ended(hold_reason: str | None, held_now: bool) -> bool:
    """The number had a hold and its time is over (or it was released): announce it."""
    return bool(hold_reason) and not held_now


def refusal_hold_reason(code: int, hold_for: float | None) -> str:
    """The reason a refusal holds a number for: until a new token, or `meta_<code>` for a
    period."""
    return TOKEN_REJECTED if hold_for is None else f"meta_{code}"


# --- one send: waiting for the number's token ------------------------------------------------


def sending_record_wait(
    *, number_token_at: float, blocked_until: float, lead_seconds: float, held: bool, now: float
) -> float | None:
    """When a send may take its `sending` record: None now, else the time to look again. Not
    long before the number may send (a pause or inbound messages can push its next token a
    second or more away; a crash turns every record taken meanwhile into an unknown outcome):
    near = within the in-flight lead. A held number's send goes on (and is put back)."""
    near_at = max(number_token_at, blocked_until) - lead_seconds
    if near_at <= now or held:
        return None
    return near_at


class GateKind(StrEnum):
    PUT_BACK = "put_back"  # its partition moved, or the number is held: back to the queue
    WAIT = "wait"  # a short pause (throttled, unreachable): wait it out, then look again
    EXPIRE = "expire"  # its validity ended while it waited
    HOLD_UNREADABLE_TOKEN = "hold_unreadable_token"  # the token cannot be read: hold, again
    RESERVE = "reserve"  # reserve the number's next token


@dataclass(frozen=True, slots=True)
class GateStep:
    kind: GateKind
    until: float = 0.0  # with WAIT


def gate_step(
    *,
    aborted: bool,
    held: bool,
    blocked_until: float,
    now: float,
    expires_at_ms: int,
    now_ms: int,
    has_token: bool,
) -> GateStep:
    """One look of a send at its number before it reserves the number's token."""
    if aborted or held:
        return GateStep(GateKind.PUT_BACK)
    if blocked_until > now:
        return GateStep(GateKind.WAIT, blocked_until)
    if is_expired(expires_at_ms, now_ms):
        return GateStep(GateKind.EXPIRE)
    if not has_token:
        return GateStep(GateKind.HOLD_UNREADABLE_TOKEN)
    return GateStep(GateKind.RESERVE)


def token_lost(*, aborted: bool, blocked_until: float, now: float) -> bool:
    """After waiting for a reserved token: its partition moved or the number was paused or held
    meanwhile. That token is lost, and the send looks again (gate_step)."""
    return aborted or blocked_until > now


# --- putting a message back -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutBack:
    forget_sending_record: bool  # no request left: our `sending` record goes (abandon_send)
    drop: bool  # its partition moved: let it go (the new owner gets its record again)


def may_forget_sending_record(*, started: bool, calls: int) -> bool:
    """Our `sending` record may go only if no request left with it: one that may have reached
    Meta must stay, so that a redelivery reports it instead of sending twice."""
    return started and calls == 0


def put_back(*, started: bool, calls: int, aborted: bool) -> PutBack:
    """The message goes back to its queue without its request having left."""
    return PutBack(may_forget_sending_record(started=started, calls=calls), drop=aborted)


def started_after_bug(*, started: bool, calls: int) -> bool:
    """A send that met a bug is queued again. If a request may have reached Meta, it is treated
    as not started: its retry goes through `start_send`, which finds our record and publishes
    its outcome (or `unknown`) instead of calling Meta again."""
    return started and calls == 0


# --- Meta's answers: the counts a lane and a message keep -------------------------------------


@dataclass(frozen=True, slots=True)
class Tries:
    """What a message and its number have met so far."""

    calls: int = 0  # the message's Graph API calls that may have been processed
    transient_failures: int = 0  # the message's transient errors from Meta
    pair_throttles: int = 0  # the message's 131056 answers (its recipient's pair rate)
    number_throttles: int = 0  # the number's consecutive throttles (reset on an acceptance)
    unreachable: int = 0  # the number's consecutive failures to reach Meta (reset likewise)


@dataclass(frozen=True, slots=True)
class RefusalPlan:
    """What a refusal with an error code changes, and what the engine does about it."""

    tries: Tries  # the counts after this refusal
    reaction: ErrorReaction  # fail, or retry no earlier than `retry_in`, pause, hold, drain
    throttled: ThrottleScope | None = None  # a throttle (counted, logged): of what
    hold_reason: str | None = None  # hold the number, with this reason
    pay_pair_again: bool = False  # a transient error: the retry reserves a pair token too
    record_attempt: bool = False  # a transient error: our `sending` record notes it


def plan_refusal(code: int, tries: Tries, limits: RetryLimits) -> RefusalPlan:
    """Meta refused a send with `code`. A throttle, or a hold of the number, means the message
    was not processed: its call does not count. A transient error counts towards the message's
    cap, and the failed call may have used the recipient's quota at Meta, so its retry pays for
    a pair token again."""
    rule = classify(code)
    throttled: ThrottleScope | None = None
    if rule.error_class is ErrorClass.THROTTLE:
        throttled = rule.throttle_scope
        if throttled is ThrottleScope.PAIR:
            tries = replace(tries, pair_throttles=tries.pair_throttles + 1)
        else:
            tries = replace(tries, number_throttles=tries.number_throttles + 1)
        tries = replace(tries, calls=tries.calls - 1)
    elif rule.error_class is ErrorClass.TRANSIENT:
        tries = replace(tries, transient_failures=tries.transient_failures + 1)
    elif rule.error_class is ErrorClass.HOLD:
        tries = replace(tries, calls=tries.calls - 1)
    reaction = react_to_error(
        code,
        attempts=tries.transient_failures,
        consecutive_number_throttles=tries.number_throttles,
        pair_throttles=tries.pair_throttles,
        limits=limits,
    )
    if reaction.fail:
        return RefusalPlan(tries, reaction, throttled)
    transient = rule.error_class is ErrorClass.TRANSIENT
    hold_reason = (
        refusal_hold_reason(code, reaction.hold_number_for) if reaction.hold_number else None
    )
    return RefusalPlan(
        tries, reaction, throttled, hold_reason, pay_pair_again=transient, record_attempt=transient
    )


def after_accepted(tries: Tries) -> Tries:
    """Meta accepted a send: the number's streaks of throttles and failures end."""
    return replace(tries, number_throttles=0, unreachable=0)


def plan_unreachable(tries: Tries, limits: RetryLimits) -> tuple[Tries, float]:
    """Meta could not be reached (nothing was sent): the call does not count, and the number
    pauses for a backoff that grows with its consecutive failures. Answers the counts and the
    pause in seconds (the message goes back to its queue for then)."""
    tries = replace(tries, calls=tries.calls - 1, unreachable=tries.unreachable + 1)
    return tries, unreachable_backoff(tries.unreachable, limits)
