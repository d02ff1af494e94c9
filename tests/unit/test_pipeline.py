"""The shared consumer pipeline (shared/pipeline.py): its pure decisions (when a batch is ready,
which records a batch takes, which partitions to pause, when to commit), what it commits, and the
dead-letter rule for a batch with a fake consumer and producer (the real broker:
tests/integration/test_pipeline.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from prometheus_client import REGISTRY

from shared import pipeline as pipeline_module
from shared.errors import DependencyUnavailable, InvalidRequest
from shared.kafka import DeadLetterGuard, RetryPolicy, TooManyDeadLetters
from shared.pipeline import (
    NO_PARTITION,
    Batcher,
    BatchPolicy,
    FairBuffer,
    Item,
    Pipeline,
    commit_due,
    group_by_key,
    partitions_to_poll,
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


def test_a_partition_with_a_backlog_does_not_hold_up_the_others_records() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=4))
    buffer.add([_item(0, n) for n in range(100)], now=0.0)  # one tenant's burst
    buffer.add([_item(1, 7), _item(2, 3), _item(1, 8)], now=0.1)
    first = [(i.record.partition, i.offset) for i in buffer.take(now=0.2)]
    assert first == [(0, 0), (1, 7), (2, 3), (0, 1)]  # one per partition per turn
    second = [(i.record.partition, i.offset) for i in buffer.take(now=0.3)]
    assert second == [(1, 8), (0, 2), (0, 3), (0, 4)]  # each partition in offset order
    assert buffer.waiting() == {TP0: 95}


def test_the_fair_buffer_takes_one_item_per_key_per_turn_in_each_keys_order() -> None:
    buffer: FairBuffer[str, int] = FairBuffer()
    for n in range(1000):
        buffer.add("campaign", n)
    buffer.add("other", -1)
    buffer.add("third", -2)
    buffer.add("other", -3)
    assert buffer.take(3) == [0, -1, -2]  # the burst's key took one turn like the others
    assert buffer.take(3) == [1, -3, 2]  # served keys went to the back; "third" left
    assert len(buffer) == 997
    assert buffer.waiting() == {"campaign": 997}
    taken = buffer.take(5000)
    assert taken == list(range(3, 1000)) and len(buffer) == 0 and buffer.take(10) == []
    buffer.add("a", 1)
    buffer.add("b", 2)
    assert buffer.drop({"a", "z"}) == 1 and buffer.take(10) == [2]


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


def test_fair_by_key_another_keys_record_behind_a_backlog_on_its_partition_comes_next() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=3, fair_by_key=True))
    buffer.add([_item(0, n, key=b"campaign") for n in range(100)], now=0.0)
    buffer.add([_item(0, 100, key=b"other"), _item(1, 0, key=b"campaign")], now=0.0)
    buffer.add([_item(0, 101, key=b"other")], now=0.0)
    first = [(i.record.partition, i.value, i.offset) for i in buffer.take(now=0.0)]
    assert first == [(0, b"campaign", 0), (0, b"other", 100), (1, b"campaign", 0)]
    second = [(i.value, i.offset) for i in buffer.take(now=0.0)]
    assert second == [(b"campaign", 1), (b"other", 101), (b"campaign", 2)]  # each key in order
    assert buffer.waiting() == {TP0: 97}  # counted by partition, for the backpressure
    assert buffer.drop({TP0}) == 97 and len(buffer) == 0 and buffer.waiting() == {}


def test_without_fair_by_key_a_partitions_records_come_out_in_offset_order() -> None:
    buffer: Batcher[bytes] = Batcher(BatchPolicy(max_records=3))
    buffer.add([_item(0, n, key=b"campaign") for n in range(3)], now=0.0)
    buffer.add([_item(0, 3, key=b"other")], now=0.0)
    assert [i.offset for i in buffer.take(now=0.0)] == [0, 1, 2]
    assert buffer.waiting() == {TP0: 1}


def test_an_inconsistent_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_records=0)
    with pytest.raises(ValueError):
        BatchPolicy(pause_at=10, resume_at=10)


# --- offsets, pauses, commits ------------------------------------------------------------------


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


def test_a_poll_names_the_partitions_not_held_back_and_no_partition_if_all_are() -> None:
    assert partitions_to_poll({TP0, TP1}, held=set()) == []  # all of them
    assert partitions_to_poll({TP0, TP1}, held={TP0}) == [TP1]
    # still a poll (a consumer that stops polling leaves its group), one that takes nothing
    assert partitions_to_poll({TP0, TP1}, held={TP0, TP1}) == [NO_PARTITION]
    assert NO_PARTITION not in {TP0, TP1, TP2}


def test_commits_wait_for_the_interval_busy_or_idle() -> None:
    finished = {TP0: 3}
    assert not commit_due(finished, now=10.0, last_commit=9.9, interval_s=0.5)
    assert commit_due(finished, now=10.4, last_commit=9.9, interval_s=0.5)
    assert commit_due(finished, now=10.0, last_commit=float("-inf"), interval_s=0.5)
    assert not commit_due({}, now=10.0, last_commit=0.0, interval_s=0.5)


def test_grouping_by_key_keeps_each_keys_offset_order() -> None:
    batch = [_item(0, 1, b"a"), _item(0, 2, b"b"), _item(0, 3, b"a"), _item(1, 1, b"b")]
    groups = group_by_key(batch, lambda i: i.value)
    assert {k: [(i.record.partition, i.offset) for i in g] for k, g in groups.items()} == {
        b"a": [(0, 1), (0, 3)],
        b"b": [(0, 2), (1, 1)],
    }


# --- the dead-letter rule for a batch (fake consumer and producer) ------------------------------


class _FakeConsumer:
    """Hands out its polls in order (`feed` adds one), then waits (the test stops the pipeline).
    A poll for some partitions (`getmany(*partitions)`) returns only theirs and keeps the
    others' records for a later poll, as aiokafka keeps a fetch that was not read. The first
    `failing_commits` commits are refused as after a rebalance."""

    def __init__(self, *polls: dict[TopicPartition, list[Any]], failing_commits: int = 0) -> None:
        self._polls = list(polls)
        self.commits: list[dict[TopicPartition, int]] = []
        self.refused: list[dict[TopicPartition, int]] = []
        self.polled: list[frozenset[TopicPartition]] = []  # each poll's partitions (empty: all)
        self.timeouts: list[int] = []  # each poll's timeout_ms
        self._failing_commits = failing_commits

    def feed(self, poll: dict[TopicPartition, list[Any]]) -> None:
        self._polls.append(poll)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.polled.append(frozenset(partitions))
        self.timeouts.append(timeout_ms)
        poll = self._polls.pop(0) if self._polls else {}
        if partitions:
            kept = {tp: records for tp, records in poll.items() if tp not in partitions}
            if kept:
                self._polls.insert(0, kept)
            poll = {tp: records for tp, records in poll.items() if tp in partitions}
        if not poll:
            await asyncio.sleep(timeout_ms / 1000)
        return poll

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1, TP2}

    def pause(self, *tps: TopicPartition) -> None:
        raise AssertionError("aiokafka drops a paused partition's fetch half-read: never pause")

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._failing_commits:
            self._failing_commits -= 1
            self.refused.append(offsets)
            raise CommitFailedError("the group rebalanced")
        self.commits.append(offsets)


class _FakeProducer:
    """Keeps the dead letters sent to it; the first `failures` sends fail as a broker would."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self._failures = failures

    async def send_and_wait(self, topic: str, value: bytes, key: bytes, headers: Any) -> None:
        if self._failures:
            self._failures -= 1
            raise KafkaConnectionError("broker gone")
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": dict(headers)})

    @property
    def dead_letters(self) -> list[tuple[str, str]]:
        return [(d["topic"], d["headers"]["source_offset"].decode()) for d in self.sent]


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
    # the batch once (the undecodable record never reaches it; the partitions take turns),
    # then each record alone
    assert calls[0] == [b"a", b"b", b"poison"]
    assert calls[1:] == [[b"a"], [b"b"], [b"poison"], [b"poison"]]
    assert done == [b"a", b"b"]
    assert sorted(producer.dead_letters) == [("t.dlq", "2"), ("t.dlq", "3")]
    assert consumer.commits == [{TP0: 4, TP1: 6}]


