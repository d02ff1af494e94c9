"""The sender's engine: everything between a decoded SendApproved and its published outcome.

One lane per phone number (queue + pacer + dispatcher task), many sends in flight at once, Meta's
answers applied through the error table. It knows no Kafka: records arrive with a `done`
callback (consumer.py), outcomes leave through `Publish` (publisher.py). What to do at each turn
(take a message, wait, hold, release, put back, expire, what a refusal changes) is decided by the
pure functions of lanes.py; the engine awaits, keeps the state and applies the answers.

A message's path: admit (pair token reserved, queued by its time) -> dispatcher pops it when its
recipient and the tier allow -> send task: insert the `sending` record -> number token (reserved
in the order the sends get there) -> POST -> record and publish the outcome -> `done`.

No message can stop the engine (shared/kafka.py has the rule): a bug while handling one is
retried a few times — a retry after its `sending` record exists goes through the never-twice
path (`start_send` finds the record, its outcome or `unknown` is published, Meta is not called
again) — and then its records are handed to the dead-letter hook and counted as finished. A
lane's dispatcher that crashes is restarted. A dependency unavailable past its retry budget
sets `failure` (the consumer stops without committing and is restarted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from services.sender import metrics
from services.sender.core import (
    COEXISTENCE_MPS,
    Backlog,
    NumberPacer,
    RetryLimits,
    SendQueue,
    TierWindow,
    TokenBucket,
    in_flight_cap,
    is_business_initiated,
    is_expired,
    partition_backlogs,
    tier_limit,
)
from services.sender.lanes import (
    IDLE,
    PRUNE_INTERVAL_SECONDS,
    STATUS_HELD,
    SWEEP_INTERVAL_SECONDS,
    TOKEN_UNREADABLE,
    Admission,
    GateKind,
    HoldChange,
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
    sending_record_wait,
    started_after_bug,
    token_lost,
)
from services.sender.meta_client import (
    Accepted,
    Ambiguous,
    NotSent,
    Refused,
    SendOutcome,
    targets_to_resolve,
    with_targets,
)
from services.sender.ports import (
    DeadLetterHook,
    Done,
    MetaSender,
    PhoneNumbers,
    Publish,
    SendsStore,
    Timer,
)
from services.sender.publisher import status_change
from services.sender.repository import PhoneNumber, SendRecord
from shared.clock import Clock
from shared.errors import TransientError
from shared.kafka import Failure, RetryPolicy, retry_transient
from shared.logging import get_logger
from shared.messages import (
    AccountHoldChanged,
    InboundReceived,
    SendApproved,
    ThroughputChanged,
    WabaStatusChanged,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    max_in_flight: int = 2000
    # Per number: its burst plus this many seconds of its rate, at most max_in_flight_per_number.
    in_flight_seconds: float = 0.25
    max_in_flight_per_number: int = 1000
    phone_number_refresh_seconds: float = 30.0
    tier_refresh_seconds: float = 60.0
    # How long a revocation waits for the revoked partitions' sends to finish.
    revoke_grace_seconds: float = 15.0
    limits: RetryLimits = field(default_factory=RetryLimits)
    dependency_retry: RetryPolicy = field(default_factory=RetryPolicy)
    # A message whose handling raises something unexpected (a bug) is tried this many times in
    # all, `unexpected_first_delay` apart (doubling), then its record is dead-lettered.
    unexpected_attempts: int = 3
    unexpected_first_delay: float = 0.1
    # A lane's dispatcher that crashes is restarted after a backoff that doubles up to this.
    dispatcher_restart_max_delay: float = 5.0
    # What the portfolio's tier window (and `tier_usage`) knows a recipient by: a keyed hash
    # of the number (create_worker), never the number itself.
    tier_key: Callable[[str], str] = field(default=str)
    # A message queued to go later than this (its recipient's pair rate, the tier, a retry)
    # counts as parked: it does not make its partition behind (see `backlogs`).
    backlog_seconds: float = 2.0


# --- the engine --------------------------------------------------------------------------------


@dataclass(eq=False)
class Delivery:
    """One message in our hands, from admission to its published outcome."""

    event: SendApproved
    partition: Hashable
    done: list[Done]
    admitted_at: float
    calls: int = 0  # Graph API calls made for it
    transient_failures: int = 0
    pair_throttles: int = 0
    started: bool = False  # our `sending` record exists
    unexpected_errors: int = 0  # bugs met while handling it (see SendEngine._guarded)
    aborted: bool = False  # its partition was revoked: it must not be sent by us any more
    tier_portfolio: str | None = None  # a tier place taken at dispatch, still to be persisted
    tier_recipient: str = ""  # the recipient's tier key (a keyed hash), with tier_portfolio
    parked: bool = False  # queued to go later than the backlog lead (counted per partition)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def message_id(self) -> str:
        return self.event.message_id

    @property
    def phone_number_id(self) -> str:
        return self.event.phone_number_id


class Lane:
    """One business phone number: its queue, pacer, in-flight sends and dispatcher."""

    def __init__(
        self, number: PhoneNumber, mps: float, now: float, origin: float, partition: Hashable
    ) -> None:
        self.id = number.id
        self.phone = number
        self.pacer = NumberPacer(mps, now, origin)
        self.queue: SendQueue[Delivery] = SendQueue()
        self.wake = asyncio.Event()
        self.active: set[Delivery] = set()  # off the queue, outcome not settled yet
        self.unanswered = 0  # off the queue, Meta has not answered yet (capped)
        self.partition = partition
        self.needs_takeover = False
        self.hold_reason: str | None = None
        self.held_token: str | None = None
        self.number_throttles = 0
        self.unreachable = 0
        self.refresh_due = now
        self.sweep_due = now
        self.prune_due = now + 60.0
        self.task: asyncio.Task[None] | None = None


@dataclass
class _PortfolioTier:
    window: TierWindow
    refresh_due: float


class SendEngine:
    def __init__(
        self,
        *,
        clock: Clock,
        timer: Timer,
        store: SendsStore,
        phone_numbers: PhoneNumbers,
        meta: MetaSender,
        publish: Publish,
        config: EngineConfig | None = None,
        dead_letter: DeadLetterHook | None = None,
    ) -> None:
        self._clock = clock
        self._dead_letter = dead_letter
        self._timer = timer
        self._store = store
        self._phone_numbers = phone_numbers
        self._meta = meta
        self._publish = publish
        self._config = config or EngineConfig()
        self._lanes: dict[str, Lane] = {}
        self._pending: dict[str, Delivery] = {}
        self._tiers: dict[str, _PortfolioTier] = {}
        self._throughput: dict[str, ThroughputChanged] = {}
        self._wabas: dict[str, WabaStatusChanged] = {}  # latest word on each WABA
        self._holds: dict[str, AccountHoldChanged] = {}  # guard's latest word on each account
        # Meta's bucket as inbound messages alone left it, for numbers without a lane yet.
        self._inbound_before_lane: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Messages waiting to retry after a bug: in no queue and no lane, but a revocation of
        # their partition must still reach them.
        self._recovering: set[Delivery] = set()
        self._unanswered = 0  # taken off a queue, no answer from Meta yet (capped)
        self._finishing = 0  # answered, outcome being recorded and published
        self._queued = 0
        # Per partition: messages in `_pending`, and of those the ones queued as parked.
        self._held: dict[Hashable, int] = {}
        self._parked: dict[Hashable, int] = {}
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    # -- numbers the worker reads ----------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def in_flight(self) -> int:
        return self._unanswered + self._finishing

    def lane_state(self, phone_number_id: str) -> Lane | None:
        return self._lanes.get(phone_number_id)

    def backlogs(self) -> dict[Hashable, Backlog]:
        """What is held of each partition, and how fast its numbers may send now (a number
        held, or whose WABA or account is held, sends nothing): what the consumer's fetch
        policy decides from. Counted as messages come and go; only the numbers' rates are
        summed here."""
        now = self._clock.monotonic()
        sending = (
            (lane.partition, lane.pacer.mps)
            for lane in self._lanes.values()
            if not (lane.pacer.is_held(now) or self._account_or_waba_held(lane))
        )
        return partition_backlogs(self._held, self._parked, sending)

    def set_dead_letter(self, hook: DeadLetterHook) -> None:
        """Where messages given up after repeated bugs go (without one, such a bug stops the
        engine, as a dependency outage does)."""
        self._dead_letter = hook

    def oldest_waiting_age(self) -> float:
        """Seconds since the oldest unfinished message was taken in (admission order is the
        dict's order, so the first entry is the oldest)."""
        oldest = next(iter(self._pending.values()), None)
        return 0.0 if oldest is None else self._clock.monotonic() - oldest.admitted_at

    # -- intake ----------------------------------------------------------------------------------

    async def admit_batch(self, items: list[tuple[SendApproved, Hashable, float, Done]]) -> None:
        """Take in decoded records, in order. Each item: (event, partition, time we took the
        partition over, done). Lookups run concurrently; decisions are made in record order so
        messages to one recipient keep their order.

        There is no lookup of an earlier `sends` record here: the unique insert before the call
        to Meta is the guard, and a message handled before is recognised there (its recorded
        outcome is then published again). A database read per message would cost as much as
        everything else the sender writes."""
        phone_ids = sorted({e.phone_number_id for e, *_ in items})
        found = await asyncio.gather(*(self._look_up(pid) for pid in phone_ids))
        phones: dict[str, PhoneNumber | BaseException | None] = dict(
            zip(phone_ids, found, strict=True)
        )

        now, now_ms = self._clock.monotonic(), self._clock.now_ms()
        for event, partition, taken_over_at, done in items:
            admitted = self._pending.get(event.message_id)
            if admitted is not None:  # a duplicate of a message we are working on
                admitted.done.append(done)
                continue
            delivery = Delivery(event, partition, [done], now)
            try:
                phone = phones.get(event.phone_number_id)
                if isinstance(phone, BaseException):
                    raise phone
                self._admit(delivery, phone, taken_over_at, now, now_ms)
            except Exception as exc:  # a bug with this message: the others go on
                self._forget(delivery)
                readmit = partial(self._readmit, delivery, taken_over_at)
                self._spawn(self._guarded(delivery, readmit, failed_with=exc))

    async def _look_up(self, phone_number_id: str) -> PhoneNumber | BaseException | None:
        """The number, or the unexpected error looking it up raised (it fails only the
        messages of that number). A dependency down past its budget propagates."""
        try:
            return await self._retry(
                partial(self._phone_numbers.get, phone_number_id),  # type: ignore[no-any-return]
                "phone_number",
            )
        except TransientError:
            raise
        except Exception as exc:
            return exc

    def _admit(
        self,
        delivery: Delivery,
        phone: PhoneNumber | None,
        taken_over_at: float,
        now: float,
        now_ms: int,
    ) -> None:
        event = delivery.event
        verdict = admission(
            expires_at_ms=event.expires_at, now_ms=now_ms, configured=phone is not None
        )
        if verdict is Admission.EXPIRE:
            self._finish_unsent_soon(delivery, "expired", reason="validity_expired")
            return
        if phone is None:  # Admission.NOT_CONFIGURED
            self._finish_unsent_soon(delivery, "failed", reason="phone_number_not_configured")
            return
        lane = self._lane(phone, delivery.partition, taken_over_at, now)
        ready_at = lane.pacer.reserve_pair(event.recipient, now)
        if ready_at > now:
            metrics.PAIR_RATE_PARKED.inc()
        self._pending[event.message_id] = delivery
        _add(self._held, delivery.partition, 1)
        self._enqueue(lane, delivery, ready_at)

    async def _readmit(self, delivery: Delivery, taken_over_at: float) -> None:
        """Admit again a message whose admission met a bug."""
        phone = await self._retry(
            partial(self._phone_numbers.get, delivery.phone_number_id), "phone_number"
        )
        try:
            self._admit(
                delivery, phone, taken_over_at, self._clock.monotonic(), self._clock.now_ms()
            )
        except BaseException:
            self._forget(delivery)
            raise

    def _forget(self, delivery: Delivery) -> None:
        if self._pending.get(delivery.message_id) is delivery:
            del self._pending[delivery.message_id]
            _add(self._held, delivery.partition, -1)

    def _finish_unsent_soon(self, delivery: Delivery, status: str, *, reason: str) -> None:
        run = partial(self._finish_unsent, delivery, status, reason=reason)
        self._spawn(self._guarded(delivery, run))

    def apply_throughput(self, event: ThroughputChanged) -> None:
        """A number's throughput (or messaging limit) changed: the latest event wins."""
        known = self._throughput.get(event.phone_number_id)
        if known is not None and known.occurred_at > event.occurred_at:
            return
        self._throughput[event.phone_number_id] = event
        lane = self._lanes.get(event.phone_number_id)
        if lane is not None:
            lane.pacer.set_mps(event.messages_per_second, self._clock.monotonic())
            lane.wake.set()
        log.info(
            "throughput_changed",
            phone_number_id=event.phone_number_id,
            messages_per_second=event.messages_per_second,
            messaging_limit=event.messaging_limit,
        )

    def apply_waba_status(self, event: WabaStatusChanged) -> None:
        """Meta holds a WABA (banned, deleted, our app removed) or releases it: the latest event
        wins. A held WABA's numbers take nothing off their queues: their messages wait, and
        those whose validity ends meanwhile expire as usual (the queue sweep). Sends already
        on their way to Meta are not recalled."""
        known = self._wabas.get(event.waba_id)
        if known is not None and known.occurred_at > event.occurred_at:
            return
        self._wabas[event.waba_id] = event
        for lane in self._lanes.values():
            if lane.phone.waba_id == event.waba_id:
                lane.wake.set()
        if event.held:
            metrics.ALERTS.labels("waba_held").inc()
            log.error(
                "waba_held", waba_id=event.waba_id, reasons=event.reasons, account_event=event.event
            )
        elif known is not None and known.held:
            log.warning("waba_released", waba_id=event.waba_id, account_event=event.event)

    def waba_held(self, waba_id: str) -> bool:
        event = self._wabas.get(waba_id)
        return event is not None and event.held

    def apply_account_hold(self, event: AccountHoldChanged) -> None:
        """guard holds an account (its fraud and spam rules) or an operator released it: like
        a held WABA, the account's numbers take nothing off their queues meanwhile (messages
        wait; those whose validity ends expire as usual)."""
        known = self._holds.get(event.account_id)
        if known is not None and known.occurred_at > event.occurred_at:
            return
        self._holds[event.account_id] = event
        for lane in self._lanes.values():
            if lane.phone.account_id == event.account_id:
                lane.wake.set()
        log.warning("account_hold_changed", account_id=event.account_id, held=event.held)

    def account_held(self, account_id: str) -> bool:
        event = self._holds.get(account_id)
        return event is not None and event.held

    def _account_or_waba_held(self, lane: Lane) -> bool:
        """Meta holds the number's WABA, or guard holds its account: it takes nothing off its
        queue (apply_waba_status / apply_account_hold wake the lane on release)."""
        return self.waba_held(lane.phone.waba_id) or self.account_held(lane.phone.account_id)

    def count_inbound(self, event: InboundReceived) -> None:
        """A user wrote to one of our numbers: Meta counts it against the number's throughput.
        For a number we pace no message of yet, what Meta's bucket would hold after them is
        kept (at the lowest rate a number has: the slowest refill) for when we start."""
        now = self._clock.monotonic()
        metrics.INBOUND_COUNTED.inc()
        lane = self._lanes.get(event.phone_number_id)
        if lane is not None:
            lane.pacer.count_inbound(now)
            return
        seen = self._inbound_before_lane.get(event.phone_number_id)
        if seen is None:
            if len(self._inbound_before_lane) >= 10_000:  # bounded: forget the settled ones
                for number, bucket in list(self._inbound_before_lane.items()):
                    if bucket.is_full(now):
                        del self._inbound_before_lane[number]
            seen = self._inbound_before_lane[event.phone_number_id] = TokenBucket(
                COEXISTENCE_MPS, COEXISTENCE_MPS, now
            )
        seen.force_take(now, max_debt=COEXISTENCE_MPS)

    def _mps(self, phone: PhoneNumber) -> int:
        change = self._throughput.get(phone.id)
        return change.messages_per_second if change else phone.throughput_mps

    def _messaging_limit(self, phone: PhoneNumber) -> str:
        change = self._throughput.get(phone.id)
        return (
            change.messaging_limit if change and change.messaging_limit else phone.messaging_limit
        )

    def _lane(
        self, phone: PhoneNumber, partition: Hashable, taken_over_at: float, now: float
    ) -> Lane:
        lane = self._lanes.get(phone.id)
        if lane is None:
            lane = self._lanes[phone.id] = Lane(
                phone, self._mps(phone), now, taken_over_at, partition
            )
            seen = self._inbound_before_lane.pop(phone.id, None)
            if seen is not None:
                lane.pacer.start_below(seen.level(now), now)
            lane.task = self._spawn(self._run_dispatcher(lane), track=False)
        elif lane.needs_takeover:
            lane.pacer.take_over(now, origin=taken_over_at)
            lane.needs_takeover = False
        lane.partition = partition
        return lane

    def _enqueue(self, lane: Lane, delivery: Delivery, ready_at: float) -> None:
        lane.queue.push(delivery, ready_at)
        if is_parked(ready_at, self._clock.monotonic(), self._config.backlog_seconds):
            delivery.parked = True
            _add(self._parked, delivery.partition, 1)
        self._queued += 1
        metrics.MESSAGES_QUEUED.set(self._queued)
        lane.wake.set()

    # -- rebalances and shutdown -----------------------------------------------------------------

    async def revoke(self, partitions: set[Hashable]) -> None:
        """Partitions went to another owner: forget their queued messages (they will be
        redelivered there), stop their sends that have not left yet, and wait for the rest."""
        waiting: list[Delivery] = []
        for lane in self._lanes.values():
            for delivery in lane.queue.remove_where(lambda d: d.partition in partitions):
                self._queued -= 1
                self._unpark(delivery)
                self._drop(delivery)
            for delivery in lane.active:
                if delivery.partition in partitions:
                    delivery.aborted = True
                    waiting.append(delivery)
            if lane.partition in partitions:
                lane.needs_takeover = True
            lane.wake.set()
        for delivery in self._recovering:
            if delivery.partition in partitions:
                delivery.aborted = True  # dropped when its retry comes (see _guarded)
        metrics.MESSAGES_QUEUED.set(self._queued)
        if waiting:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(d.settled.wait()) for d in waiting],
                timeout=self._config.revoke_grace_seconds,
            )
            for future in pending:
                future.cancel()
            if pending:
                log.warning("revoke_sends_still_running", count=len(pending))

    async def stop(self, grace_seconds: float) -> None:
        """Stop dispatching; let sends already taken off the queue finish (a cut-off request is
        an ambiguous one), then cancel what is left."""
        dispatchers = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in dispatchers:
            task.cancel()
        await asyncio.gather(*dispatchers, return_exceptions=True)
        if self._tasks:
            _, still_running = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)

    # -- dispatching -----------------------------------------------------------------------------

    async def _run_dispatcher(self, lane: Lane) -> None:
        """The lane's dispatcher, restarted after a crash (a bug must not stop a number for
        good: its queue is intact, and a message it had taken is handled by `_guarded`)."""
        delay = self._config.unexpected_first_delay
        while True:
            started = self._clock.monotonic()
            try:
                await self._dispatch(lane)
            except TransientError:
                raise  # a dependency down past its budget: the worker stops (see _task_done)
            except Exception as exc:
                if self._clock.monotonic() - started > 60.0:
                    delay = self._config.unexpected_first_delay  # it ran well for a while
                metrics.UNEXPECTED_ERRORS.labels("dispatcher").inc()
                log.error(
                    "dispatcher_crashed_restarting",
                    phone_number_id=lane.id,
                    restart_in_s=round(delay, 3),
                    exc_info=exc,
                )
                await self._timer.sleep_until(self._clock.monotonic() + delay)
                delay = min(delay * 2, self._config.dispatcher_restart_max_delay)
                lane.wake.set()

    async def _dispatch(self, lane: Lane) -> None:
        """Take the lane's messages off its queue as their time comes, without waiting for Meta's
        answers (those come back in the send tasks)."""
        config = self._config
        while True:
            lane.wake.clear()
            now = self._clock.monotonic()
            # Each periodic step is due again before it runs: one that crashes (and restarts
            # the dispatcher) is not repeated before its time.
            chores = due_chores(
                now=now,
                queued=bool(lane.queue),
                on_hold=lane.hold_reason is not None,
                sweep_due=lane.sweep_due,
                prune_due=lane.prune_due,
                refresh_due=lane.refresh_due,
            )
            if chores.sweep_expired:
                lane.sweep_due = now + SWEEP_INTERVAL_SECONDS
                self._sweep_expired(lane)
            if chores.prune_pairs:
                lane.prune_due = now + PRUNE_INTERVAL_SECONDS
                lane.pacer.prune_pairs(now)
            if chores.refresh_number:
                lane.refresh_due = now + config.phone_number_refresh_seconds
                await self._refresh(lane)
            if hold_ended(lane.hold_reason, lane.pacer.is_held(now)):
                self._released(lane)

            take_at = self._dispatch_once(lane, now) if lane.queue else IDLE
            if take_at is None:
                await self._dispatch_ready(lane, now)
                continue
            await self._timer.wait(
                lane.wake,
                dispatcher_wake_at(
                    take_at,
                    queued=bool(lane.queue),
                    sweep_due=lane.sweep_due,
                    on_hold=lane.hold_reason is not None,
                    refresh_due=lane.refresh_due,
                ),
            )

    def _dispatch_once(self, lane: Lane, now: float) -> float | None:
        """None when a message may be taken now; otherwise when to look again."""
        config = self._config
        return next_take(
            held=self._account_or_waba_held(lane),
            blocked_until=lane.pacer.blocked_until(),
            unanswered=lane.unanswered,
            cap=in_flight_cap(
                lane.pacer.mps, config.in_flight_seconds, config.max_in_flight_per_number
            ),
            all_unanswered=self._unanswered,
            max_in_flight=config.max_in_flight,
            next_ready_at=lane.queue.next_ready_at(),
            now=now,
        )

    async def _dispatch_ready(self, lane: Lane, now: float) -> None:
        popped = lane.queue.pop_ready(now)
        if popped is None:
            return
        delivery, ready_at = popped
        self._queued -= 1
        self._unpark(delivery)
        metrics.MESSAGES_QUEUED.set(self._queued)
        try:
            await self._take_off(lane, delivery, ready_at, now)
        except TransientError:
            raise
        except Exception as exc:  # off the queue: it must not be lost with the dispatcher
            again = partial(self._send_again_after_bug, lane, delivery)
            self._spawn(self._guarded(delivery, again, failed_with=exc))

    async def _take_off(self, lane: Lane, delivery: Delivery, ready_at: float, now: float) -> None:
        event = delivery.event
        now_ms = self._clock.now_ms()
        if is_expired(event.expires_at, now_ms):
            self._finish_unsent_soon(delivery, "expired", reason="validity_expired")
            return
        if is_business_initiated(event.message_type):
            lane.active.add(delivery)  # visible to a revocation while the tier loads
            try:
                tier = await self._tier(lane.phone)
            finally:
                lane.active.discard(delivery)
            if delivery.aborted:
                self._drop(delivery)
                return
            if tier is not None:
                recipient = delivery.tier_recipient or self._config.tier_key(event.recipient)
                free_at_ms = tier.window.available_at(recipient, now_ms)
                if free_at_ms > now_ms:
                    # Tier full: wait for the oldest recipient to leave the window (the
                    # expiry sweep usually ends the wait first).
                    delivery.tier_recipient = recipient
                    self._enqueue(lane, delivery, now + (free_at_ms - now_ms) / 1000.0)
                    return
                tier.window.record(recipient, now_ms)
                delivery.tier_portfolio = lane.phone.portfolio_id
                delivery.tier_recipient = recipient
        lane.active.add(delivery)
        lane.unanswered += 1
        self._unanswered += 1
        metrics.MESSAGES_IN_FLIGHT.set(self.in_flight)
        self._spawn(
            self._guarded(
                delivery,
                partial(self._send, lane, delivery, ready_at),
                recover=partial(self._send_again_after_bug, lane, delivery),
            )
        )

    def _sweep_expired(self, lane: Lane) -> None:
        now_ms = self._clock.now_ms()
        expired = lane.queue.remove_where(lambda d: is_expired(d.event.expires_at, now_ms))
        for delivery in expired:
            self._queued -= 1
            self._unpark(delivery)
            self._finish_unsent_soon(delivery, "expired", reason="validity_expired")
        if expired:
            metrics.MESSAGES_QUEUED.set(self._queued)

    async def _tier(self, phone: PhoneNumber) -> _PortfolioTier | None:
        limit = tier_limit(self._messaging_limit(phone))
        if limit is None or not phone.portfolio_id:
            return None
        now = self._clock.monotonic()
        tier = self._tiers.get(phone.portfolio_id)
        if tier is None:
            tier = self._tiers[phone.portfolio_id] = _PortfolioTier(TierWindow(limit), 0.0)
        tier.window.limit = limit
        if now >= tier.refresh_due:
            # Other numbers of the portfolio may be sent by other instances: merge their places.
            since = self._clock.now_ms() - tier.window.window_ms
            entries = await self._retry(
                partial(self._store.load_tier_usage, phone.portfolio_id, since), "tier_usage"
            )
            tier.window.merge(entries)
            tier.refresh_due = now + self._config.tier_refresh_seconds
        return tier

    async def _refresh(self, lane: Lane) -> None:
        phone = await self._retry(partial(self._phone_numbers.get, lane.id), "phone_number")
        if phone is None:
            return
        lane.phone = phone
        now = self._clock.monotonic()
        lane.pacer.set_mps(self._mps(phone), now)
        change = hold_change_on_refresh(
            hold_reason=lane.hold_reason,
            status=phone.status,
            token_fingerprint=phone.token_fingerprint,
            held_token=lane.held_token,
            has_token=bool(phone.access_token),
        )
        if change is HoldChange.HOLD:
            self._hold(lane, STATUS_HELD, None, code=None)
        elif change is HoldChange.RELEASE:  # active again, or an operator replaced the token
            lane.pacer.release()

    def _hold(self, lane: Lane, reason: str, seconds: float | None, code: int | None) -> None:
        now = self._clock.monotonic()
        news = is_new_hold(lane.hold_reason, lane.pacer.is_held(now))
        lane.pacer.hold(now, seconds)
        if not news:  # other sends in flight bring the same news: one alert is enough
            return
        lane.hold_reason = reason
        lane.held_token = lane.phone.token_fingerprint
        lane.refresh_due = min(lane.refresh_due, now + self._config.phone_number_refresh_seconds)
        metrics.ALERTS.labels("phone_number_held").inc()
        metrics.NUMBERS_HELD.set(sum(1 for lane in self._lanes.values() if lane.hold_reason))
        log.error(
            "phone_number_held",
            phone_number_id=lane.id,
            reason=reason,
            error_code=code,
            hold_seconds=seconds,
        )

    def _released(self, lane: Lane) -> None:
        log.warning("phone_number_released", phone_number_id=lane.id, reason=lane.hold_reason)
        lane.hold_reason = None
        lane.held_token = None
        metrics.NUMBERS_HELD.set(sum(1 for lane in self._lanes.values() if lane.hold_reason))

    # -- one send --------------------------------------------------------------------------------

    async def _send(self, lane: Lane, delivery: Delivery, eligible_at: float) -> None:
        answered = False

        def free_the_slot() -> None:
            # Recording the outcome can take a while on a busy database: it does not hold
            # back the next request (backpressure on the consumer bounds that work instead).
            nonlocal answered
            if answered:
                return
            answered = True
            was_full = self._unanswered >= self._config.max_in_flight
            lane.unanswered -= 1
            self._unanswered -= 1
            lane.wake.set()
            if was_full:
                for other in self._lanes.values():
                    other.wake.set()

        try:
            if delivery.aborted:
                self._drop(delivery)
                return
            event = delivery.event
            if not delivery.started:
                await self._until_token_is_near(lane)
                earlier = await self._retry(
                    partial(
                        self._store.start_send,
                        event.message_id,
                        phone_number_id=event.phone_number_id,
                        account_id=event.account_id,
                        now_ms=self._clock.now_ms(),
                    ),
                    "start_send",
                )
                if earlier is not None:  # someone attempted it before: never twice
                    await self._replay(earlier, event, delivery.done, delivery.admitted_at)
                    self._settle(delivery)
                    return
                delivery.started = True
            if delivery.tier_portfolio is not None:
                await self._retry(
                    partial(
                        self._store.record_tier_use,
                        delivery.tier_portfolio,
                        delivery.tier_recipient,
                        self._clock.now_ms(),
                    ),
                    "tier_usage",
                )
                delivery.tier_portfolio = None
            if not await self._pass_gate(lane, delivery):
                return
            metrics.PACING_WAIT.observe(max(0.0, self._clock.monotonic() - eligible_at))
            call = await self._with_wamids(event)
            if call is None:  # it names one of our messages that never got a wamid
                await self._finish(delivery, "failed", reason="context_message_not_sent")
                return
            token = lane.phone.access_token or ""
            delivery.calls += 1
            outcome = await self._meta.send(lane.id, token, call)
            free_the_slot()
            self._finishing += 1
            try:
                await self._apply_outcome(lane, delivery, outcome)
            finally:
                self._finishing -= 1
        finally:
            free_the_slot()
            lane.active.discard(delivery)
            metrics.MESSAGES_IN_FLIGHT.set(self.in_flight)

    async def _with_wamids(self, event: SendApproved) -> SendApproved | None:
        """The message with the ids of ours it names (a reply's quote, a reaction's target)
        replaced by their wamids from our records; None when one has none (never sent)."""
        targets = targets_to_resolve(event)
        if not targets:
            return event
        wamids: dict[str, str] = {}
        for target in targets:
            record = await self._retry(partial(self._store.find_send, target), "find_send")
            if record is None or not record.wamid:
                return None
            wamids[target] = record.wamid
        return with_targets(event, wamids)

    async def _until_token_is_near(self, lane: Lane) -> None:
        """Take no `sending` record long before the number may send (a pause, or inbound
        messages, can push its next token a second or more away): a crash turns every such
        record into an unknown outcome. Near = within the in-flight lead (lanes.py)."""
        while True:
            now = self._clock.monotonic()
            near_at = sending_record_wait(
                number_token_at=lane.pacer.number_bucket.available_at(now),
                blocked_until=lane.pacer.blocked_until(),
                lead_seconds=self._config.in_flight_seconds,
                held=lane.pacer.is_held(now),
                now=now,
            )
            if near_at is None:
                return
            await self._timer.sleep_until(near_at)

    async def _pass_gate(self, lane: Lane, delivery: Delivery) -> bool:
        """Wait for the number's token. False: the message does not go now (it was put back,
        finished, or dropped).

        The token is reserved synchronously (no await between looking at the bucket and taking
        from it), so the sends of a number need no lock: each one then sleeps until its own
        token's time, concurrently with the others. (Sleeping under a per-number lock instead
        let at most one token go per turn of the event loop: about 350/s on a busy loop.)"""
        verdict = await self._wait_for_number_token(lane, delivery)
        if verdict == "expired":
            await self._finish(delivery, "expired", reason="validity_expired")
        elif verdict == "put_back":
            await self._put_back(lane, delivery, self._clock.monotonic())
        return verdict == "go"

    async def _wait_for_number_token(self, lane: Lane, delivery: Delivery) -> str:
        while True:
            now = self._clock.monotonic()
            step = gate_step(
                aborted=delivery.aborted,
                held=lane.pacer.is_held(now),
                blocked_until=lane.pacer.blocked_until(),
                now=now,
                expires_at_ms=delivery.event.expires_at,
                now_ms=self._clock.now_ms(),
                has_token=lane.phone.access_token is not None,
            )
            if step.kind is GateKind.PUT_BACK:
                return "put_back"
            if step.kind is GateKind.WAIT:
                await self._timer.sleep_until(step.until)
                continue
            if step.kind is GateKind.EXPIRE:
                return "expired"
            if step.kind is GateKind.HOLD_UNREADABLE_TOKEN:
                self._hold(lane, TOKEN_UNREADABLE, None, code=None)
                continue
            token_at = lane.pacer.reserve_number(now)
            if token_at > now:
                await self._timer.sleep_until(token_at)
                if token_lost(
                    aborted=delivery.aborted,
                    blocked_until=lane.pacer.blocked_until(),
                    now=self._clock.monotonic(),
                ):
                    continue
            if await self._fire_when_allowed(lane, delivery):
                return "go"

    async def _fire_when_allowed(self, lane: Lane, delivery: Delivery) -> bool:
        """Wait until the send may really leave (see NumberPacer.fire). False: something
        happened while it waited, and the caller starts over."""
        while True:
            now = self._clock.monotonic()
            fire_at = lane.pacer.fire(now)
            if fire_at <= now:
                return True
            await self._timer.sleep_until(fire_at)
            if token_lost(
                aborted=delivery.aborted,
                blocked_until=lane.pacer.blocked_until(),
                now=self._clock.monotonic(),
            ):
                return False

    async def _put_back(self, lane: Lane, delivery: Delivery, ready_at: float) -> None:
        """The message goes back to the queue without its request having left: forget the
        `sending` record unless an earlier call may have reached Meta."""
        plan = put_back(started=delivery.started, calls=delivery.calls, aborted=delivery.aborted)
        if plan.forget_sending_record:
            await self._retry(
                partial(self._store.abandon_send, delivery.message_id), "abandon_send"
            )
            delivery.started = False
        if plan.drop:
            self._drop(delivery)
            return
        self._enqueue(lane, delivery, ready_at)

    async def _apply_outcome(self, lane: Lane, delivery: Delivery, outcome: SendOutcome) -> None:
        now = self._clock.monotonic()
        if isinstance(outcome, Accepted):
            _keep_tries(lane, delivery, after_accepted(_tries(lane, delivery)))
            # The pipeline's first latency: the client's 202 to Meta's acceptance.
            metrics.ACCEPT_TO_META.observe(
                max(0.0, (self._clock.now_ms() - delivery.event.accepted_at) / 1000)
            )
            await self._finish(delivery, "sent", wamid=outcome.wamid)
        elif isinstance(outcome, Ambiguous):
            log.warning(
                "send_outcome_ambiguous",
                message_id=delivery.message_id,
                phone_number_id=lane.id,
                cause=outcome.reason,
            )
            await self._finish(delivery, "unknown", reason="meta_outcome_ambiguous")
        elif isinstance(outcome, NotSent):  # nothing reached Meta
            tries, backoff = plan_unreachable(_tries(lane, delivery), self._config.limits)
            _keep_tries(lane, delivery, tries)
            lane.pacer.pause(now, backoff)
            log.warning(
                "meta_unreachable",
                phone_number_id=lane.id,
                cause=outcome.reason,
                retry_in_s=backoff,
            )
            await self._put_back(lane, delivery, now + backoff)
        elif outcome.code is None:
            await self._finish(delivery, "failed", reason=f"meta_http_{outcome.http_status}")
        else:
            await self._apply_refusal(lane, delivery, outcome, now)

    async def _apply_refusal(
        self, lane: Lane, delivery: Delivery, refused: Refused, now: float
    ) -> None:
        code = refused.code
        assert code is not None
        error = {"code": code, "title": refused.title, "details": refused.details}
        plan = plan_refusal(code, _tries(lane, delivery), self._config.limits)
        _keep_tries(lane, delivery, plan.tries)
        if plan.throttled is not None:
            metrics.THROTTLE_ERRORS.labels(str(code)).inc()
            log.warning(
                "meta_throttled",
                phone_number_id=lane.id,
                error_code=code,
                scope=str(plan.throttled),
            )
        reaction = plan.reaction
        if reaction.fail:
            await self._finish(delivery, "failed", error=error)
            return
        retry_at = now + reaction.retry_in
        recipient = delivery.event.recipient
        if reaction.drain_pair:
            lane.pacer.pair_throttled(recipient, now)
            retry_at = max(retry_at, lane.pacer.reserve_pair(recipient, now))
        if reaction.pause_number_for:
            lane.pacer.pause(now, reaction.pause_number_for)
        if plan.hold_reason is not None:
            self._hold(lane, plan.hold_reason, reaction.hold_number_for, code=code)
        if plan.pay_pair_again:
            retry_at = max(retry_at, lane.pacer.reserve_pair(recipient, now))
        if plan.record_attempt:
            await self._retry(
                partial(
                    self._store.update_send,
                    delivery.message_id,
                    state="sending",
                    attempts=delivery.calls,
                    now_ms=self._clock.now_ms(),
                    error=error,
                ),
                "update_send",
            )
        await self._put_back(lane, delivery, retry_at)

    # -- bugs ------------------------------------------------------------------------------------

    async def _guarded(
        self,
        delivery: Delivery,
        run: Callable[[], Awaitable[None]],
        recover: Callable[[], Awaitable[None]] | None = None,
        failed_with: BaseException | None = None,
    ) -> None:
        """Run one step of a message's handling. A bug (anything but a TransientError) is
        retried — with `recover`, else `run` again — until the message has met
        `unexpected_attempts` of them; then its records are dead-lettered (`_give_up`).
        `failed_with`: the step already failed once with this."""
        action = run
        delay = self._config.unexpected_first_delay
        while True:
            if failed_with is None:
                try:
                    await action()
                    return
                except TransientError:
                    raise
                except Exception as exc:
                    failed_with = exc
            error, failed_with = failed_with, None
            metrics.UNEXPECTED_ERRORS.labels("delivery").inc()
            if delivery.settled.is_set():  # it was finished before the bug: nothing to redo
                log.error(
                    "delivery_error_after_finish", message_id=delivery.message_id, exc_info=error
                )
                return
            delivery.unexpected_errors += 1
            if delivery.unexpected_errors >= self._config.unexpected_attempts:
                await self._give_up(delivery, Failure(error, delivery.unexpected_errors))
                return
            log.warning(
                "delivery_error_retrying",
                message_id=delivery.message_id,
                attempt=delivery.unexpected_errors,
                error=repr(error),
                retry_in_s=round(delay, 3),
            )
            self._recovering.add(delivery)
            try:
                await self._timer.sleep_until(self._clock.monotonic() + delay)
            finally:
                self._recovering.discard(delivery)
            if delivery.aborted:  # its partition moved meanwhile: the new owner handles it
                self._drop(delivery)
                return
            delay *= 2
            action = recover or run

    async def _send_again_after_bug(self, lane: Lane, delivery: Delivery) -> None:
        """Queue a message whose send met a bug again. If a request may have reached Meta, the
        retry goes through the never-twice path: `start_send` finds our record, and its
        outcome (or `unknown`) is published instead of calling Meta again."""
        lane.active.discard(delivery)
        delivery.started = started_after_bug(started=delivery.started, calls=delivery.calls)
        await self._put_back(lane, delivery, self._clock.monotonic())

    async def _give_up(self, delivery: Delivery, failure: Failure) -> None:
        """Dead-letter the message's records and let it go, after repeated bugs."""
        self._forget(delivery)
        if delivery.aborted:  # its partition moved: the new owner handles its record
            self._drop(delivery)
            return
        if may_forget_sending_record(started=delivery.started, calls=delivery.calls):
            # No request left: forget our `sending` record, so that a replay of the dead
            # letter sends it (one that may have reached Meta stays, and a replay reports it).
            try:
                await self._retry(
                    partial(self._store.abandon_send, delivery.message_id), "abandon_send"
                )
            except TransientError:
                raise
            except Exception as exc:
                log.error("abandon_send_failed", message_id=delivery.message_id, exc_info=exc)
        if self._dead_letter is None:
            raise failure.error
        log.error(
            "delivery_dead_lettered",
            message_id=delivery.message_id,
            phone_number_id=delivery.phone_number_id,
            attempts=failure.attempts,
            error=repr(failure.error),
        )
        await self._dead_letter(list(delivery.done), failure)
        self._settle(delivery)

    # -- outcomes --------------------------------------------------------------------------------

    async def _finish(
        self,
        delivery: Delivery,
        status: str,
        *,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        """Record and publish the outcome of a message we started sending."""
        event = delivery.event
        await self._retry(
            partial(
                self._store.record_outcome,
                delivery.message_id,
                status,
                phone_number_id=event.phone_number_id,
                account_id=event.account_id,
                attempts=delivery.calls,
                now_ms=self._clock.now_ms(),
                wamid=wamid,
                error=error,
                reason=reason,
            ),
            "record_outcome",
        )
        await self._announce(
            delivery.event,
            status,
            wamid=wamid,
            error=error,
            reason=reason,
            replayed=False,
            admitted_at=delivery.admitted_at,
        )
        self._complete(delivery)

    async def _finish_unsent(
        self, delivery: Delivery, status: str, *, reason: str | None = None
    ) -> None:
        """An outcome reached without calling Meta (expired, misconfigured number)."""
        event = delivery.event
        if delivery.started:
            await self._finish(delivery, status, reason=reason)
            return
        if status == "expired":
            metrics.MESSAGES_EXPIRED.inc()
        earlier = await self._retry(
            partial(
                self._store.record_unsent_outcome,
                event.message_id,
                status,
                phone_number_id=event.phone_number_id,
                account_id=event.account_id,
                now_ms=self._clock.now_ms(),
                reason=reason,
            ),
            "record_outcome",
        )
        if earlier is not None:
            await self._replay(earlier, event, delivery.done, delivery.admitted_at)
            self._settle(delivery)
            return
        await self._announce(
            event, status, reason=reason, replayed=False, admitted_at=delivery.admitted_at
        )
        self._complete(delivery)

    async def _replay(
        self, record: SendRecord, event: SendApproved, done: list[Done], admitted_at: float
    ) -> None:
        """The message was handled before: publish what was recorded, never send again. A record
        still `sending` means a call may have left without us seeing the answer: unknown."""
        if record.state == "sending":
            earlier = await self._retry(
                partial(
                    self._store.record_outcome,
                    event.message_id,
                    "unknown",
                    phone_number_id=event.phone_number_id,
                    account_id=event.account_id,
                    attempts=record.attempts,
                    now_ms=self._clock.now_ms(),
                    error=record.error,
                    reason="meta_outcome_ambiguous",
                ),
                "record_outcome",
            )
            record = earlier or replace(record, state="unknown", reason="meta_outcome_ambiguous")
        status, reason = record.state, record.reason
        await self._announce(
            event,
            status,
            wamid=record.wamid,
            error=record.error if status == "failed" else None,
            reason=reason,
            replayed=True,
            admitted_at=admitted_at,
        )
        for callback in done:
            callback()

    async def _announce(
        self,
        event: SendApproved,
        status: str,
        *,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        replayed: bool,
        admitted_at: float,
    ) -> None:
        change = status_change(
            event, status, self._clock.now_ms(), wamid=wamid, error=error, reason=reason
        )
        await self._retry(partial(self._publish, change), "publish")
        metrics.OUTCOMES.labels(status, "true" if replayed else "false").inc()
        log.info(
            "send_finished",
            message_id=event.message_id,
            phone_number_id=event.phone_number_id,
            outcome=status,
            replayed=replayed,
            error_code=error["code"] if error else None,
            duration_ms=round((self._clock.monotonic() - admitted_at) * 1000, 1),
        )

    def _complete(self, delivery: Delivery) -> None:
        for callback in delivery.done:
            callback()
        self._settle(delivery)

    def _settle(self, delivery: Delivery) -> None:
        if self._pending.get(delivery.message_id) is delivery:
            del self._pending[delivery.message_id]
            _add(self._held, delivery.partition, -1)
        delivery.settled.set()

    def _unpark(self, delivery: Delivery) -> None:
        """The message left its queue."""
        if delivery.parked:
            delivery.parked = False
            _add(self._parked, delivery.partition, -1)

    def _drop(self, delivery: Delivery) -> None:
        """Let go of a message without an outcome: its record will be delivered again."""
        self._settle(delivery)

    # -- plumbing --------------------------------------------------------------------------------

    async def _retry(self, action: Callable[[], Awaitable[Any]], what: str) -> Any:
        return await retry_transient(action, self._config.dependency_retry, what)

    def _spawn(self, coro: Coroutine[Any, Any, Any], track: bool = True) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        if track:
            self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.failure is None:
            # A dependency down past its retry budget, or a bug: the worker stops without
            # committing what is unfinished, and is restarted.
            self.failure = exc
            self.failed.set()
            log.error("sender_task_failed", error=repr(exc))


def _tries(lane: Lane, delivery: Delivery) -> Tries:
    return Tries(
        calls=delivery.calls,
        transient_failures=delivery.transient_failures,
        pair_throttles=delivery.pair_throttles,
        number_throttles=lane.number_throttles,
        unreachable=lane.unreachable,
    )


def _keep_tries(lane: Lane, delivery: Delivery, tries: Tries) -> None:
    delivery.calls = tries.calls
    delivery.transient_failures = tries.transient_failures
    delivery.pair_throttles = tries.pair_throttles
    lane.number_throttles = tries.number_throttles
    lane.unreachable = tries.unreachable


def _add(counts: dict[Hashable, int], key: Hashable, delta: int) -> None:
    """A count per key, without keys at 0 (partitions come and go)."""
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
