"""The consumer pipeline every service shares: decode -> batch -> effect -> commit offset + 1.

The shape is arroyo's (getsentry/arroyo, `processing/strategies`: a Reduce step that batches by
count and by time, a RunTask step that applies the effect, CommitOffsets last), written for
asyncio and aiokafka:

- **decode**: each record is decoded once, as it arrives (`decode(record) -> T`). A record that
  does not decode goes to `<topic>.dlq` (decoding is pure: trying again cannot help).
- **batch**: decoded records wait in a buffer, by partition, until `BatchPolicy.max_records` of
  them are there or the first has waited `max_wait_s` (0: take whatever is there as soon as the
  effect is free, so batches grow with the load and an idle pipeline adds no latency). A batch
  is taken
  round-robin over the partitions waiting (`FairBuffer`): a partition with a backlog (one
  tenant's burst) does not hold up the records of the others behind it. A consumer whose
  topics are keyed by tenant opts in to `BatchPolicy.fair_by_key`: the turns are then over
  each partition's record keys, so another tenant's record read behind a backlog on the same
  partition goes in the next batch, not after the backlog (status's state writer).
- **effect**: `effect(items)` gets the whole batch, each key's records in offset order (each
  partition's too, unless fair by key; `group_by_key` splits them by key, keeping that order).
  One batch at a time: the next accumulates while the effect runs.
- **commit**: once the effect returned, its records are finished; what a partition may commit
  is its lowest offset not finished (`shared/pipeline_offsets.py`: a record of a key still
  waiting holds its partition's commit back, never skipped). Finished positions are committed
  at most every `commit_interval_s`, and as soon as nothing is waiting. A record read a second
  time without a rebalance (aiokafka resetting a position back) is skipped: this process has it
  waiting or finished already.

The dead-letter rule of shared/kafka.py (its docstring) holds for the batch as for a record:

- the effect raising a TransientError is retried with the policy's backoff; past its budget the
  error propagates, the batch is not committed, and the process is restarted;
- the effect raising anything else (PermanentError, a bug) means one record of the batch may be
  to blame: each record is then tried alone (`effect([item])`, with `attempt_record`), so a
  poison record goes to `<topic>.dlq` and the others' effects still happen;
- many dead letters in a row stop the consumer (`DeadLetterGuard`).

Backpressure holds back only the partitions that are behind: a partition with `pause_at`
records waiting (the read-ahead: with `fair_by_key`, how far past a backlog another key's
record is found) is left out of the polls (`getmany(*the others)`) until it is down to
`resume_at`; the others keep flowing. It is not `consumer.pause(tp)`: aiokafka drops a paused
partition's fetched records half-read, and a half-read fetch is a reference cycle (its record
iterator and itself) holding the whole fetch buffer until a full garbage collection. In
status's 100,000 campaign such buffers (256 KiB each, one per pause) were 40 MB of its RSS
before one came. Left out of the polls instead, the partition's one fetch waits unread in
aiokafka (no fetch is made for a partition with records waiting) and is read on from where it
was when the partition is polled again.

When every partition is held back the pipeline still polls, naming only `NO_PARTITION` (never
assigned: aiokafka returns only the partitions named, so the poll takes nothing), and then
waits for the effect to take a batch. aiokafka makes a consumer that has not polled for
`max_poll_interval_ms` (5 min) leave its group, and a slow effect (notify's slow endpoints, a
database outage being retried) can hold everything back for longer. That poll does not wait
(timeout 0): the pipeline still wakes the moment the effect takes a batch. The sender polls the
same `NO_PARTITION`.

A rebalance waits for the batch in flight, commits what is finished, drops what waits for the
revoked partitions (their next owner reads it again) and then calls `on_partitions_moved`: a
writer that remembers what it wrote (status's state writer) forgets it there.

The pure parts (`FairBuffer`, `Batcher`, `pause_changes`,
`partitions_to_poll`, `commit_due`, `group_by_key`) take the time as an argument and do no I/O.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka import TopicPartition as TP
from aiokafka.errors import KafkaError

from shared.dead_letters import Failure
from shared.errors import TransientError
from shared.kafka import (
    DeadLetterGuard,
    DeadLetters,
    RetryPolicy,
    attempt_record,
    retry_transient,
)
from shared.logging import get_logger
from shared.metrics import BATCH_RECORDS, RECORDS_HANDLED
from shared.pipeline_offsets import OffsetTracker

log = get_logger(__name__)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
Record: TypeAlias = ConsumerRecord[bytes, bytes]

# How long the commit of what is finished may take when the pipeline stops: a broker that no
# longer answers must not hold up the stop (those records are read again after the restart).
FINAL_COMMIT_TIMEOUT_S = 5.0
# Polled when every partition is held back: a poll that takes nothing, but a poll (the
# module's doc). Never assigned to anyone.
NO_PARTITION = TP("", -1)


@dataclass(frozen=True)
class Item(Generic[T]):
    """One consumed record and what it decoded to (`failure` set: it did not decode)."""

    record: Record
    value: T
    failure: Failure | None = None

    @property
    def partition(self) -> TP:
        return TP(self.record.topic, self.record.partition)

    @property
    def offset(self) -> int:
        return int(self.record.offset)


Decode = Callable[[Record], T]
# The batch's effect: returns once every record's effect is durable (written, published).
Effect = Callable[[Sequence[Item[T]]], Awaitable[None]]


@dataclass(frozen=True)
class BatchPolicy:
    max_records: int = 500
    # How long the first record of a batch waits for others (0: none; see the module's doc).
    max_wait_s: float = 0.0
    # Records waiting in one partition at which it is paused, and at which it is resumed.
    pause_at: int = 1000
    resume_at: int = 250
    commit_interval_s: float = 0.5
    poll_timeout_ms: int = 200
    # Take each batch round-robin over the records' keys within a partition too, not only over
    # the partitions (the module's doc): a tenant's record is not written behind another
    # tenant's backlog on the same partition. Each key's records stay in offset order.
    fair_by_key: bool = False

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_wait_s < 0 or not 0 <= self.resume_at < self.pause_at:
            raise ValueError(f"inconsistent batch policy: {self}")


# --- the pure parts ----------------------------------------------------------------------------


class FairBuffer(Generic[K, V]):
    """Items waiting by key, each key's in arrival order, taken round-robin over the keys: a key
    with 10,000 waiting takes one turn like a key with one, so a burst on one key does not delay
    the others' items by more than one item per turn. Each key's items come out in the order
    they went in (per-key order is kept; across keys it is not).

    The keys take turns in the order they first had something waiting; a key served goes to
    the back of the turn, a key with nothing left leaves it."""

    def __init__(self) -> None:
        self._queues: dict[K, deque[V]] = {}  # insertion order = the turn
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: K, item: V) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        self._count += 1

    def take(self, most: int) -> list[V]:
        """Up to `most` items, one per key per turn."""
        taken: list[V] = []
        queues = self._queues
        while queues and len(taken) < most:
            for key in list(queues):
                queue = queues.pop(key)
                taken.append(queue.popleft())
                if queue:
                    queues[key] = queue  # back of the turn
                if len(taken) == most:
                    break
        self._count -= len(taken)
        return taken

    def drop(self, keys: Collection[K]) -> int:
        """Forget what waits under these keys; returns how many items."""
        dropped = 0
        for key in keys:
            queue = self._queues.pop(key, None)
            if queue:
                dropped += len(queue)
        self._count -= dropped
        return dropped

    def waiting(self) -> dict[K, int]:
        return {key: len(queue) for key, queue in self._queues.items()}


# Where a record waits in the Batcher: its partition, and its key when batches are fair by key.
Lane: TypeAlias = tuple[TP, bytes | None]


class Batcher(Generic[T]):
    """The batch step's buffer: records by partition (each in offset order), a batch taken
    round-robin over the partitions (`FairBuffer`): a partition with a backlog waiting (up to
    `pause_at`) does not delay the records of the others behind it. With `fair_by_key` the turns
    are over each partition's keys: a key with a backlog does not delay the other keys of its
    partition either, and each key's records come out in offset order."""

    def __init__(self, policy: BatchPolicy) -> None:
        self._policy = policy
        self._items: FairBuffer[Lane, Item[T]] = FairBuffer()
        self._waiting: dict[TP, int] = {}
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _lane(self, item: Item[T]) -> Lane:
        return (item.partition, item.record.key if self._policy.fair_by_key else None)

    def add(self, items: Iterable[Item[T]], now: float) -> None:
        before = len(self._items)
        for item in items:
            self._items.add(self._lane(item), item)
            tp = item.partition
            self._waiting[tp] = self._waiting.get(tp, 0) + 1
        if before == 0 and len(self._items):
            self._first_at = now

    def ready(self, now: float) -> bool:
        """A batch is ready: enough records, or the first has waited long enough."""
        if not self._items:
            return False
        if len(self._items) >= self._policy.max_records:
            return True
        assert self._first_at is not None
        return now - self._first_at >= self._policy.max_wait_s

    def wait_s(self, now: float) -> float | None:
        """How long until a batch is ready by time (None: nothing waits, wait for records)."""
        if not self._items:
            return None
        assert self._first_at is not None
        return max(0.0, self._first_at + self._policy.max_wait_s - now)

    def take(self, now: float) -> list[Item[T]]:
        """The next batch: up to `max_records` records, one per lane (partition, or partition
        and key) per turn."""
        batch = self._items.take(self._policy.max_records)
        for item in batch:
            tp = item.partition
            left = self._waiting[tp] - 1
            if left:
                self._waiting[tp] = left
            else:
                del self._waiting[tp]
        self._first_at = now if self._items else None
        return batch

    def drop(self, partitions: Collection[TP]) -> int:
        """Forget what waits for these partitions (revoked: their next owner reads it)."""
        lanes = [lane for lane in self._items.waiting() if lane[0] in partitions]
        dropped = self._items.drop(lanes)
        for tp in partitions:
            self._waiting.pop(tp, None)
        if not self._items:
            self._first_at = None
        return dropped

    def keep_only(self, partitions: Collection[TP]) -> int:
        return self.drop(set(self._waiting) - set(partitions))

    def waiting(self) -> dict[TP, int]:
        """Records waiting per partition."""
        return dict(self._waiting)