async def test_a_dependency_outage_past_its_budget_stops_the_pipeline_and_commits_nothing() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1)]})
    producer = _FakeProducer()
    attempts = 0

    async def effect(items: Any) -> None:
        nonlocal attempts
        attempts += 1
        raise DependencyUnavailable("mongo down")

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        retry=_FAST,
    )
    with pytest.raises(DependencyUnavailable):
        await asyncio.wait_for(pipeline.run(), timeout=5)
    assert attempts > 1  # retried within the budget, never record by record
    assert consumer.commits == []
    assert producer.sent == []  # an outage is not the record's fault


async def test_batches_follow_each_other_in_order_and_commit_once_per_interval() -> None:
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
        policy=BatchPolicy(max_records=2, commit_interval_s=0.3),
    )
    await _run_until(pipeline, lambda: consumer.commits and consumer.commits[-1] == {TP0: 9})
    assert seen == list(range(1, 9))
    # batches of at most 2; the first committed at once, then nothing within the interval
    # (the rest are finished within it), then the rest together once it has passed, though
    # the pipeline was idle before that
    assert consumer.commits == [{TP0: 3}, {TP0: 9}]


async def test_fair_by_key_commits_only_each_partitions_finished_prefix() -> None:
    campaign = [_record(0, n, key=b"campaign") for n in range(10)]
    consumer = _FakeConsumer({TP0: [*campaign, _record(0, 10, key=b"other")]})
    handled: list[int] = []
    finished_at_commit: list[set[int]] = []
    commit = consumer.commit

    async def commit_and_look(offsets: dict[TopicPartition, int]) -> None:
        finished_at_commit.append(set(handled))
        await commit(offsets)

    consumer.commit = commit_and_look  # type: ignore[method-assign]

    async def effect(items: Any) -> None:
        handled.extend(i.offset for i in items)

    policy = BatchPolicy(max_records=2, commit_interval_s=0.0, fair_by_key=True)
    pipeline = _pipeline(consumer, _FakeProducer(), effect, policy=policy)
    await _run_until(pipeline, lambda: consumer.commits and consumer.commits[-1] == {TP0: 11})
    assert handled[:2] == [0, 10]  # the other key's record came in the first batch
    for finished, positions in zip(finished_at_commit, consumer.commits, strict=True):
        position = positions[TP0]
        # never past a record not finished: every offset below the position was handled
        assert set(range(position)) <= finished
    assert consumer.commits[0] == {TP0: 1}  # not 11: offsets 1-9 were still waiting


