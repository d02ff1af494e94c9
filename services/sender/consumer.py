"""The sender's Kafka consumer: send-approved in, the engine fed, offsets committed.

Its own consume loop, because records finish out of order (README "The sender and the shared
pipeline"): the commit is each partition's contiguous finished prefix (the shared step,
shared/pipeline_offsets.py), every `commit_interval_seconds`, on revocation and on shutdown.
Unreadable records are dead-lettered. Backpressure: only the partitions that are behind are
held back (core.plan_fetch), so one tenant's backlog on a slow number does not stop the numbers
of the partitions next to it. The group-less followers run beside it (followers.py).

A partition held back is left out of the polls (`getmany(*the others)`), as in
shared/pipeline.py, not paused: aiokafka drops a paused partition's fetched records half-read,
and a half-read fetch is a reference cycle that keeps its whole buffer until a full garbage
collection (that module's docstring). Left out of the polls, its one fetch waits unread in
aiokafka, which fetches nothing more for it meanwhile, and is read on when it is polled again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.sender import metrics
from services.sender.core import FetchPolicy, plan_fetch
from services.sender.engine import SendEngine
from services.sender.followers import (
    follow_account_hold,
    follow_inbound,
    follow_throughput,
    follow_waba_status,
)
from services.sender.metrics import SERVICE
from services.sender.ports import Done
from services.sender.publisher import RecordDone, undecodable
from services.sender.settings import SenderSettings
from shared.clock import Clock
from shared.kafka import (
    DeadLetters,
    Failure,
    KafkaConfig,
    make_consumer,
    report_lag_forever,
    topic_name,
)
from shared.logging import get_logger
from shared.messages import SEND_APPROVED, SendApproved
from shared.pipeline import NO_PARTITION
from shared.pipeline_offsets import OffsetTracker

log = get_logger(__name__)

POLL_TIMEOUT_MS = 200


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SenderWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.partitions_assigned(set(assigned))


@dataclass(frozen=True)
class WorkerConfig:
    kafka: KafkaConfig
    topic_prefix: str = ""
    commit_interval_seconds: float = 0.2
    # All partitions together hold at most about this many messages (core.FetchPolicy).
    max_queued: int = 20_000
    shutdown_grace_seconds: float = 15.0
    poll_records: int = 500
    # A partition is behind when it holds more ready messages than its numbers send in this
    # many seconds, at least backlog_floor (core.FetchPolicy).
    backlog_seconds: float = 2.0
    backlog_floor: int = 100
    # How long the compacted topics' followers' fetches wait while those topics are quiet
    # (followers.py): SenderSettings' default, read from its field so that the two cannot
    # drift apart (the setting says why).
    follower_fetch_max_wait_ms: int = SenderSettings.model_fields[
        "follower_fetch_max_wait_ms"
    ].default

    @property
    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            lead_seconds=self.backlog_seconds, floor=self.backlog_floor, max_held=self.max_queued
        )

    @property
    def group(self) -> str:
        return f"{self.topic_prefix}{SERVICE}"


class SenderWorker:
    """Consumes send-approved with manual, out-of-order-aware commits; follows throughput changes
    from the start of their compacted topic (a restart must not forget an upgrade)."""

    def __init__(
        self,
        config: WorkerConfig,
        producer: AIOKafkaProducer,
        engine: SendEngine,
        clock: Clock,
        consumer: AIOKafkaConsumer | None = None,
    ) -> None:
        self._config = config
        self._producer = producer
        self._engine = engine
        self._clock = clock
        self._consumer = consumer or make_consumer(
            config.kafka, config.group, max_poll_records=config.poll_records
        )
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._taken_over_at: dict[TopicPartition, float] = {}
        self._dead_letters = DeadLetters(producer, SERVICE)
        self._fetch_policy = config.fetch_policy
        self._held_back: frozenset[TopicPartition] = frozenset()  # behind: left out of polls
        self._crowded = False
        engine.set_dead_letter(self._dead_letter_records)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    @property
    def held_back(self) -> frozenset[TopicPartition]:
        """The partitions left out of the polls because they are behind."""
        return self._held_back

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        now = self._clock.monotonic()
        for tp in assigned:
            self._tracker.assign(tp)
            self._taken_over_at[tp] = now
        log.info("partitions_assigned", partitions=sorted(str(tp.partition) for tp in assigned))

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._engine.revoke(set(revoked))
        await self.commit_finished(only=revoked)
        for tp in revoked:
            self._tracker.forget(tp)
            self._taken_over_at.pop(tp, None)
        self._held_back -= revoked
        log.info("partitions_revoked", partitions=sorted(str(tp.partition) for tp in revoked))

    async def run(self) -> None:
        consumer = self._consumer
        consumer.subscribe(
            [topic_name(SEND_APPROVED, self._config.topic_prefix)], listener=_Rebalance(self)
        )
        await consumer.start()
        kafka, prefix, engine = self._config.kafka, self._config.topic_prefix, self._engine
        quiet_wait = self._config.follower_fetch_max_wait_ms
        helpers = [
            asyncio.create_task(self._commit_forever()),
            asyncio.create_task(report_lag_forever(consumer, SERVICE, self._config.group)),
            asyncio.create_task(follow_throughput(kafka, prefix, engine, quiet_wait)),
            asyncio.create_task(follow_inbound(kafka, prefix, engine)),
            asyncio.create_task(follow_waba_status(kafka, prefix, engine, quiet_wait)),
            asyncio.create_task(follow_account_hold(kafka, prefix, engine, quiet_wait)),
        ]
        try:
            await self.consume(helpers)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._engine.stop(self._config.shutdown_grace_seconds)
            with contextlib.suppress(KafkaError):
                await self.commit_finished()
            await consumer.stop()

    async def consume(self, helpers: list[asyncio.Task[Any]]) -> None:
        consumer = self._consumer
        while True:
            if self._engine.failure is not None:
                raise self._engine.failure
            for task in helpers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            polled = self._partitions_to_poll()
            batch = await consumer.getmany(
                *polled, timeout_ms=POLL_TIMEOUT_MS, max_records=self._config.poll_records
            )
            items: list[tuple[SendApproved, Hashable, float, Done]] = []
            for tp, records in batch.items():
                offsets = self._tracker.get(tp)
                if offsets is None:
                    continue  # revoked while these were in the fetch buffer
                for record in records:
                    offsets.track(record.offset)
                    try:
                        event = SEND_APPROVED.decode(record.value)  # type: ignore[arg-type]
                    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                        await self._dead_letters.send(record, Failure(undecodable(exc), 1))
                        offsets.done(record.offset)
                        continue
                    items.append(
                        (
                            event,
                            tp,
                            self._taken_over_at.get(tp, 0.0),
                            RecordDone(offsets, record, self._dead_letters),
                        )
                    )
            if items:
                await self._engine.admit_batch(items)

    async def _dead_letter_records(self, done: list[Done], failure: Failure) -> None:
        """The engine gave a message up after repeated bugs: dead-letter each record behind it
        (duplicates too), and only then count them as finished (their offsets move on)."""
        for callback in done:
            if isinstance(callback, RecordDone):
                await callback.dead_letter(failure)
            else:
                callback()

    def _partitions_to_poll(self) -> list[TopicPartition]:
        """The partitions to poll now (core's policy): [] for all of them (none is behind),
        else the assigned ones that are not behind ([NO_PARTITION] if every one is). A
        backlog holds back its own partition, never the ones next to it."""
        plan = plan_fetch(
            set(self._consumer.assignment()),
            self._engine.backlogs(),
            self._held_back,
            self._fetch_policy,
        )
        self._held_back = plan.held_back
        metrics.PARTITIONS_PAUSED.set(len(plan.held_back))
        if plan.crowded != self._crowded:  # memory at its bound: worth a line
            self._crowded = plan.crowded
            if plan.crowded:
                log.warning("fetching_crowded", held=plan.held, paused=len(plan.held_back))
            else:
                log.info("fetching_uncrowded", held=plan.held, paused=len(plan.held_back))
        if not plan.held_back:
            return []
        return sorted(plan.poll) or [NO_PARTITION]

    async def _commit_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.commit_interval_seconds)
            metrics.OLDEST_WAITING.set(self._engine.oldest_waiting_age())
            try:
                await self.commit_finished()
            except KafkaError as exc:  # a rebalance in progress: the next round retries
                log.warning("commit_failed", error=str(exc))

    async def commit_finished(self, only: set[TopicPartition] | None = None) -> None:
        positions = self._tracker.committable()
        if only is not None:
            positions = {tp: p for tp, p in positions.items() if tp in only}
        if not positions:
            return
        await self._consumer.commit(positions)
        self._tracker.mark_committed(positions)
