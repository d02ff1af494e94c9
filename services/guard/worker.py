"""guard's consumer: the platform's sends, statuses, number quality flags and operators'
releases -> each account's windows (services/guard/core.py) -> holds.

One consumer group reads `messages.send-requested.v1`, `messages.status-changed.v1` and
`accounts.release-requested.v1` (all keyed by account, same partition count: the range
assignor gives one process the same partitions of each, so an account's windows have one
owner) and `phone-numbers.quality-changed.v1` (keyed by number: a flag is judged from status's
number states, which any process may read).

guard runs on the shared pipeline (shared/pipeline.py): records are decoded as they arrive
(one that can never be read goes to the DLQ), batched by count and by time, and a batch is
applied as a whole: each account's windows loaded once (from `guard_states`), new recipients
looked up and stored, records applied in order (one already applied, by the position the state
recorded, is skipped), releases written, the rules evaluated, holds written and published,
then each touched account's windows saved with the positions applied — one write per account
per batch — and only then the offsets committed (by the pipeline, after the effect). Windows
are therefore durable, not recomputed: a restart reloads them and a replayed record is
recognised, so nothing is counted twice or lost. A hold that fired before a crash fires again
from the same evidence with the same event id (notify and the holds document take it as the
same).

A dependency outage is retried (then the process stops without committing and is restarted);
a batch that fails for any other reason is handled again one record at a time (the pipeline's
rule), so that the record at fault goes to the dead-letter topic and the partition moves on. A
failed attempt forgets the windows it half-applied: the next reads them again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from services.guard import core, metrics
from services.guard.repository import GuardStore
from shared import holds
from shared.clock import Clock
from shared.errors import PermanentError, TransientError
from shared.kafka import (
    Failure,
    KafkaConfig,
    make_consumer,
    publish_all,
    report_lag_forever,
    topic_name,
)
from shared.logging import get_logger
from shared.messages import (
    ACCOUNT_HOLD_CHANGED,
    ACCOUNT_RELEASE_REQUESTED,
    NUMBER_QUALITY_CHANGED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    AccountHoldChanged,
    AccountReleaseRequested,
    NumberQualityChanged,
    SendRequested,
    Topic,
    topics_read_by,
)
from shared.pipeline import BatchPolicy, Item, Pipeline

log = get_logger(__name__)

SERVICE = "guard"
Record = ConsumerRecord[bytes, bytes]
Decoded = tuple[str, Any]  # (kind, event)
KINDS: dict[str, Topic[Any]] = {
    "send_requested": SEND_REQUESTED,
    "status_changed": STATUS_CHANGED,
    "quality_changed": NUMBER_QUALITY_CHANGED,
    "release_requested": ACCOUNT_RELEASE_REQUESTED,
}


def group(prefix: str) -> str:
    return f"{prefix}guard"


class HoldPublisher(Protocol):
    async def publish(self, events: Sequence[AccountHoldChanged]) -> None: ...


class KafkaHoldPublisher:
    def __init__(self, producer: AIOKafkaProducer, prefix: str) -> None:
        self._producer = producer
        self._prefix = prefix

    async def publish(self, events: Sequence[AccountHoldChanged]) -> None:
        await publish_all(
            self._producer,
            [(ACCOUNT_HOLD_CHANGED, e) for e in events],
            self._prefix,
            timeout_s=30.0,
        )


@dataclass
class _Batch:
    """One batch's decoded records and what they call for."""

    items: list[tuple[Record, str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    releases: list[AccountReleaseRequested] = field(default_factory=list)
    flagged: dict[str, NumberQualityChanged] = field(default_factory=dict)


class Guard:
    def __init__(
        self,
        store: GuardStore,
        publisher: HoldPublisher,
        clock: Clock,
        rules: core.Rules,
        recipient_key: Callable[[str], str],
        *,
        prefix: str = "",
        overrides_cache_seconds: float = 60.0,
        remembered_recipients: int = 200_000,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._rules = rules
        self._recipient_key = recipient_key
        self._overrides_seconds = overrides_cache_seconds
        self._overrides: OrderedDict[str, tuple[float, core.Rules]] = OrderedDict()
        self._accounts: dict[str, core.Account] = {}
        # recipient ids stored already -> the send that found each new
        self._known: OrderedDict[str, str] = OrderedDict()
        self._known_capacity = remembered_recipients
        self._kinds = {topic_name(topic, prefix): kind for kind, topic in KINDS.items()}

    def forget(self) -> None:
        """After a rebalance (or a failed batch): windows are read again from the database."""
        self._accounts.clear()

    # --- a batch -----------------------------------------------------------------------------

    def decode(self, record: Record) -> Decoded:
        """The pipeline's decode step: a record of another topic or shape raises
        PermanentError (it goes to the DLQ)."""
        kind = self._kinds.get(record.topic)
        if kind is None:
            raise PermanentError(f"guard does not read {record.topic}", code="unknown_topic")
        return kind, KINDS[kind].decode_record(record.value)

    async def handle_batch(self, records: list[Record]) -> list[tuple[Record, Failure]]:
        """Decode and apply records outside the pipeline (tests, tools): the ones that can
        never be decoded are returned (for the DLQ), the others applied."""
        items: list[Item[Decoded]] = []
        failures: list[tuple[Record, Failure]] = []
        for record in records:
            try:
                items.append(Item(record, self.decode(record)))
            except PermanentError as exc:
                failures.append((record, Failure(exc, 1)))
        await self.apply(items)
        return failures

    async def apply(self, items: Sequence[Item[Decoded]]) -> None:
        """The pipeline's effect: apply a batch, durably. Any failure (an outage, a bug)
        leaves nothing half-remembered: the windows are read again by the next attempt."""
        started = time.perf_counter()
        try:
            batch = _Batch([(item.record, *item.value) for item in items])
            await self._load(
                [acc for _, kind, e in batch.items if (acc := _account_of(kind, e)) is not None]
            )
            new = await self._new_recipients(batch)
            self._apply(batch, new)
            await self._release(batch)
            await self._evaluate(batch)
            await self._quality(batch)
            await self._save(batch)
        except Exception:
            self.forget()
            raise
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)

    async def _load(self, account_ids: list[str]) -> None:
        missing = sorted(set(account_ids) - set(self._accounts))
        if not missing:
            return
        docs = await self._store.states(missing)
        for account_id in missing:
            self._accounts[account_id] = core.account_from_doc(account_id, docs.get(account_id))

    def _recipient_id(self, event: SendRequested) -> str:
        return f"{event.account_id}:{self._recipient_key(event.recipient)}"

    async def _new_recipients(self, batch: _Batch) -> dict[str, bool]:
        """Whether each send (by message id) goes to a recipient the account never sent to.
        The first send's message id is stored with the recipient, so a replayed send is still
        known as the one that found it new."""
        sends = [
            e
            for record, kind, e in batch.items
            if kind == "send_requested"
            and not self._accounts[e.account_id].seen(_position(record), record.offset)
        ]
        ids = {e.message_id: self._recipient_id(e) for e in sends}
        unknown = sorted({i for i in ids.values() if i not in self._known})
        found = await self._store.recipients(unknown) if unknown else {}
        new: dict[str, bool] = {}
        first: dict[str, dict[str, Any]] = {}
        finder = {rid: str(doc.get("message_id") or "") for rid, doc in found.items()}
        for event in sends:
            rid = ids[event.message_id]
            known = finder.get(rid, self._known.get(rid))
            if known is not None:
                new[event.message_id] = known == event.message_id
            else:
                new[event.message_id] = True
                finder[rid] = event.message_id
                first[rid] = {
                    "_id": rid,
                    "account_id": event.account_id,
                    "first_seen": event.accepted_at,
                    "message_id": event.message_id,
                }
        await self._store.insert_recipients(list(first.values()))
        for rid in ids.values():
            self._known[rid] = finder.get(rid, self._known.get(rid, ""))
            self._known.move_to_end(rid)
        while len(self._known) > self._known_capacity:
            self._known.popitem(last=False)
        return new

    def _apply(self, batch: _Batch, new: dict[str, bool]) -> None:
        for record, kind, event in batch.items:
            if kind == "quality_changed":
                if event.event == core.FLAGGED and event.account_id:
                    batch.flagged[event.account_id] = event
                    metrics.RECORDS.labels(kind, "applied").inc()
                else:
                    metrics.RECORDS.labels(kind, "skipped").inc()
                continue
            account = self._accounts[_account_of(kind, event) or ""]
            position = _position(record)
            if account.seen(position, record.offset):
                metrics.RECORDS.labels(kind, "replayed").inc()
                continue
            if kind == "send_requested":
                is_new = new.get(event.message_id, False)
                account.sent(event, is_new)
                if is_new:
                    metrics.NEW_RECIPIENTS.inc()
            elif kind == "status_changed":
                account.status(event)
            else:
                account.release(event.requested_at)
                batch.releases.append(event)
            account.mark(position, record.offset)
            batch.touched.add(account.account_id)
            metrics.RECORDS.labels(kind, "applied").inc()

    # --- holds -------------------------------------------------------------------------------

    async def _release(self, batch: _Batch) -> None:
        """Write each release (after every hold it releases) and publish the state after it."""
        events = []
        for release in batch.releases:
            account = self._accounts[release.account_id]
            now = self._clock.now_ms()
            fields = core.release_fields(
                release.account_id,
                await self._store.hold(release.account_id),
                release.requested_at,
                release.operator,
                release.reason,
                now,
            )
            # (its windows were cleared when the record was applied, in order with the rest)
            account.released_at = max(account.released_at, int(fields["released_at"]))
            doc = await self._store.set_hold(release.account_id, fields)
            active = list(holds.active_holds(doc))
            events.append(
                core.released_event(
                    release.account_id,
                    release.event_id,
                    active,
                    release.reason,
                    release.operator,
                    int(fields["released_at"]),
                )
            )
            metrics.RELEASES.inc()
            log.warning(
                "account_released",
                account_id=release.account_id,
                operator=release.operator,
                still_held=bool(active),
            )
        if events:
            await self._publisher.publish(events)

    async def _evaluate(self, batch: _Batch) -> None:
        wall_now = self._clock.now_ms()
        for account_id in sorted(batch.touched):
            account = self._accounts[account_id]
            for fired in core.evaluate(account, await self._account_rules(account_id), wall_now):
                await self._hold(fired)
                account.fired[fired.rule] = fired.at

    async def _quality(self, batch: _Batch) -> None:
        """A number flagged (quality RED): count the account's flagged numbers."""
        wall_now = self._clock.now_ms()
        for account_id in sorted(batch.flagged):
            doc = await self._store.hold(account_id)
            if "quality_red" in holds.active_holds(doc):
                continue
            rule = (await self._account_rules(account_id)).quality_red
            fired = core.quality_red(
                account_id,
                await self._store.flagged_numbers(account_id),
                rule,
                int((doc or {}).get("released_at") or 0),
                wall_now,
            )
            if fired is not None:
                await self._hold(fired)

    async def _hold(self, fired: core.Fired) -> None:
        doc = await self._store.set_hold(
            fired.account_id, core.hold_fields(fired, self._clock.now_ms())
        )
        await self._publisher.publish([core.held_event(fired, list(holds.active_holds(doc)))])
        metrics.HOLDS.labels(fired.rule).inc()
        log.warning(
            "account_held", account_id=fired.account_id, rule=fired.rule, reason=fired.reason
        )

    async def _account_rules(self, account_id: str) -> core.Rules:
        now = self._clock.monotonic()
        cached = self._overrides.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        rules = self._rules.with_overrides(await self._store.rule_overrides(account_id))
        self._overrides[account_id] = (now + self._overrides_seconds, rules)
        self._overrides.move_to_end(account_id)
        while len(self._overrides) > 10_000:
            self._overrides.popitem(last=False)
        return rules

    async def _save(self, batch: _Batch) -> None:
        now = self._clock.now_ms()
        keep = self._rules.longest_minute_window_ms
        docs = []
        for account_id in sorted(batch.touched):
            account = self._accounts[account_id]
            account.prune(
                max(keep, (await self._account_rules(account_id)).longest_minute_window_ms)
            )
            docs.append(core.state_doc(account, now))
        await asyncio.gather(*(self._store.save_state(doc) for doc in docs))


def _account_of(kind: str, event: Any) -> str | None:
    if kind == "quality_changed":
        return None
    account_id: str = event.account_id
    return account_id


def _position(record: Record) -> str:
    return f"{record.topic}:{record.partition}"


# --- the consumer ---------------------------------------------------------------------------


async def run_consumer(
    kafka: KafkaConfig,
    prefix: str,
    guard: Guard,
    producer: AIOKafkaProducer,
    max_batch: int,
    max_wait_s: float = 0.05,
    consumer_options: Mapping[str, int] | None = None,
) -> None:
    """guard's consumer pipeline; `consumer_options`: its fetch settings
    (GuardSettings.consumer_options)."""
    # The range assignor gives every process the same partition numbers of each topic: the
    # account-keyed topics then reach the same process, their accounts' only writer.
    consumer = make_consumer(
        kafka,
        group(prefix),
        partition_assignment_strategy=(RangePartitionAssignor,),
        **(consumer_options or {}),
    )
    pipeline: Pipeline[Decoded] = Pipeline(
        consumer,
        producer,
        decode=guard.decode,
        effect=guard.apply,
        service=SERVICE,
        policy=BatchPolicy(
            max_records=max_batch,
            max_wait_s=max_wait_s,
            pause_at=max(1000, 2 * max_batch),
            resume_at=max_batch // 2,
        ),
        on_partitions_moved=guard.forget,
    )
    consumer.subscribe(
        [topic_name(t, prefix) for t in topics_read_by(SERVICE)], listener=pipeline.listener
    )
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group(prefix)))
    try:
        await pipeline.run()
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()


# --- retention ------------------------------------------------------------------------------


async def sweep_recipients(store: Any, clock: Clock, memory_days: float, page: int) -> int:
    """Forget recipients first seen longer ago than the memory, page by page until none is
    left."""
    cutoff = clock.now_ms() - int(memory_days * 86_400_000)
    deleted = 0
    while True:
        ids = await store.recipients_before(cutoff, page)
        if not ids:
            return deleted
        count = await store.delete_recipients(ids)
        deleted += count
        metrics.RECIPIENTS_SWEPT.inc(count)
        if len(ids) < page:
            return deleted


async def sweep_forever(
    store: Any, clock: Clock, memory_days: float, page: int, interval_seconds: float
) -> None:
    while True:
        try:
            deleted = await sweep_recipients(store, clock, memory_days, page)
            if deleted:
                log.info("recipients_swept", outcome="deleted", deleted=deleted)
        except TransientError as exc:
            log.warning("recipient_sweep_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