async def test_records_dropped_at_a_revocation_are_never_committed_past() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, n, key=bytes([n % 2])) for n in range(6)]})
    started, release = asyncio.Event(), asyncio.Event()
    batches: list[list[int]] = []

    async def effect(items: Any) -> None:
        batches.append([i.offset for i in items])
        started.set()
        await release.wait()

    policy = BatchPolicy(max_records=2, commit_interval_s=0.0, fair_by_key=True)
    pipeline = _pipeline(consumer, _FakeProducer(), effect, policy=policy)
    task = asyncio.create_task(pipeline.run())
    try:
        await asyncio.wait_for(started.wait(), timeout=5)
        # the first batch (offsets 0 and 1) is in flight when the partition is revoked
        revoking = asyncio.create_task(pipeline.listener.on_partitions_revoked({TP0}))
        await asyncio.sleep(0.01)
        assert not revoking.done()  # waits for the batch in flight
        release.set()
        await revoking
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert batches == [[0, 1]]
    assert consumer.commits == [{TP0: 2}]  # 2-5 were dropped, not finished


async def test_a_partition_that_is_behind_is_left_out_of_the_polls_while_the_others_flow() -> None:
    consumer = _FakeConsumer(
        {TP0: [_record(0, n) for n in range(20)], TP1: [_record(1, 0)]},
    )
    release = asyncio.Event()
    held_during: list[frozenset[TopicPartition]] = []

    async def effect(items: Any) -> None:
        await release.wait()

    def held_then_drained() -> bool:
        last = consumer.polled[-1] if consumer.polled else frozenset()
        if not release.is_set() and last:
            held_during.append(last)
            release.set()  # the effect catches up
        return release.is_set() and not last and bool(consumer.commits)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        policy=BatchPolicy(max_records=2, pause_at=10, resume_at=2, poll_timeout_ms=5),
    )
    await _run_until(pipeline, held_then_drained)
    assert held_during == [{TP1, TP2}]  # TP0 held back; TP1 (one record waiting) still polled
    committed: dict[TopicPartition, int] = {}
    for commit in consumer.commits:
        committed.update(commit)
    assert committed == {TP0: 20, TP1: 1}