def pause_changes(
    waiting: Mapping[TP, int],
    paused: Collection[TP],
    assigned: Collection[TP],
    policy: BatchPolicy,
) -> tuple[set[TP], set[TP]]:
    """(to pause, to resume): a partition with `pause_at` records waiting is paused, a paused
    one is resumed once down to `resume_at` (or no longer assigned to us)."""
    to_pause = {tp for tp in assigned if tp not in paused and waiting.get(tp, 0) >= policy.pause_at}
    to_resume = {
        tp for tp in paused if tp not in assigned or waiting.get(tp, 0) <= policy.resume_at
    }
    return to_pause, to_resume


def partitions_to_poll(assigned: Collection[TP], held: Collection[TP]) -> list[TP]:
    """The partitions a poll names: [] for all of them (none is held back), else the assigned
    ones that are not behind, or [NO_PARTITION] if every one is (a poll that takes nothing)."""
    if not held:
        return []
    return [tp for tp in assigned if tp not in held] or [NO_PARTITION]


def commit_due(
    finished: Mapping[TP, int], now: float, last_commit: float, interval_s: float
) -> bool:
    """Commit what is finished at most every `interval_s`, busy or idle: each commit is a
    broker request and a log write. Committing whenever the pipeline fell idle made it one
    per record at low rates, in every consumer group: OffsetCommit was 7.0 of 28.9 Kafka
    requests per message at half of the e2e capacity (bench, 2026-12-06). An idle pipeline
    wakes for the commit (`Pipeline._next_ready`), so a position waits at most the interval;
    a crash before it means those records are read again (effects are idempotent)."""
    return bool(finished) and now - last_commit >= interval_s


