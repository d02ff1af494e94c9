"""The consumer loop's retry and dead-letter rules, with fakes (no broker)."""

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from shared.errors import DependencyUnavailable
from shared.kafka import DeadLetterGuard, RetryPolicy, TooManyDeadLetters, retry_transient


async def test_transient_errors_are_retried_until_the_action_succeeds() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise DependencyUnavailable("mongo down")
        return "done"

    policy = RetryPolicy(first_delay=0.001, max_delay=0.002, budget_seconds=5)
    assert await retry_transient(flaky, policy, "test") == "done"
    assert calls == 3


async def test_the_process_gives_up_when_the_retry_budget_runs_out() -> None:
    async def down() -> None:
        raise DependencyUnavailable("kafka down")

    policy = RetryPolicy(first_delay=0.001, max_delay=0.001, budget_seconds=0.01)
    with pytest.raises(DependencyUnavailable):
        await retry_transient(down, policy, "test")


def test_dead_letter_guard_stops_after_too_many_in_a_row_and_resets_on_success() -> None:
    guard = DeadLetterGuard(limit_in_a_row=3)
    guard.record_dead_letter()
    guard.record_dead_letter()
    guard.record_success()
    guard.record_dead_letter()
    guard.record_dead_letter()
    with pytest.raises(TooManyDeadLetters):
        guard.record_dead_letter()


class _FakeConsumer:
    """Hands out its polls in order ({} = nothing arrived), then stops the loop by raising."""

    def __init__(self, *polls: dict, failing_commits: int = 0) -> None:  # type: ignore[type-arg]
        self._polls = list(polls)
        self._failing_commits = failing_commits
        self.commits: list[dict] = []  # type: ignore[type-arg]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:  # type: ignore[type-arg]
        if not self._polls:
            raise _Stop
        return self._polls.pop(0)

    async def commit(self, offsets: dict) -> None:  # type: ignore[type-arg]
        if self._failing_commits:
            self._failing_commits -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(offsets)


class _Stop(Exception):
    pass


async def test_records_of_one_key_stay_in_order_while_keys_run_concurrently() -> None:
    import asyncio

    from aiokafka import ConsumerRecord, TopicPartition

    from shared.kafka import consume_concurrently

    def record(partition: int, offset: int, key: bytes) -> ConsumerRecord:  # type: ignore[type-arg]
        return ConsumerRecord("t", partition, offset, 0, 0, key, b"v", None, 1, 1, [])

    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    batches = {tp0: [record(0, 5, b"a"), record(0, 6, b"b"), record(0, 7, b"a")],
               tp1: [record(1, 9, b"b")]}
    consumer = _FakeConsumer(batches)
    seen: list[tuple[bytes, int]] = []
    running = 0
    overlap = False

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await asyncio.sleep(0)
        seen.append((r.key, r.offset))
        running -= 1

    with pytest.raises(_Stop):
        await consume_concurrently(consumer, None, handle, service="unit",  # type: ignore[arg-type]
                                   key_of=lambda r: r.key)
    assert [o for k, o in seen if k == b"a"] == [5, 7]
    assert [o for k, o in seen if k == b"b"] == [6, 9]
    assert overlap, "different keys should be handled concurrently"
    assert consumer.commits == [{tp0: 8, tp1: 10}]


async def test_a_failing_record_stops_the_batch_before_any_commit() -> None:
    from aiokafka import ConsumerRecord, TopicPartition

    from shared.kafka import consume_concurrently

    tp = TopicPartition("t", 0)
    batch = {tp: [ConsumerRecord("t", 0, 1, 0, 0, b"k", b"v", None, 1, 1, [])]}
    consumer = _FakeConsumer(batch)

    async def bug(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        await consume_concurrently(consumer, None, bug, service="unit",  # type: ignore[arg-type]
                                   key_of=lambda r: r.key)
    assert consumer.commits == []


def _record(partition: int, offset: int) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


async def _consume(consumer: _FakeConsumer, handled: list[int]) -> None:
    from shared.kafka import consume_concurrently

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        handled.append(r.offset)

    with pytest.raises(_Stop):
        await consume_concurrently(consumer, None, handle, service="unit",  # type: ignore[arg-type]
                                   key_of=lambda r: r.key, commit_interval_s=60)


async def test_batches_finished_within_the_interval_are_committed_together_when_idle() -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = _FakeConsumer({tp0: [_record(0, 1)]}, {tp0: [_record(0, 2)]},
                             {tp1: [_record(1, 7)]}, {})
    handled: list[int] = []
    await _consume(consumer, handled)
    assert handled == [1, 2, 7]
    # The first batch at once; the next two wait for the interval or a poll that finds nothing.
    assert consumer.commits == [{tp0: 2}, {tp0: 3, tp1: 8}]


async def test_what_is_finished_is_committed_when_the_loop_stops() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_record(0, 1)]}, {tp: [_record(0, 2), _record(0, 3)]})
    await _consume(consumer, [])
    assert consumer.commits == [{tp: 2}, {tp: 4}]


async def test_a_commit_refused_by_a_rebalance_is_not_fatal_and_later_ones_go_through() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_record(0, 1)]}, {}, {tp: [_record(0, 2)]}, {},
                             failing_commits=1)
    handled: list[int] = []
    await _consume(consumer, handled)
    assert handled == [1, 2]
    assert consumer.commits == [{tp: 3}]


async def test_a_broker_that_no_longer_answers_does_not_hold_up_the_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from shared import kafka

    class _Hanging(_FakeConsumer):
        async def commit(self, offsets: dict) -> None:  # type: ignore[type-arg]
            if self.commits:  # the first goes through, the one at the stop never answers
                await asyncio.Event().wait()
            self.commits.append(offsets)

    monkeypatch.setattr(kafka, "FINAL_COMMIT_TIMEOUT_S", 0.05)
    tp = TopicPartition("t", 0)
    consumer = _Hanging({tp: [_record(0, 1)]}, {tp: [_record(0, 2)]})
    await asyncio.wait_for(_consume(consumer, []), timeout=5)  # _Stop, after the final commit
    assert consumer.commits == [{tp: 2}]