async def test_a_held_partitions_fetched_records_are_read_on_in_order_once_it_is_polled_again() -> (
    None
):
    # the second poll brings more of TP0 while it is held: they wait (as aiokafka's unread
    # fetch does) and come after the first ones, none lost, none twice
    consumer = _FakeConsumer(
        {TP0: [_record(0, n) for n in range(12)]},
        {TP0: [_record(0, n) for n in range(12, 30)], TP1: [_record(1, 0)]},
    )
    seen: list[tuple[int, int]] = []

    async def effect(items: Any) -> None:
        seen.extend((item.record.partition, item.offset) for item in items)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        policy=BatchPolicy(max_records=3, pause_at=10, resume_at=2, poll_timeout_ms=5),
    )
    await _run_until(pipeline, lambda: len(seen) == 31 and bool(consumer.commits))
    assert [offset for partition, offset in seen if partition == 0] == list(range(30))
    assert (1, 0) in seen
    assert frozenset({TP1, TP2}) in consumer.polled  # TP0 was held at least once


def _behind_everywhere(*later: dict[TopicPartition, list[Any]]) -> _FakeConsumer:
    """Ten records in each of the three partitions in the first poll (pause_at 3: every one
    is behind at once), then the later polls."""
    first = {tp: [_record(tp.partition, n) for n in range(10)] for tp in (TP0, TP1, TP2)}
    return _FakeConsumer(first, *later)


async def test_a_pipeline_holding_every_partition_back_goes_on_polling_no_partition() -> None:
    consumer = _behind_everywhere()
    calls = 0

    async def stuck(items: Any) -> None:  # a slow effect: the first batch never ends
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    policy = BatchPolicy(max_records=2, pause_at=3, resume_at=1, poll_timeout_ms=20)
    pipeline = _pipeline(consumer, _FakeProducer(), stuck, policy=policy)
    all_held = frozenset({NO_PARTITION})
    await _run_until(pipeline, lambda: consumer.polled.count(all_held) >= 5)
    assert pipeline.held_back == {TP0, TP1, TP2}
    since = consumer.polled.index(all_held)
    # polled on (aiokafka leaves the group of a consumer that stops), taking nothing and
    # never waiting in the poll (the pipeline waits for the effect to take a batch instead)
    assert set(consumer.polled[since:]) == {all_held}
    assert set(consumer.timeouts[since:]) == {0}
    assert calls == 1


async def test_a_pipeline_holding_every_partition_back_polls_again_as_soon_as_it_catches_up() -> (
    None
):
    # a poll timeout far longer than the test: once the effect has taken TP0 down to
    # resume_at, the pipeline polls it at once (TP0's later records), not a timeout later
    consumer = _behind_everywhere({TP0: [_record(0, n) for n in range(10, 13)]})
    release = asyncio.Event()
    seen: list[tuple[int, int]] = []

    async def effect(items: Any) -> None:
        await release.wait()
        seen.extend((item.record.partition, item.offset) for item in items)

    def held_then_caught_up() -> bool:
        if pipeline.held_back == {TP0, TP1, TP2}:
            release.set()
        return len(seen) == 33

    policy = BatchPolicy(max_records=2, pause_at=3, resume_at=1, poll_timeout_ms=60_000)
    pipeline = _pipeline(consumer, _FakeProducer(), effect, policy=policy)
    await _run_until(pipeline, held_then_caught_up, deadline_s=5.0)
    assert [offset for partition, offset in seen if partition == 0] == list(range(13))


def _pipeline(
    consumer: _FakeConsumer,
    producer: _FakeProducer,
    effect: Any,
    *,
    policy: BatchPolicy | None = None,
    guard: DeadLetterGuard | None = None,
) -> Pipeline[bytes]:
    return Pipeline(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        policy=policy or BatchPolicy(poll_timeout_ms=5),
        retry=_FAST,
        guard=guard,
    )


def _dead_letters_counted(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("hala_dead_letters_total", {"service": "unit", "reason": reason})
        or 0.0
    )


