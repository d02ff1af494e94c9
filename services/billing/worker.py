"""billing's orchestration of input records: decode -> decide -> entries -> outputs + balances.

Records are applied in batches of what is already buffered (`handle_batch`): decisions in memory
in the order the records were read, one insert of all new ledger entries, then the outputs are
published and each touched balance is written once (with the offsets it applied), and only when
both are done is the batch acked. Per event, in this order:

1. ledger entry (unique key) durable;
2. outputs published — they are derived from the entry alone, so they leave one round trip after
   the record was read — and the balance document written while they are in flight (money and
   applied offsets in one write);
3. ack, once both are durable: faust's commit never passes an event whose balance write is
   not durable.

A kill -9 anywhere converges on redelivery (see core.py): before the entry, nothing happened;
after the entry but before the balance (published or not), the redelivered record finds its
entry with an offset the balance has not applied (`entry_exists`: the batch goes one record at a
time), which applies it and publishes again; after the balance but before the outputs or the ack
are durable, the offset is applied and the outputs are published again from the stored entry.
Downstream dedupes by id.

Balances are held in memory while this process owns the account's partitions: billing is the
only writer of `balances` and the topics are keyed by account, so once a balance has been read or
written, the next batch decides from the copy held here instead of reading it (only accounts
never seen cost a read). The copy is always the document as last stored; everything held is
forgotten when partitions are revoked or assigned (app.py), when a batch fails or goes one record
at a time (so that path reads the stored truth), and a batch that started before such a reset
does not put its balances back. Reserve and settle entries are held too (bounded): entries
never change.

A status whose settlement is already written (a priced `read` after its priced `delivered`, as
Meta sends them; a duplicate; a priced delivery after a release, charged late) is decided in the
batch from that entry, as the one-record path decides it: the entry decided earlier in the same
batch, held when the batch planned its reads (`core.plan_ledger_reads` pins it: those reads
refill the bounded memory and may push the batch's own entries out), or read with the batch's
reservations (one `Ledger.get_many`; which settlements are read is `plan_ledger_reads`'s
rule, in the same pass). One not known there still finds its key taken at the insert and sends
the batch one record at a time (`entry_exists`), which decides it the same way; so does a known
entry whose offset the balance has not applied (an unfinished attempt).

Each account's low-balance threshold and cap on messages in flight are its own
(`accounts.low_balance_threshold`, `accounts.max_in_flight`): read with the account's balance
the first time, then again when they are older than `threshold_refresh_s` (read concurrently
with the batch's other reads, so a batch waits for them at most once per account per refresh
interval), and applied to the balance before deciding (core.with_threshold,
core.with_in_flight_limit). An account without its own gets `low_balance_threshold` /
`max_in_flight`, the defaults.

Anything unusual in a batch (a redelivery, an entry written before and not known to the batch,
an unfinished attempt, an undecodable record, any failure) sends the whole batch through the
one-record path (`handle`), which converges from whatever the batch had written.

`handle` never raises (cancellation aside): faust acks an event even when its agent raises,
so an escaping exception would skip the record. The rule of every consumer (shared/kafka.py):
transient failures are retried in place with capped backoff until they succeed; permanent ones
go to `<topic>.dlq` at once; anything else (a bug, a shape nobody foresaw) is retried
`unexpected_attempts` times and then goes to `<topic>.dlq` with its traceback, so that the
partition moves on. Many dead letters in a row (`dead_letter_limit`) look like a bad deploy: the
record is then held and retried in place (the partition stops; nothing drains to the DLQ).

A record given up after a bug must leave no money half-moved: if its own ledger entry was
written and its balance never applied it (the bug struck between the two writes), that entry
is removed before the dead letter is written — as if the record had never been read — so the
ledger and the balances still agree, and replaying the dead letter later applies it normally.
(Outputs a batch published before such a failure stay published: downstream dedupes by id.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from services.billing import metrics
from services.billing.core import (
    Balance,
    Decision,
    InputEvent,
    LedgerEntry,
    Position,
    decide,
    plan_ledger_reads,
    reserve_key,
    settlement_for,
    stored_entry_keys,
    with_in_flight_limit,
    with_threshold,
)
from services.billing.publisher import Record
from shared.clock import Clock
from shared.errors import InvalidRequest, PermanentError, ServiceError, TransientError
from shared.kafka import UNEXPECTED, Failure, topic_name
from shared.logging import get_logger
from shared.messages import (
    LOW_BALANCE_ALERTED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TOPUP_REQUESTED,
    StatusChanged,
    Topic,
)
from shared.metrics import DEAD_LETTERS
from shared.pricing import RateCard

log = get_logger(__name__)

SERVICE = "billing"
INPUT_TOPICS: tuple[Topic[Any], ...] = (SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED)


class BalanceStore(Protocol):
    async def get(self, account_id: str) -> Balance | None: ...

    async def save(self, balance: Balance, now: int) -> None: ...

    async def save_all(self, balances: Sequence[Balance], now: int) -> None: ...


class LedgerStore(Protocol):
    async def get(self, key: str) -> LedgerEntry | None: ...

    async def add(self, entry: LedgerEntry) -> LedgerEntry | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, LedgerEntry]: ...

    async def add_all(self, entries: Sequence[LedgerEntry]) -> set[str]: ...

    async def remove(self, key: str) -> None: ...


@dataclass(frozen=True)
class AccountSettings:
    """What an account set for itself (None: the default applies)."""

    low_balance_threshold: int | None = None
    max_in_flight: int | None = None


class AccountSettingsSource(Protocol):
    async def settings(self, account_ids: Sequence[str]) -> dict[str, AccountSettings]:
        """Each account's own settings (accounts unknown here are left out)."""
        ...


