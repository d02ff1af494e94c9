"""The Kafka side of the sender with a fake consumer and producer: commits stop at parked
records, bad records are dead-lettered, a partition is held back under backpressure."""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from services.sender.consumer import NO_PARTITION, SenderWorker, WorkerConfig
from shared.kafka import KafkaConfig
from shared.messages import SEND_APPROVED
from tests.unit.sender.fakes import Harness, settle

TOPIC = "messages.send-approved.v1"
TP = TopicPartition(TOPIC, 0)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = b"k"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    def __init__(self) -> None:
        self.batches: asyncio.Queue[dict[TopicPartition, list[Record]]] = asyncio.Queue()
        self.commits: list[dict[TopicPartition, int]] = []
        self.polls: list[tuple[TopicPartition, ...]] = []
        self.assigned: set[TopicPartition] = {TP}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """The next batch the test put (its partitions are not checked); `polls` keeps what
        each poll asked for. No `pause`: the worker must not use it."""
        self.polls.append(partitions)
        return await self.batches.get()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append((topic, value, list(headers or [])))


def records(h: Harness, *events: Any, start: int = 0) -> list[Record]:
    return [
        Record(TOPIC, 0, start + i, e if isinstance(e, bytes) else SEND_APPROVED.encode(e)[1])
        for i, e in enumerate(events)
    ]


async def running_worker(
    h: Harness, max_queued: int = 20_000, backlog_floor: int = 100
) -> tuple[SenderWorker, FakeConsumer, FakeProducer, asyncio.Task[None]]:
    consumer, producer = FakeConsumer(), FakeProducer()
    config = WorkerConfig(
        KafkaConfig("unused:9092", "PLAINTEXT"), max_queued=max_queued, backlog_floor=backlog_floor
    )
    worker = SenderWorker(
        config,
        producer,  # type: ignore[arg-type]
        h.engine,
        h.clock,
        consumer=consumer,
    )  # type: ignore[arg-type]
    worker.partitions_assigned({TP})
    await h.timer.advance(300.0)  # long after the take-over: buckets are full again
    task = asyncio.create_task(worker.consume([]))
    return worker, consumer, producer, task


async def stop(task: asyncio.Task[None], h: Harness) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await h.close()


async def test_the_commit_waits_for_a_parked_record_but_not_for_finished_ones() -> None:
    h = Harness()
    worker, consumer, _, task = await running_worker(h)
    try:
        hot = [h.event("+447700000001") for _ in range(41)]
        cold = h.event()
        await consumer.batches.put({TP: records(h, *hot, cold)})
        await settle()
        await h.timer.advance(1.0)
        await worker.commit_finished()
        # Offsets 0-39 finished; 40 (the 41st hot message) is parked; 41 finished after it.
        assert consumer.commits == [{TP: 40}]
        await h.timer.advance(6.0)
        await worker.commit_finished()
        assert consumer.commits[-1] == {TP: 42}
    finally:
        await stop(task, h)


async def test_an_unreadable_record_is_dead_lettered_and_committed_past() -> None:
    h = Harness()
    worker, consumer, producer, task = await running_worker(h)
    try:
        await consumer.batches.put({TP: records(h, b"not json", h.event())})
        await settle()
        await h.timer.advance(1.0)
        await worker.commit_finished()
        assert consumer.commits == [{TP: 2}]
        [(topic, value, headers)] = producer.sent
        assert topic == f"{TOPIC}.dlq" and value == b"not json"
        assert dict(headers)["source_offset"] == b"0"
    finally:
        await stop(task, h)


async def test_a_partition_is_held_back_while_too_much_waits_in_memory() -> None:
    h = Harness()
    # Parked messages do not make a partition behind, but they fill memory: past max_queued
    # a partition keeps at most its share (here all of it: one partition).
    worker, consumer, _, task = await running_worker(h, max_queued=10, backlog_floor=1)
    try:
        hot = [h.event("+447700000001") for _ in range(52)]  # 40 go, 12 wait (1 per 6 s)
        await consumer.batches.put({TP: records(h, *hot)})
        await h.timer.advance(0.5)
        await consumer.batches.put({})  # one more turn of the loop
        await settle()
        # held back, and the only partition: the poll names none (it keeps the group)
        assert worker.held_back == {TP} and consumer.polls[-1] == (NO_PARTITION,)
        await h.timer.advance(11.0)  # 1 more sent: 11 wait, still at the bound
        await consumer.batches.put({})
        await settle()
        assert worker.held_back == {TP} and consumer.polls[-1] == (NO_PARTITION,)
        await h.timer.advance(13.0)  # 3 more sent: 8 wait, under the bound
        await consumer.batches.put({})
        await settle()
        assert worker.held_back == set()
        assert consumer.polls[-1] == ()  # nothing held back: every partition polled
    finally:
        await stop(task, h)


async def test_revoking_a_partition_commits_what_finished_and_forgets_it() -> None:
    h = Harness()
    worker, consumer, _, task = await running_worker(h)
    try:
        hot = [h.event("+447700000001") for _ in range(42)]
        await consumer.batches.put({TP: records(h, *hot)})
        await settle()
        await h.timer.advance(1.0)
        await worker.partitions_revoked({TP})
        assert consumer.commits == [{TP: 40}]
        assert h.engine.queued == 0
        await worker.commit_finished()
        assert consumer.commits == [{TP: 40}]
    finally:
        await stop(task, h)