async def test_a_dead_letter_says_why_and_where_from_and_keeps_the_records_own_headers() -> None:
    poison = ConsumerRecord(
        "t", 0, 5, 0, 0, b"a", b"poison", None, 1, 1, [("traceparent", b"00-abc-01")]
    )
    consumer = _FakeConsumer({TP0: [_record(0, 4), poison, _record(0, 6)]})
    producer = _FakeProducer()
    tries: list[list[int]] = []
    before = _dead_letters_counted("unexpected")

    async def effect(items: Any) -> None:
        tries.append([i.offset for i in items])
        if any(i.value == b"poison" for i in items):
            raise KeyError("a field nobody foresaw")

    await _run_until(_pipeline(consumer, producer, effect), lambda: consumer.commits)
    # the batch, then each record alone: the poison one as many times as the policy says
    assert tries == [[4, 5, 6], [4], [5], [5], [6]]
    assert consumer.commits == [{TP0: 7}]  # the partition moved on past the dead letter
    [dead] = producer.sent
    assert (dead["topic"], dead["key"], dead["value"]) == ("t.dlq", b"a", b"poison")
    headers = dead["headers"]
    assert headers["traceparent"] == b"00-abc-01"
    assert (headers["error_type"], headers["error_reason"]) == (b"KeyError", b"unexpected")
    assert b"a field nobody foresaw" in headers["error_detail"]
    assert headers["error_traceback"].startswith(b"Traceback (most recent call last)")
    assert b"in effect" in headers["error_traceback"]
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        b"t",
        b"0",
        b"5",
    )
    assert (headers["service"], headers["attempts"]) == (b"unit", b"2")
    assert int(headers["dead_lettered_at"]) > 1_700_000_000_000
    assert _dead_letters_counted("unexpected") == before + 1


async def test_a_bug_that_goes_away_on_a_retry_writes_no_dead_letter() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1)]})
    producer = _FakeProducer()
    calls = 0

    async def flaky(items: Any) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the batch, and the record's first try alone
            raise RuntimeError("a race")

    await _run_until(_pipeline(consumer, producer, flaky), lambda: consumer.commits)
    assert calls == 3
    assert producer.sent == []
    assert consumer.commits == [{TP0: 2}]


async def test_a_permanent_error_is_dead_lettered_at_once() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1, b"refused"), _record(0, 2)]})
    producer = _FakeProducer()
    alone: list[int] = []
    before = _dead_letters_counted("permanent")

    async def effect(items: Any) -> None:
        if len(items) == 1:
            alone.append(items[0].offset)
        if any(i.value == b"refused" for i in items):
            raise InvalidRequest("not a SendRequested", code="undecodable_event")

    await _run_until(_pipeline(consumer, producer, effect), lambda: consumer.commits)
    assert alone == [1, 2]  # tried once alone, not retried
    [dead] = producer.sent
    headers = dead["headers"]
    assert (headers["error_reason"], headers["attempts"]) == (b"permanent", b"1")
    assert headers["error_type"] == b"InvalidRequest"
    assert consumer.commits == [{TP0: 3}]
    assert _dead_letters_counted("permanent") == before + 1


async def test_a_dead_letter_is_written_once_the_broker_is_back() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1)]})
    producer = _FakeProducer(failures=2)

    async def bug(items: Any) -> None:
        raise RuntimeError("a bug")

    await _run_until(_pipeline(consumer, producer, bug), lambda: consumer.commits)
    assert producer.dead_letters == [("t.dlq", "1")]
    assert consumer.commits == [{TP0: 2}]


@pytest.mark.parametrize("bad", ["effect", "decode"])
async def test_too_many_dead_letters_in_a_row_stop_the_pipeline_before_the_batch_is_committed(
    bad: str,
) -> None:
    value = b"garbage" if bad == "decode" else b"v"
    consumer = _FakeConsumer({TP0: [_record(0, n, value) for n in range(10)]})
    producer = _FakeProducer()

    async def bad_deploy(items: Any) -> None:
        raise AttributeError("'NoneType' object has no attribute 'id'")

    pipeline = _pipeline(consumer, producer, bad_deploy, guard=DeadLetterGuard(limit_in_a_row=4))
    # A bound, not a pace: each dead letter logs its traceback, which takes seconds on a
    # loaded machine (5 s failed there, on main's code too).
    with pytest.raises(TooManyDeadLetters):
        await asyncio.wait_for(pipeline.run(), timeout=30)
    assert len(producer.sent) == 4  # stopped, not drained
    assert consumer.commits == []