def group_by_key(
    items: Iterable[Item[T]], key_of: Callable[[Item[T]], K]
) -> dict[K, list[Item[T]]]:
    """The batch's records by key, each key's in the batch's order (offset order)."""
    groups: dict[K, list[Item[T]]] = {}
    for item in items:
        groups.setdefault(key_of(item), []).append(item)
    return groups


# --- the I/O shell -----------------------------------------------------------------------------


class Pipeline(Generic[T]):
    """One consumer's pipeline. Subscribe with its listener, start the consumer, run it:

    pipeline = Pipeline(consumer, producer, decode=..., effect=..., service="status")
    consumer.subscribe(topics, listener=pipeline.listener)
    await consumer.start()
    await pipeline.run()   # until cancelled, or an error it must not swallow
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        *,
        decode: Decode[T],
        effect: Effect[T],
        service: str,
        policy: BatchPolicy | None = None,
        retry: RetryPolicy | None = None,
        guard: DeadLetterGuard | None = None,
        on_partitions_moved: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._decode = decode
        self._effect = effect
        self._service = service
        self._policy = policy = policy or BatchPolicy()
        self._retry = retry = retry or RetryPolicy()
        self._dead_letters = DeadLetters(producer, service, guard, retry)
        self._on_moved = on_partitions_moved or (lambda: None)
        self._clock = clock
        self._buffer: Batcher[T] = Batcher(policy)
        # Every record read, until its partition's position is committed past it: what may
        # be committed is the lowest offset not finished (batches fair by key finish a
        # partition's records out of offset order).
        self._offsets: OffsetTracker[TP] = OffsetTracker()
        self._finished: dict[TP, int] = {}  # positions finished, not committed yet
        self._last_commit = float("-inf")
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()  # the effect took a batch (held partitions may be due)
        self._held: set[TP] = set()  # behind: left out of the polls (backpressure)
        self._idle = asyncio.Event()
        self._idle.set()
        self._moving = False
        self.listener = _Listener(self)

    @property
    def held_back(self) -> frozenset[TP]:
        """The partitions left out of the polls now: behind (backpressure)."""
        return frozenset(self._held)

    async def run(self) -> None:
        fetch = asyncio.create_task(self._fetch_forever(), name=f"{self._service}-fetch")
        work = asyncio.create_task(self._work_forever(), name=f"{self._service}-work")
        try:
            done, _ = await asyncio.wait({fetch, work}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in (fetch, work):
                task.cancel()
            await asyncio.gather(fetch, work, return_exceptions=True)
            if self._finished:  # a stop (or a failure in a later batch) keeps what was finished
                try:
                    async with asyncio.timeout(FINAL_COMMIT_TIMEOUT_S):
                        await self._commit()
                except TimeoutError:  # a broker that is gone must not hold up the stop
                    log.warning("commit_failed", error="timed out at stop")

    # --- decode and batch ----------------------------------------------------------------------

    async def _fetch_forever(self) -> None:
        while True:
            polled = self._apply_backpressure()
            if polled == [NO_PARTITION]:
                # every partition is behind: poll all the same (or aiokafka leaves the group),
                # without waiting, then wait for the effect to take some of them
                self._taken.clear()
                await self._consumer.getmany(NO_PARTITION, timeout_ms=0)
                try:
                    async with asyncio.timeout(self._policy.poll_timeout_ms / 1000):
                        await self._taken.wait()
                except TimeoutError:
                    pass
                continue
            batches = await self._consumer.getmany(
                *polled,
                timeout_ms=self._policy.poll_timeout_ms,
                max_records=self._policy.max_records,
            )
            if not batches:
                continue
            assigned = self._consumer.assignment()
            items = [
                self._decoded(record)
                for tp, records in batches.items()
                if tp in assigned  # revoked while this poll was returning
                for record in records
            ]
            self._buffer.add(self._track(items), self._clock())
            self._arrived.set()

    def _track(self, items: Sequence[Item[T]]) -> list[Item[T]]:
        """Track the records read; returns them but for those read before (aiokafka reset a
        partition's position back without a rebalance): this process already has each of those
        waiting or finished, so a second copy would only be handled twice."""
        new: list[Item[T]] = []
        again = 0
        for item in items:
            tp = item.partition
            offsets = self._offsets.get(tp) or self._offsets.assign(tp)
            try:
                offsets.track(item.offset)
            except ValueError:
                again += 1
                continue
            new.append(item)
        if again:
            log.warning("records_read_again_skipped", consumer=self._service, records=again)
        return new

    def _decoded(self, record: Record) -> Item[T]:
        try:
            return Item(record, self._decode(record))
        except Exception as exc:
            # never given to the effect: it goes to the DLQ when its batch is handled
            return Item(record, cast(T, None), Failure(exc, 1))

    def _apply_backpressure(self) -> list[TP]:
        """The partitions to poll (`partitions_to_poll`; the module's doc: why not
        `consumer.pause`)."""
        assigned = self._consumer.assignment()
        to_hold, to_release = pause_changes(
            self._buffer.waiting(), self._held, assigned, self._policy
        )
        if to_hold:
            self._held |= to_hold
            log.info("partitions_paused", consumer=self._service, partitions=len(to_hold))
        if to_release:
            self._held -= to_release
            log.info("partitions_resumed", consumer=self._service, partitions=len(to_release))
        return partitions_to_poll(assigned, self._held)

    # --- effect and commit -----------------------------------------------------------------

    async def _work_forever(self) -> None:
        while True:
            await self._next_ready()
            self._idle.clear()
            try:
                batch = self._buffer.take(self._clock())
                self._taken.set()
                await self._handle(batch)
                self._finish(batch)
            finally:
                self._idle.set()
            await self._maybe_commit()

    async def _next_ready(self) -> None:
        while True:
            now = self._clock()
            if not self._moving and self._buffer.ready(now):
                return
            await self._maybe_commit()
            self._arrived.clear()
            waits = [
                w for w in (self._buffer.wait_s(now), self._until_commit_s(now)) if w is not None
            ]
            try:
                async with asyncio.timeout(None if self._moving or not waits else min(waits)):
                    await self._arrived.wait()
            except TimeoutError:
                pass

    async def _handle(self, batch: list[Item[T]]) -> None:
        BATCH_RECORDS.labels(service=self._service).observe(len(batch))
        good: list[Item[T]] = []
        for item in batch:
            if item.failure is not None:
                await self._dead_letters.send(item.record, item.failure)
            else:
                good.append(item)
        if not good:
            return
        try:
            await retry_transient(lambda: self._effect(good), self._retry, self._service)
        except TransientError:
            raise
        except Exception as exc:
            log.warning(
                "batch_failed_trying_each_record",
                consumer=self._service,
                records=len(good),
                error=repr(exc)[:500],
            )
            await self._one_by_one(good)
            return
        self._dead_letters.success()
        RECORDS_HANDLED.labels(service=self._service, outcome="handled").inc(len(good))

    async def _one_by_one(self, items: list[Item[T]]) -> None:
        for item in items:
            failure = await attempt_record(
                functools.partial(self._effect, [item]), self._retry, what=item.record.topic
            )
            if failure is None:
                self._dead_letters.success()
                RECORDS_HANDLED.labels(service=self._service, outcome="handled").inc()
            else:
                await self._dead_letters.send(item.record, failure)

    def _finish(self, batch: list[Item[T]]) -> None:
        """The batch's effects happened: its records are finished, and each partition's
        contiguous finished prefix may be committed."""
        for item in batch:
            offsets = self._offsets.get(item.partition)
            if offsets is not None:
                offsets.done(item.offset)
        self._finished.update(self._offsets.committable())

    async def _maybe_commit(self) -> None:
        if commit_due(
            self._finished, self._clock(), self._last_commit, self._policy.commit_interval_s
        ):
            await self._commit()

    def _until_commit_s(self, now: float) -> float | None:
        """How long until what is finished is due for its commit (None: nothing is)."""
        if not self._finished:
            return None
        return max(0.0, self._last_commit + self._policy.commit_interval_s - now)

    async def _commit(self) -> None:
        """Commit and forget the finished positions. A rebalance may have moved partitions
        meanwhile: then nothing is committed, and their new owner reads those records again.
        A stop during the commit leaves them to the commit at the stop."""
        positions = dict(self._finished)
        self._finished.clear()
        self._last_commit = self._clock()
        if not positions:
            return
        try:
            await self._consumer.commit(positions)
            self._offsets.mark_committed(positions)
        except KafkaError as exc:
            log.warning("commit_failed", error=str(exc), partitions=len(positions))
        except asyncio.CancelledError:
            for tp, offset in positions.items():
                self._finished[tp] = max(offset, self._finished.get(tp, 0))
            raise

    # --- rebalances ----------------------------------------------------------------------------

    async def _revoked(self, revoked: Collection[TP]) -> None:
        self._moving = True  # no new batch until the new assignment
        await self._idle.wait()
        dropped = self._buffer.drop(set(revoked))
        await self._commit()
        for tp in revoked:  # what was dropped is not finished: nothing was committed past it
            self._offsets.forget(tp)
        self._on_moved()
        log.info(
            "partitions_revoked", consumer=self._service, partitions=len(revoked), dropped=dropped
        )

    async def _assigned(self, assigned: Collection[TP]) -> None:
        self._buffer.keep_only(set(assigned))
        for tp in set(self._offsets.partitions()) - set(assigned):
            self._offsets.forget(tp)
        self._moving = False
        self._on_moved()
        self._arrived.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline[Any]) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        await self._pipeline._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        await self._pipeline._assigned(assigned)


__all__ = [
    "NO_PARTITION",
    "BatchPolicy",
    "Batcher",
    "Decode",
    "Effect",
    "FairBuffer",
    "Item",
    "Pipeline",
    "commit_due",
    "group_by_key",
    "partitions_to_poll",
    "pause_changes",
]