class Publisher(Protocol):
    async def publish(self, topic: Topic[Any], event: Any) -> None: ...

    async def publish_all(self, events: Sequence[tuple[Topic[Any], Any]]) -> None: ...

    async def dead_letter(self, record: Record, failure: Failure) -> None: ...


class BillingWorker:
    def __init__(
        self,
        *,
        balances: BalanceStore,
        ledger: LedgerStore,
        publisher: Publisher,
        rate_card: RateCard,
        clock: Clock,
        topic_prefix: str,
        low_balance_threshold: int,
        retry_first_delay_s: float = 0.2,
        retry_max_delay_s: float = 10.0,
        dead_letter_limit: int = 50,
        unexpected_attempts: int = 3,
        reservation_cache_size: int = 10_000,
        balance_cache_size: int = 10_000,
        thresholds: AccountSettingsSource | None = None,
        threshold_refresh_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        top_up_key: bytes = b"",
        max_in_flight: int = 0,
    ) -> None:
        """`thresholds`: where each account's own settings are read (its low-balance
        threshold and cap on messages in flight); None: the defaults for all.
        `max_in_flight`: the default cap on an account's open reservations (0: none)."""
        self._balances = balances
        self._ledger = ledger
        self._publisher = publisher
        self._rate_card = rate_card
        self._clock = clock
        self._threshold = low_balance_threshold
        self._max_in_flight = max_in_flight
        # Top-ups are applied only when signed under this key (the admin tool's).
        self._top_up_key = top_up_key
        self._first_delay = retry_first_delay_s
        self._max_delay = retry_max_delay_s
        self._dead_letter_limit = dead_letter_limit
        self._unexpected_attempts = unexpected_attempts
        self._dead_letters_in_a_row = 0
        self._sleep = sleep
        self._topics = {topic_name(t, topic_prefix): t for t in INPUT_TOPICS}
        # Reserve and settle entries this process wrote or read: ledger entries never change,
        # so a settlement finds its reservation here, and a second priced status (a `read`
        # after its `delivered`) the settlement already written, without a round trip
        # (bounded, oldest out first).
        self._entries: OrderedDict[str, LedgerEntry] = OrderedDict()
        self._entry_cache_size = reservation_cache_size
        # Balances as last stored, while this process owns their partitions (bounded, least
        # recently used out first); `_generation` counts the resets (see `forget_balances`).
        self._held: OrderedDict[str, Balance] = OrderedDict()
        self._balance_cache_size = balance_cache_size
        self._generation = 0
        # Each account's (threshold, cap on messages in flight) and when they were read
        # (monotonic s); no source: the defaults for all.
        self._threshold_source = thresholds
        self._threshold_refresh_s = threshold_refresh_s
        self._thresholds: OrderedDict[str, tuple[int, int, float]] = OrderedDict()

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self._topics)

    def forget_balances(self) -> None:
        """Forget every balance held in memory: the next batch reads the stored documents.

        Called when partitions are revoked or assigned (another process may own an account from
        now on, or have written it meanwhile) and whenever a batch does not finish normally. A
        batch in flight across the call does not put what it read or wrote back."""
        self._held.clear()
        self._generation += 1

    def held_balance(self, account_id: str) -> Balance | None:
        """The balance held in memory for `account_id`, if any (for tests and diagnostics)."""
        return self._held.get(account_id)

    async def handle_batch(self, records: Sequence[Record]) -> list[str]:
        """Finish with records read in this order and return their outcomes, in the same order.

        Never raises (cancellation aside): a batch the fast path cannot finish goes through
        `handle`, one record at a time, from whatever state the fast path left."""
        if not records:
            return []
        started = time.perf_counter()
        metrics.BATCH_SIZE.observe(len(records))
        try:
            applied = await self._apply_batch(records)
        except asyncio.CancelledError:
            self.forget_balances()  # what was written is not known here
            raise
        except _OneByOne as exc:
            self.forget_balances()  # the one-record path reads the stored truth
            metrics.BATCH_FALLBACKS.labels(reason=exc.reason).inc()
            log.info("billing_batch_one_by_one", records=len(records), reason=exc.reason)
            return [await self.handle(record) for record in records]
        except Exception as exc:  # transient or not: the one-record path retries or DLQs it
            self.forget_balances()
            metrics.BATCH_FALLBACKS.labels(reason="error").inc()
            log.warning(
                "billing_batch_one_by_one", records=len(records), reason="error", error=repr(exc)
            )
            return [await self.handle(record) for record in records]
        self._dead_letters_in_a_row = 0
        elapsed = time.perf_counter() - started
        outcomes = []
        for item in applied:
            record, event, outcome = item.record, item.event, item.outcome
            outcomes.append(outcome)
            with _never_raises("billing_event_report_failed"):
                metrics.EVENTS.labels(topic=item.topic.name, outcome=outcome).inc()
                metrics.EVENT_DURATION.observe(elapsed)
                log.info(
                    "billing_event_handled",
                    topic=item.topic.name,
                    partition=record.partition,
                    offset=record.offset,
                    event_id=event.event_id,
                    account_id=event.account_id,
                    outcome=outcome,
                    duration_ms=round(elapsed * 1000, 2),
                    batch=len(records),
                )
        return outcomes

    async def _apply_batch(self, records: Sequence[Record]) -> list[_Applied]:
        items: list[_Applied] = []
        for record in records:
            topic = self._topics.get(record.topic)
            try:
                event = _decode(record, topic)
            except PermanentError:
                raise _OneByOne("undecodable") from None
            assert topic is not None
            items.append(
                _Applied(
                    record, topic, event, Position(record.topic, record.partition, record.offset)
                )
            )
        moving = [i for i in items if not _settles_nothing(i.event)]
        if not moving:
            return items  # each one's outcome is "ignored"
        generation = self._generation
        held = self._held
        accounts = list(dict.fromkeys(i.event.account_id for i in moving))
        unread = [a for a in accounts if a not in held]
        # Pinned before the reads below are remembered: remembering them pushes the oldest
        # held entries out of the bounded memory, and those may be this batch's own.
        wanted, pinned = plan_ledger_reads((i.event for i in moving), self._entries)
        stale = self._stale_thresholds(accounts)
        balances: dict[str, Balance] = {a: held[a] for a in accounts if a in held}
        known: dict[str, LedgerEntry] = {}  # entries read for this batch, by key
        if unread or wanted or stale:
            found = await _all(
                *(self._balances.get(a) for a in unread),
                self._ledger.get_many(wanted),
                self._refresh_thresholds(stale),
            )
            for account, balance in zip(unread, found[: len(unread)], strict=True):
                balances[account] = balance or Balance.opening(
                    account, self._rate_card.currency, self._threshold_of(account)
                )
            known = found[len(unread)]
            for entry in known.values():
                self._remember(entry)
        balances = {a: self._with_settings(b) for a, b in balances.items()}
        now = self._clock.now_ms()
        decided: dict[str, LedgerEntry] = {}  # this batch's new entries, by key

        def known_entry(key: str) -> LedgerEntry | None:
            """Decided earlier in this batch, held when the batch planned its reads, or read
            for it."""
            return decided.get(key) or pinned.get(key) or known.get(key)

        touched: dict[str, Balance] = {}
        decisions: list[Decision] = []
        outputs: list[tuple[Topic[Any], Any]] = []
        for item in items:
            event, position = item.event, item.position
            if _settles_nothing(event):
                continue  # its outcome stays "ignored"
            balance = touched.get(event.account_id, balances[event.account_id])
            if balance.has_applied(position.source, position.offset):
                raise _OneByOne("redelivered")  # its outputs come from the stored entry
            reservation = None
            if isinstance(event, StatusChanged):
                key = reserve_key(event.message_id)
                reservation = known_entry(key)
            decide_given = self._decider(balance, event, position, now, reservation)
            try:
                decision = decide_given()
                # As the one-record path does with the entry it finds stored under the key
                # (`_apply`), with the entries known here instead: decided earlier in this
                # batch, held, or read above. A settlement written before is then decided
                # here (a duplicate, or a late charge after a release), with no fallback.
                tried: set[str] = set()
                while decision.entries and decision.entries[0].key not in tried:
                    key = decision.entries[0].key
                    tried.add(key)
                    stored = known_entry(key)
                    if stored is None:
                        break
                    decision = decide_given(existing=stored)
            except PermanentError:
                raise _OneByOne("permanent") from None  # dead-lettered there, in order
            if decision.applied is not None and not decision.entries:
                # A stored entry whose offset the balance has not applied: an attempt that
                # stopped between its entry and its balance, finished from the stored truth.
                raise _OneByOne("entry_exists")
            for entry in decision.entries:
                if entry.key in decided:
                    raise _OneByOne("duplicate")  # the same request twice in one batch
                decided[entry.key] = entry
            if decision.balance is not None:
                touched[event.account_id] = decision.balance
            outputs.extend((output.topic, output.event) for output in decision.outputs)
            decisions.append(decision)
            item.outcome = decision.outcome
        if decided:
            taken = await self._ledger.add_all(list(decided.values()))
            if taken:
                # Written before: a duplicate at a new offset, or our own unfinished attempt.
                raise _OneByOne("entry_exists")
        for entry in decided.values():
            if entry.kind != "topup":  # a top-up's entry is never looked up again
                self._remember(entry)
        # The outputs depend on the entries alone, which are durable now: they go first, and
        # the balances are written while they are in flight. The batch is acked only once both
        # are done (see the module's docstring for a crash in between).
        await _all(
            self._publisher.publish_all(outputs),
            self._balances.save_all(list(touched.values()), now),
        )
        if generation == self._generation:  # no reset meanwhile: these are the stored truth
            self._hold({**balances, **touched})
        for decision in decisions:
            _count(decision)
        return items

    def _decider(
        self,
        balance: Balance,
        event: InputEvent,
        position: Position,
        now: int,
        reservation: LedgerEntry | None,
    ) -> Callable[..., Decision]:
        """`decide` for this event with everything but `existing`, which both paths look up
        and pass again until the entry's key is free (or known to be this event's)."""
        return functools.partial(
            decide,
            balance,
            event,
            position,
            rate_card=self._rate_card,
            now=now,
            reservation=reservation,
            top_up_key=self._top_up_key,
        )

    def _hold(self, balances: dict[str, Balance]) -> None:
        held = self._held
        for account, balance in balances.items():
            held[account] = balance
            held.move_to_end(account)
        while len(held) > self._balance_cache_size:
            held.popitem(last=False)

    def _stale_thresholds(self, accounts: Sequence[str]) -> list[str]:
        """The accounts whose threshold was never read, or not for `threshold_refresh_s`."""
        if self._threshold_source is None:
            return []
        now = self._clock.monotonic()
        return [
            a
            for a in accounts
            if a not in self._thresholds
            or now - self._thresholds[a][2] >= self._threshold_refresh_s
        ]

    async def _refresh_thresholds(self, accounts: Sequence[str]) -> None:
        if not accounts or self._threshold_source is None:
            return
        found = await self._threshold_source.settings(accounts)
        now = self._clock.monotonic()
        for account in accounts:
            own = found.get(account) or AccountSettings()
            threshold = (
                self._threshold if own.low_balance_threshold is None else own.low_balance_threshold
            )
            cap = self._max_in_flight if own.max_in_flight is None else own.max_in_flight
            self._thresholds[account] = (threshold, cap, now)
            self._thresholds.move_to_end(account)
        while len(self._thresholds) > self._balance_cache_size:
            self._thresholds.popitem(last=False)

    def _threshold_of(self, account_id: str) -> int:
        known = self._thresholds.get(account_id)
        return self._threshold if known is None else known[0]

    def _in_flight_limit_of(self, account_id: str) -> int:
        known = self._thresholds.get(account_id)
        return self._max_in_flight if known is None else known[1]

    def _with_settings(self, balance: Balance) -> Balance:
        """The balance under its account's current threshold and cap."""
        account = balance.account_id
        return with_in_flight_limit(
            with_threshold(balance, self._threshold_of(account)), self._in_flight_limit_of(account)
        )

    def _remember(self, entry: LedgerEntry) -> None:
        cache = self._entries
        cache[entry.key] = entry
        cache.move_to_end(entry.key)
        while len(cache) > self._entry_cache_size:
            cache.popitem(last=False)

    async def handle(self, record: Record) -> str:
        """Finish with one record and return its outcome."""
        started = time.perf_counter()
        topic = self._topics.get(record.topic)
        outcome, event = await self._finish(record, topic)
        elapsed = time.perf_counter() - started
        topic_label = topic.name if topic else "unknown"
        with _never_raises("billing_event_report_failed"):
            metrics.EVENTS.labels(topic=topic_label, outcome=outcome).inc()
            metrics.EVENT_DURATION.observe(elapsed)
            log.info(
                "billing_event_handled",
                topic=topic_label,
                partition=record.partition,
                offset=record.offset,
                event_id=getattr(event, "event_id", None),
                account_id=getattr(event, "account_id", None),
                outcome=outcome,
                duration_ms=round(elapsed * 1000, 2),
            )
        return outcome

    async def _finish(
        self, record: Record, topic: Topic[Any] | None
    ) -> tuple[str, InputEvent | None]:
        """Apply the record, or dead-letter it (never skip it silently): see the module's
        docstring for the rule."""
        delay = self._first_delay
        event: InputEvent | None = None
        unexpected = 0
        position = Position(record.topic, record.partition, record.offset)
        while True:
            failure: Failure | None = None
            try:
                event = _decode(record, topic)
                decision = await self._apply(event, position)
                self._dead_letters_in_a_row = 0
                return decision.outcome, event
            except PermanentError as exc:
                failure = Failure(exc, unexpected + 1)
            except TransientError as exc:
                log.warning(
                    "transient_error_retrying",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error_code=exc.code,
                    error=exc.message,
                    retry_in_s=round(delay, 2),
                )
            except Exception as exc:  # a bug, or a shape nobody foresaw
                unexpected += 1
                self.forget_balances()  # what it left is read again from the database
                if unexpected >= self._unexpected_attempts:
                    failure = Failure(exc, unexpected)
                else:
                    log.warning(
                        "unexpected_error_retrying",
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        attempt=unexpected,
                        error=repr(exc),
                        retry_in_s=round(delay, 2),
                    )
            if failure is not None:
                if self._dead_letters_in_a_row < self._dead_letter_limit:
                    if failure.reason == UNEXPECTED:
                        await self._undo_unapplied(event, position)
                    return await self._dead_letter(record, failure), event
                # Many in a row look like a bad deploy, not bad data: stop, don't drain.
                log.error(
                    "dead_letter_limit_reached",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=repr(failure.error),
                    retry_in_s=round(delay, 2),
                )
            await self._sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _undo_unapplied(self, event: InputEvent | None, position: Position) -> None:
        """Before a record is given up after a bug: remove the ledger entry it wrote itself if
        its balance never applied it, so that no money is half-moved (see the module's
        docstring). Dependency failures are retried like any; a further bug is logged (the
        reconciler's drift check then shows what is left)."""
        if event is None or _settles_nothing(event):
            return
        delay = self._first_delay
        while True:
            try:
                entry = await self._entry_of(event, position)
                if entry is None or (entry.source, entry.source_offset) != (
                    position.source,
                    position.offset,
                ):
                    return
                key = entry.key
                balance = await self._balances.get(event.account_id)
                if balance is not None and balance.has_applied(position.source, position.offset):
                    return
                await self._ledger.remove(key)
                self._entries.pop(key, None)
                self.forget_balances()
                log.warning(
                    "unapplied_entry_removed",
                    entry=key,
                    source=position.source,
                    offset=position.offset,
                )
                return
            except TransientError as exc:
                log.warning(
                    "transient_error_retrying",
                    what="undo_unapplied",
                    error_code=exc.code,
                    error=exc.message,
                    retry_in_s=round(delay, 2),
                )
            except Exception as exc:
                log.error(
                    "unapplied_entry_check_failed",
                    source=position.source,
                    offset=position.offset,
                    exc_info=exc,
                )
                return
            await self._sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _apply(self, event: InputEvent, position: Position) -> Decision:
        if _settles_nothing(event):
            return Decision("ignored")  # nothing to settle, so nothing to read
        # The stored document is the truth here; what this path writes is not held.
        self._held.pop(event.account_id, None)
        now = self._clock.now_ms()
        await self._refresh_thresholds(self._stale_thresholds([event.account_id]))
        threshold = self._threshold_of(event.account_id)
        balance = self._with_settings(
            await self._balances.get(event.account_id)
            or Balance.opening(event.account_id, self._rate_card.currency, threshold)
        )
        existing: LedgerEntry | None = None
        reservation: LedgerEntry | None = None
        if balance.has_applied(position.source, position.offset):
            existing = await self._entry_of(event, position)
        elif isinstance(event, StatusChanged) and settlement_for(event) is not None:
            key = reserve_key(event.message_id)
            reservation = self._entries.get(key) or await self._ledger.get(key)
            if reservation is not None:
                self._remember(reservation)
        decide_given = self._decider(balance, event, position, now, reservation)
        decision = decide_given(existing=existing)
        # An entry whose key is taken was decided before: a duplicate, or our unfinished
        # attempt; or, for a priced status, a release before it, and the decision is then a
        # late charge under its own key, which may be taken too (at most twice in all).
        tried: set[str] = set()
        while decision.entries and decision.entries[0].key not in tried:
            entry = decision.entries[0]
            tried.add(entry.key)
            stored = await self._ledger.add(entry)
            if stored is None:
                break
            decision = decide_given(existing=stored)
        if decision.balance is not None:
            await self._balances.save(decision.balance, now)
            _count(decision)
        for output in decision.outputs:
            await self._publisher.publish(output.topic, output.event)
        return decision

    async def _entry_of(self, event: InputEvent, position: Position) -> LedgerEntry | None:
        """The stored entry an applied record wrote (its outputs are derived from it): under
        one of its keys, the one written at its position; else the first one stored."""
        found = [e for e in await _all(*map(self._ledger.get, stored_entry_keys(event))) if e]
        here = (position.source, position.offset)
        mine = [e for e in found if (e.source, e.source_offset) == here]
        return (mine or found or [None])[0]

    async def _dead_letter(self, record: Record, failure: Failure) -> str:
        """Write the dead letter and return once it is durable (then the record may be acked).
        A write that fails is retried, whatever the failure: the record is never skipped
        without its dead letter."""
        delay = self._first_delay
        while True:
            try:
                await self._publisher.dead_letter(record, failure)
                break
            except TransientError as exc:
                log.warning(
                    "transient_error_retrying",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error_code=exc.code,
                    error=exc.message,
                    retry_in_s=round(delay, 2),
                )
            except Exception as exc:
                log.error(
                    "dead_letter_failed_retrying",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    retry_in_s=round(delay, 2),
                    exc_info=exc,
                )
            await self._sleep(delay)
            delay = min(delay * 2, self._max_delay)
        self._dead_letters_in_a_row += 1
        error = failure.error
        with _never_raises("billing_event_report_failed"):
            DEAD_LETTERS.labels(service=SERVICE, reason=failure.reason).inc()
            fields = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": failure.reason,
                "attempts": failure.attempts,
                "error_type": type(error).__name__,
            }
            if isinstance(error, ServiceError):
                log.warning(
                    "record_dead_lettered", error_code=error.code, error=error.message, **fields
                )
            else:
                log.error("record_dead_lettered", exc_info=error, **fields)
        return "dead_lettered"