async def _stop_during_the_third_batch(
    consumer: _FakeConsumer, stop: str, timeout_s: float = 5.0
) -> None:
    """Three records in batches of one: the first is committed at once, the second is finished
    but waits for the commit interval, and the pipeline stops during the third."""
    third = asyncio.Event()

    async def effect(items: Any) -> None:
        if items[0].offset == 3:
            third.set()
            if stop == "outage":
                raise DependencyUnavailable("mongo down")
            await asyncio.Event().wait()

    policy = BatchPolicy(max_records=1, commit_interval_s=60, poll_timeout_ms=5)
    task = asyncio.create_task(_pipeline(consumer, _FakeProducer(), effect, policy=policy).run())
    if stop == "outage":
        with pytest.raises(DependencyUnavailable):
            await asyncio.wait_for(task, timeout_s)
        return
    await asyncio.wait_for(third.wait(), timeout_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout_s)


@pytest.mark.parametrize("stop", ["cancelled", "outage"])
async def test_what_is_finished_is_committed_when_the_pipeline_stops(stop: str) -> None:
    consumer = _FakeConsumer({TP0: [_record(0, n) for n in (1, 2, 3)]})
    await _stop_during_the_third_batch(consumer, stop)
    assert consumer.commits == [{TP0: 2}, {TP0: 3}]


async def test_a_commit_refused_by_a_rebalance_is_not_fatal_and_later_ones_go_through() -> None:
    consumer = _FakeConsumer({TP0: [_record(0, 1)]}, failing_commits=1)
    handled: list[int] = []
    fed = False

    async def effect(items: Any) -> None:
        handled.extend(i.offset for i in items)

    def refused_then_committed() -> bool:
        nonlocal fed
        if consumer.refused and not fed:  # the next record arrives after the refusal
            consumer.feed({TP0: [_record(0, 2)]})
            fed = True
        return bool(consumer.commits)

    await _run_until(_pipeline(consumer, _FakeProducer(), effect), refused_then_committed)
    assert handled == [1, 2]
    assert consumer.refused == [{TP0: 2}]
    assert consumer.commits == [{TP0: 3}]


async def test_a_broker_that_no_longer_answers_does_not_hold_up_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class _Hanging(_FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            if self.commits:  # the first goes through, the one at the stop never answers
                await asyncio.Event().wait()
            self.commits.append(offsets)

    monkeypatch.setattr(pipeline_module, "FINAL_COMMIT_TIMEOUT_S", 0.05)
    consumer = _Hanging({TP0: [_record(0, n) for n in (1, 2, 3)]})
    await _stop_during_the_third_batch(consumer, "cancelled", timeout_s=2)
    assert consumer.commits == [{TP0: 2}]


async def test_a_stop_during_a_commit_commits_those_positions_at_the_stop() -> None:
    committing = asyncio.Event()

    class _SlowFirstCommit(_FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            if not committing.is_set():  # the stop arrives while the first is in flight
                committing.set()
                await asyncio.Event().wait()
            self.commits.append(offsets)

    async def effect(items: Any) -> None:
        pass

    consumer = _SlowFirstCommit({TP0: [_record(0, 1), _record(0, 2)]})
    task = asyncio.create_task(_pipeline(consumer, _FakeProducer(), effect).run())
    await asyncio.wait_for(committing.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert consumer.commits == [{TP0: 3}]


async def test_records_read_again_from_an_earlier_offset_are_skipped_not_a_crash() -> None:
    # aiokafka resets a partition's position back (no rebalance): offsets 2 and 3 come again,
    # with offset 4 new; each record's effect happens once and the commit reaches 5
    consumer = _FakeConsumer(
        {TP0: [_record(0, 1, b"a"), _record(0, 2, b"b"), _record(0, 3, b"c")]},
        {TP0: [_record(0, 2, b"b"), _record(0, 3, b"c"), _record(0, 4, b"d")]},
    )
    done: list[bytes] = []

    async def effect(items: Any) -> None:
        done.extend(i.value for i in items)

    pipeline = Pipeline(
        consumer,  # type: ignore[arg-type]
        _FakeProducer(),  # type: ignore[arg-type]
        decode=_decode,
        effect=effect,
        service="unit",
        retry=_FAST,
    )
    await _run_until(pipeline, lambda: consumer.commits and consumer.commits[-1] == {TP0: 5})
    assert done == [b"a", b"b", b"c", b"d"]
