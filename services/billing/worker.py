"""billing's orchestration of one input record: decode -> read -> decide -> write -> publish.

Write order per event: ledger entry (unique key) -> balance document (with the applied offset)
-> outputs, awaited. A crash anywhere in between is repaired by the redelivery of the record
(see core.py).

`handle` never raises (cancellation aside): faust acks an event even when its agent raises,
so an escaping exception would skip the record. Transient failures are retried in place with
capped backoff until they succeed; permanent ones go to `<topic>.dlq`; anything else is a bug
and is retried in place too, loudly, so that the record is never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
    entry_key,
    reserve_key,
    settlement_for,
)
from services.billing.publisher import Record
from shared.clock import Clock
from shared.errors import InvalidRequest, PermanentError, TransientError
from shared.kafka import topic_name
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


class LedgerStore(Protocol):
    async def get(self, key: str) -> LedgerEntry | None: ...

    async def add(self, entry: LedgerEntry) -> LedgerEntry | None: ...


class Publisher(Protocol):
    async def publish(self, topic: Topic[Any], event: Any) -> None: ...

    async def dead_letter(self, record: Record, error: BaseException) -> None: ...


class BillingWorker:
    def __init__(self, *, balances: BalanceStore, ledger: LedgerStore, publisher: Publisher,
                 rate_card: RateCard, clock: Clock, topic_prefix: str,
                 low_balance_threshold: int, retry_first_delay_s: float = 0.2,
                 retry_max_delay_s: float = 10.0, dead_letter_limit: int = 50,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._balances = balances
        self._ledger = ledger
        self._publisher = publisher
        self._rate_card = rate_card
        self._clock = clock
        self._threshold = low_balance_threshold
        self._first_delay = retry_first_delay_s
        self._max_delay = retry_max_delay_s
        self._dead_letter_limit = dead_letter_limit
        self._dead_letters_in_a_row = 0
        self._sleep = sleep
        self._topics = {topic_name(t, topic_prefix): t for t in INPUT_TOPICS}

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self._topics)

    async def handle(self, record: Record) -> str:
        """Finish with one record and return its outcome."""
        started = time.perf_counter()
        topic = self._topics.get(record.topic)
        outcome, event = await self._finish(record, topic)
        elapsed = time.perf_counter() - started
        topic_label = topic.name if topic else "unknown"
        metrics.EVENTS.labels(topic=topic_label, outcome=outcome).inc()
        metrics.EVENT_DURATION.observe(elapsed)
        log.info("billing_event_handled", topic=topic_label, partition=record.partition,
                 offset=record.offset, event_id=event.event_id if event else None,
                 account_id=event.account_id if event else None, outcome=outcome,
                 duration_ms=round(elapsed * 1000, 2))
        return outcome

    async def _finish(self, record: Record, topic: Topic[Any] | None
                      ) -> tuple[str, InputEvent | None]:
        delay = self._first_delay
        event: InputEvent | None = None
        while True:
            try:
                event = _decode(record, topic)
                decision = await self._apply(event, Position(record.topic, record.partition,
                                                             record.offset))
                self._dead_letters_in_a_row = 0
                return decision.outcome, event
            except PermanentError as exc:
                if self._dead_letters_in_a_row < self._dead_letter_limit:
                    return await self._dead_letter(record, exc), event
                # Many in a row look like a bad deploy, not bad data: stop, don't drain.
                log.error("dead_letter_limit_reached", topic=record.topic,
                          partition=record.partition, offset=record.offset,
                          error_code=exc.code, retry_in_s=round(delay, 2))
            except TransientError as exc:
                log.warning("transient_error_retrying", topic=record.topic,
                            partition=record.partition, offset=record.offset,
                            error_code=exc.code, error=exc.message, retry_in_s=round(delay, 2))
            except Exception as exc:  # a bug: fail loudly, but never skip the record
                log.exception("unexpected_error_retrying", topic=record.topic,
                              partition=record.partition, offset=record.offset,
                              error=repr(exc), retry_in_s=round(delay, 2))
            await self._sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _apply(self, event: InputEvent, position: Position) -> Decision:
        if isinstance(event, StatusChanged) and settlement_for(event) is None:
            # sent, unknown, ...: nothing to settle, so nothing to read (most status events).
            return Decision("ignored")
        now = self._clock.now_ms()
        balance = (await self._balances.get(event.account_id)
                   or Balance.opening(event.account_id, self._rate_card.currency,
                                      self._threshold))
        existing: LedgerEntry | None = None
        reservation: LedgerEntry | None = None
        if balance.has_applied(position.source, position.offset):
            existing = await self._ledger.get(entry_key(event))
        elif isinstance(event, StatusChanged) and settlement_for(event) is not None:
            reservation = await self._ledger.get(reserve_key(event.message_id))
        decision = decide(balance, event, position, rate_card=self._rate_card, now=now,
                          reservation=reservation, existing=existing)
        for entry in decision.entries:
            stored = await self._ledger.add(entry)
            if stored is not None:  # decided before: a duplicate, or our unfinished attempt
                decision = decide(balance, event, position, rate_card=self._rate_card, now=now,
                                  reservation=reservation, existing=stored)
                break
        if decision.balance is not None:
            await self._balances.save(decision.balance, now)
            _count(decision)
        for output in decision.outputs:
            await self._publisher.publish(output.topic, output.event)
        return decision

    async def _dead_letter(self, record: Record, error: PermanentError) -> str:
        delay = self._first_delay
        while True:
            try:
                await self._publisher.dead_letter(record, error)
                break
            except TransientError as exc:
                log.warning("transient_error_retrying", topic=record.topic,
                            partition=record.partition, offset=record.offset,
                            error_code=exc.code, error=exc.message, retry_in_s=round(delay, 2))
            await self._sleep(delay)
            delay = min(delay * 2, self._max_delay)
        self._dead_letters_in_a_row += 1
        DEAD_LETTERS.labels(service=SERVICE).inc()
        log.warning("record_dead_lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, error_code=error.code, error=error.message)
        return "dead_lettered"


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
        metrics.REJECTIONS.labels(reason="insufficient_credit").inc()
    elif entry.kind == "charge":
        metrics.CHARGES.inc()
        metrics.CHARGED_MICROS.inc(entry.amount)
    elif entry.kind == "release":
        metrics.REFUNDS.inc()
    if any(output.topic is LOW_BALANCE_ALERTED for output in decision.outputs):
        metrics.LOW_BALANCE_ALERTS.inc()