@contextlib.contextmanager
def _never_raises(what: str) -> Iterator[None]:
    """For reporting (metrics, logs) after an effect: a failure there is logged, never
    raised — the record is finished, and faust would skip one whose agent raises."""
    try:
        yield
    except Exception as exc:
        with contextlib.suppress(Exception):
            log.error(what, error=repr(exc))


async def _all(*steps: Awaitable[Any]) -> list[Any]:
    """Run `steps` concurrently and return once every one has finished (unlike a bare gather,
    a failure does not leave the others running behind the one-record path); the first
    failure is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class _OneByOne(Exception):
    """The batch needs the one-record path (see `handle_batch`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Applied:
    record: Record
    topic: Topic[Any]
    event: InputEvent
    position: Position
    outcome: str = "ignored"


def _settles_nothing(event: InputEvent) -> bool:
    """A status that moves no money (sent, unknown, ...): most status events."""
    return isinstance(event, StatusChanged) and settlement_for(event) is None


def _decode(record: Record, topic: Topic[Any] | None) -> InputEvent:
    if topic is None:
        raise InvalidRequest(f"billing does not read {record.topic}", code="unexpected_topic")
    if record.value is None:
        raise InvalidRequest("a record without a value", code="undecodable_event")
    try:
        event: InputEvent = topic.decode(record.value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest(f"{topic.name}: {exc}", code="undecodable_event") from exc
    return event


def _count(decision: Decision) -> None:
    """Count what a balance write made happen (once: a replay writes nothing)."""
    entry = decision.applied
    if entry is None:
        return
    if entry.kind == "reserve":
        metrics.RESERVATIONS.inc()
    elif entry.kind == "reject":
        metrics.REJECTIONS.labels(reason=entry.reason or "insufficient_credit").inc()
    elif entry.kind == "charge":
        metrics.CHARGES.inc()
        metrics.CHARGED_MICROS.inc(entry.amount)
    elif entry.kind == "release":
        metrics.REFUNDS.inc()
    elif entry.kind == "topup":
        metrics.TOPUPS.inc()
    if any(output.topic is LOW_BALANCE_ALERTED for output in decision.outputs):
        metrics.LOW_BALANCE_ALERTS.inc()
