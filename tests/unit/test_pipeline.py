"""The shared consumer pipeline (shared/pipeline.py): its pure decisions (when a batch is ready,
which offsets a finished batch commits, which partitions to pause, when to commit), and the
dead-letter rule for a batch with a fake consumer and producer (the real broker:
tests/integration/test_pipeline.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from shared.errors import DependencyUnavailable, InvalidRequest
from shared.kafka import RetryPolicy
from shared.pipeline import (
    Batcher,
    BatchPolicy,
    Item,
    Pipeline,
    commit_due,
    group_by_key,
    offsets_to_commit,
    pause_changes,
)

TP0, TP1, TP2 = (TopicPartition("t", n) for n in range(3))


def _record(partition: int, offset: int, value: bytes = b"v", key: bytes = b"k") -> Any:
    return ConsumerRecord("t", partition, offset, 0, 0, key, value, None, 1, 1, [])


def _item(partition: int, offset: int, key: bytes = b"k") -> Item[bytes]:
    return Item(_record(partition, offset, key=key), key)


# --- batching by count and by time -------------------------------------------------------------


def test_a_batch_is_ready_when_full_or_when_its_first_record_has_waited_long_enough() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=3, max_wait_s=0.05))
    assert not buffer.ready(now=0.0) and buffer.wait_s(now=0.0) is None
    buffer.add([_item(0, 1), _item(0, 2)], now=10.0)
    assert not buffer.ready(now=10.01)
    assert buffer.wait_s(now=10.01) == pytest.approx(0.04)
    assert buffer.ready(now=10.05)  # by time
    buffer.add([_item(1, 7)], now=10.02)
    assert buffer.ready(now=10.02)  # by count


def test_take_gives_the_oldest_records_in_order_and_restarts_the_clock_for_the_rest() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=2, max_wait_s=1.0))
    buffer.add([_item(0, 1), _item(1, 4), _item(0, 2)], now=0.0)
    assert [(i.record.partition, i.offset) for i in buffer.take(now=5.0)] == [(0, 1), (1, 4)]
    assert len(buffer) == 1
    assert not buffer.ready(now=5.5)  # the leftover's batch started at the take
    assert buffer.ready(now=6.0)
    assert [i.offset for i in buffer.take(now=6.0)] == [2]
    assert buffer.wait_s(now=6.0) is None


def test_without_a_wait_whatever_is_there_is_a_batch() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=500, max_wait_s=0.0))
    buffer.add([_item(0, 1)], now=3.0)
    assert buffer.ready(now=3.0)


def test_revoked_partitions_records_are_dropped_and_the_rest_kept_in_order() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy())
    buffer.add([_item(0, 1), _item(1, 4), _item(0, 2), _item(2, 9)], now=0.0)
    assert buffer.waiting() == {TP0: 2, TP1: 1, TP2: 1}
    assert buffer.drop({TP0}) == 2
    assert buffer.keep_only({TP2}) == 1
    assert [i.offset for i in buffer.take(now=0.0)] == [9]


def test_an_inconsistent_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_records=0)
    with pytest.raises(ValueError):
        BatchPolicy(pause_at=10, resume_at=10)


# --- offsets, pauses, commits ------------------------------------------------------------------


def test_a_finished_batch_commits_each_partitions_last_offset_plus_one() -> None:
    batch = [_item(0, 5), _item(1, 9), _item(0, 6), _item(0, 7)]
    assert offsets_to_commit(batch) == {TP0: 8, TP1: 10}
    assert offsets_to_commit([]) == {}


def test_only_the_partitions_that_are_behind_are_paused_and_resumed_at_the_low_mark() -> None:
    policy = BatchPolicy(max_records=10, pause_at=100, resume_at=20)
    assigned = {TP0, TP1, TP2}
    to_pause, to_resume = pause_changes({TP0: 100, TP1: 99}, set(), assigned, policy)
    assert (to_pause, to_resume) == ({TP0}, set())
    # paused and still above the low mark: stays paused; the others are not touched
    assert pause_changes({TP0: 21, TP1: 150}, {TP0}, assigned, policy) == ({TP1}, set())
    assert pause_changes({TP0: 20}, {TP0, TP1}, assigned, policy) == (set(), {TP0, TP1})
    # a paused partition no longer ours is let go
    assert pause_changes({}, {TP2}, {TP0}, policy) == (set(), {TP2})


def test_commits_wait_for_the_interval_unless_nothing_is_waiting() -> None:
    finished = {TP0: 3}
    assert commit_due(finished, idle=True, now=10.0, last_commit=9.9, interval_s=0.5)
    assert not commit_due(finished, idle=False, now=10.0, last_commit=9.9, interval_s=0.5)
    assert commit_due(finished, idle=False, now=10.4, last_commit=9.9, interval_s=0.5)
    assert not commit_due({}, idle=True, now=10.0, last_commit=0.0, interval_s=0.5)


def test_grouping_by_key_keeps_each_keys_offset_order() -> None:
    batch = [_item(0, 1, b"a"), _item(0, 2, b"b"), _item(0, 3, b"a"), _item(1, 1, b"b")]
    groups = group_by_key(batch, lambda i: i.value)
    assert {k: [(i.record.partition, i.offset) for i in g] for k, g in groups.items()} == {
        b"a": [(0, 1), (0, 3)],
        b"b": [(0, 2), (1, 1)],
    }


# --- the dead-letter rule for a batch (fake consumer and producer) ------------------------------


class _FakeConsumer:
    """Hands out its polls in order, then waits (the test cancels the pipeline)."""

    def __init__(self, *polls: dict[TopicPartition, list[Any]]) -> None:
        self._polls = list(polls)
        self.commits: list[dict[TopicPartition, int]] = []
        self._paused: set[TopicPartition] = set()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self._polls:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        return self._polls.pop(0)

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1, TP2}

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class _FakeProducer:
    def __init__(self) -> None:
        self.dead_letters: list[tuple[str, int]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes, headers: Any) -> None:
        self.dead_letters.append((topic, dict(headers)["source_offset"].decode()))


_FAST = RetryPolicy(
    first_delay=0.001,
    max_delay=0.002,
    budget_seconds=0.05,
    unexpected_attempts=2,
    unexpected_first_delay=0.001,
)


def _decode(record: Any) -> bytes:
    if record.value == b"garbage":
        raise InvalidRequest("not an event")
    return bytes(record.value)


async def _run_until(pipeline: Pipeline[bytes], done: Any, deadline_s: float = 5.0) -> None:
    task = asyncio.create_task(pipeline.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    try:
        while not done():
            if task.done():
                task.result()
            assert loop.time() < deadline, "the pipeline did not get there in time"
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_poison_record_in_a_batch_is_dead_lettered_and_the_others_effects_happen() -> None:
    consumer = _FakeConsumer(
        {
            TP0: [_record(0, 1, b"a"), _record(0, 2, b"poison"), _record(0, 3, b"garbage")],
            TP1: [_record(1, 5, b"b")],
        }
    )
    producer = _FakeProducer()
    calls: list[list[bytes]] = []
    done: list[bytes] = []

    async def effect(items: Any) -> None:
        values = [i.value for i in items]
        calls.append(values)
        if b"poison" in values:
            raise RuntimeError("a bug")
        done.extend(values)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        retry=_FAST,
    )
    await _run_until(pipeline, lambda: consumer.commits)
    # the batch once (the undecodable record never reaches it), then each record alone
    assert calls[0] == [b"a", b"poison", b"b"]
    assert calls[1:] == [[b"a"], [b"poison"], [b"poison"], [b"b"]]
    assert done == [b"a", b"b"]
    assert sorted(producer.dead_letters) == [("t.dlq", "2"), ("t.dlq", "3")]
    assert consumer.commits == [{TP0: 4, TP1: 6}]


async def test_a_dependency_outage_past_its_budget_stops_the_pipeline_and_commits_nothing() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1)]})
    attempts = 0

    async def effect(items: Any) -> None:
        nonlocal attempts
        attempts += 1
        raise DependencyUnavailable("mongo down")

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        retry=_FAST,
    )
    with pytest.raises(DependencyUnavailable):
        await asyncio.wait_for(pipeline.run(), timeout=5)
    assert attempts > 1  # retried within the budget, never record by record
    assert consumer.commits == []


async def test_batches_follow_each_other_in_order_and_commit_when_idle() -> None:
    consumer = _FakeConsumer(
        {TP0: [_record(0, n) for n in range(1, 4)]}, {TP0: [_record(0, n) for n in range(4, 9)]}
    )
    seen: list[int] = []

    async def effect(items: Any) -> None:
        seen.extend(i.offset for i in items)
        await asyncio.sleep(0.01)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        policy=BatchPolicy(max_records=2, commit_interval_s=60),
    )
    await _run_until(pipeline, lambda: consumer.commits and consumer.commits[-1] == {TP0: 9})
    assert seen == list(range(1, 9))
    # batches of at most 2; the first committed at once, then nothing within the interval
    # while records waited, and the rest together once idle
    assert consumer.commits == [{TP0: 3}, {TP0: 9}]


async def test_a_partition_that_is_behind_is_paused_while_the_others_flow() -> None:
    consumer = _FakeConsumer(
        {TP0: [_record(0, n) for n in range(20)], TP1: [_record(1, 0)]},
    )
    release = asyncio.Event()
    paused_during: list[set[TopicPartition]] = []

    async def effect(items: Any) -> None:
        await release.wait()

    def paused_then_drained() -> bool:
        if not release.is_set() and consumer.paused():
            paused_during.append(consumer.paused())
            release.set()  # the effect catches up
        return release.is_set() and not consumer.paused() and bool(consumer.commits)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        policy=BatchPolicy(max_records=2, pause_at=10, resume_at=2, poll_timeout_ms=5),
    )
    await _run_until(pipeline, paused_then_drained)
    assert paused_during == [{TP0}]  # TP1 (one record waiting) was never paused
    assert consumer.commits[-1] == {TP0: 20, TP1: 1}
