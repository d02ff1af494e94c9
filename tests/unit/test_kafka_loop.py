"""The consumer loop's retry and dead-letter rules, with fakes (no broker)."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from prometheus_client import REGISTRY

from shared.errors import DependencyUnavailable, InvalidRequest
from shared.kafka import (
    DLQ_HEADERS,
    ERROR_DETAIL_LIMIT,
    ERROR_TRACEBACK_LIMIT,
    DeadLetterGuard,
    Failure,
    RetryPolicy,
    TooManyDeadLetters,
    attempt_record,
    consume_concurrently,
    dead_letter_headers,
    failure_reason,
    retry_transient,
)


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
    batches = {
        tp0: [record(0, 5, b"a"), record(0, 6, b"b"), record(0, 7, b"a")],
        tp1: [record(1, 9, b"b")],
    }
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
        await consume_concurrently(
            consumer,
            None,
            handle,
            service="unit",  # type: ignore[arg-type]
            key_of=lambda r: r.key,
        )
    assert [o for k, o in seen if k == b"a"] == [5, 7]
    assert [o for k, o in seen if k == b"b"] == [6, 9]
    assert overlap, "different keys should be handled concurrently"
    assert consumer.commits == [{tp0: 8, tp1: 10}]


def _record(partition: int, offset: int) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


async def _consume(consumer: _FakeConsumer, handled: list[int]) -> None:
    from shared.kafka import consume_concurrently

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        handled.append(r.offset)

    with pytest.raises(_Stop):
        await consume_concurrently(
            consumer,
            None,
            handle,
            service="unit",  # type: ignore[arg-type]
            key_of=lambda r: r.key,
            commit_interval_s=60,
        )


async def test_batches_finished_within_the_interval_are_committed_together_when_idle() -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = _FakeConsumer(
        {tp0: [_record(0, 1)]}, {tp0: [_record(0, 2)]}, {tp1: [_record(1, 7)]}, {}
    )
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
    consumer = _FakeConsumer(
        {tp: [_record(0, 1)]}, {}, {tp: [_record(0, 2)]}, {}, failing_commits=1
    )
    handled: list[int] = []
    await _consume(consumer, handled)
    assert handled == [1, 2]
    assert consumer.commits == [{tp: 3}]


async def test_a_broker_that_no_longer_answers_does_not_hold_up_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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


# --- no record can stop the loop ------------------------------------------------------------

FAST = RetryPolicy(
    first_delay=0.001,
    max_delay=0.002,
    budget_seconds=0.05,
    unexpected_attempts=3,
    unexpected_first_delay=0.001,
)


class _FakeProducer:
    """Keeps what was sent to it; the first `failures` sends fail as a broker would."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[dict] = []  # type: ignore[type-arg]
        self._failures = failures

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list | None = None,
    ) -> None:  # type: ignore[type-arg]
        if self._failures:
            self._failures -= 1
            raise KafkaConnectionError("broker gone")
        self.sent.append(
            {"topic": topic, "value": value, "key": key, "headers": dict(headers or [])}
        )


def _keyed(
    partition: int, offset: int, key: bytes, value: bytes = b"v", headers: list | None = None
) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord("t", partition, offset, 0, 0, key, value, None, 1, 1, headers or [])


async def _run(
    consumer: _FakeConsumer,
    producer: _FakeProducer,
    handle,  # type: ignore[no-untyped-def]
    guard: DeadLetterGuard | None = None,
) -> None:
    with pytest.raises(_Stop):
        await consume_concurrently(
            consumer,
            producer,
            handle,  # type: ignore[arg-type]
            service="unit",
            key_of=lambda r: r.key,
            retry=FAST,
            guard=guard,
            commit_interval_s=60,
        )


def _dead_letters(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("hala_dead_letters_total", {"service": "unit", "reason": reason})
        or 0.0
    )


async def test_a_bug_on_one_record_is_retried_then_dead_lettered_and_the_partition_moves_on() -> (
    None
):
    tp = TopicPartition("t", 0)
    poison = _keyed(0, 5, b"a", b'{"odd": true}', headers=[("traceparent", b"00-abc-01")])
    consumer = _FakeConsumer({tp: [_keyed(0, 4, b"a"), poison, _keyed(0, 6, b"a")]}, {})
    producer = _FakeProducer()
    tries: list[int] = []
    before = _dead_letters("unexpected")

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        tries.append(r.offset)
        if r.offset == 5:
            raise KeyError("a field nobody foresaw")

    await _run(consumer, producer, handle)

    assert tries == [4, 5, 5, 5, 6]  # three tries, then the records after it
    assert consumer.commits == [{tp: 7}]  # the partition moved on past the dead letter
    [dead] = producer.sent
    assert (dead["topic"], dead["key"], dead["value"]) == ("t.dlq", b"a", b'{"odd": true}')
    headers = dead["headers"]
    assert headers["traceparent"] == b"00-abc-01"
    assert headers["error_type"] == b"KeyError"
    assert headers["error_reason"] == b"unexpected"
    assert b"a field nobody foresaw" in headers["error_detail"]
    assert headers["error_traceback"].startswith(b"Traceback (most recent call last)")
    assert b"in handle" in headers["error_traceback"]
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        b"t",
        b"0",
        b"5",
    )
    assert (headers["service"], headers["attempts"]) == (b"unit", b"3")
    assert int(headers["dead_lettered_at"]) > 1_700_000_000_000
    assert _dead_letters("unexpected") == before + 1


async def test_a_bug_that_goes_away_on_a_retry_writes_no_dead_letter() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, 1, b"a")]}, {})
    producer = _FakeProducer()
    calls = 0

    async def flaky(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a race")

    await _run(consumer, producer, flaky)
    assert calls == 2
    assert producer.sent == []
    assert consumer.commits == [{tp: 2}]


async def test_a_permanent_error_is_dead_lettered_at_once() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, 1, b"a"), _keyed(0, 2, b"b")]}, {})
    producer = _FakeProducer()
    calls: list[int] = []
    before = _dead_letters("permanent")

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        calls.append(r.offset)
        if r.offset == 1:
            raise InvalidRequest("not a SendRequested", code="undecodable_event")

    await _run(consumer, producer, handle)
    assert sorted(calls) == [1, 2]
    [dead] = producer.sent
    assert dead["headers"]["error_reason"] == b"permanent"
    assert dead["headers"]["attempts"] == b"1"
    assert dead["headers"]["error_type"] == b"InvalidRequest"
    assert consumer.commits == [{tp: 3}]
    assert _dead_letters("permanent") == before + 1


async def test_a_dependency_outage_past_its_budget_stops_the_loop_without_a_commit_or_dlq() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, 1, b"a")]}, {})
    producer = _FakeProducer()

    async def down(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        raise DependencyUnavailable("mongo down")

    with pytest.raises(DependencyUnavailable):
        await consume_concurrently(
            consumer,
            producer,
            down,  # type: ignore[arg-type]
            service="unit",
            key_of=lambda r: r.key,
            retry=FAST,
        )
    assert producer.sent == []
    assert consumer.commits == []


async def test_a_dead_letter_is_written_once_the_broker_is_back() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, 1, b"a")]}, {})
    producer = _FakeProducer(failures=2)

    async def bug(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        raise RuntimeError("a bug")

    await _run(consumer, producer, bug)
    assert len(producer.sent) == 1
    assert consumer.commits == [{tp: 2}]


async def test_too_many_dead_letters_in_a_row_stop_the_loop_before_the_batch_is_committed() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, n, b"a") for n in range(10)]}, {})
    producer = _FakeProducer()

    async def bad_deploy(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        raise AttributeError("'NoneType' object has no attribute 'id'")

    with pytest.raises(TooManyDeadLetters):
        await consume_concurrently(
            consumer,
            producer,
            bad_deploy,  # type: ignore[arg-type]
            service="unit",
            key_of=lambda r: r.key,
            retry=FAST,
            guard=DeadLetterGuard(limit_in_a_row=4),
        )
    assert len(producer.sent) == 4  # stopped, not drained
    assert consumer.commits == []


async def test_a_key_function_that_fails_on_an_odd_record_does_not_stop_the_loop() -> None:
    tp = TopicPartition("t", 0)
    consumer = _FakeConsumer({tp: [_keyed(0, 1, b"a"), _keyed(0, 2, b"b")]}, {})
    handled: list[int] = []

    async def handle(r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        handled.append(r.offset)

    def key_of(r: ConsumerRecord) -> object:  # type: ignore[type-arg]
        if r.offset == 1:
            raise ValueError("undecodable")
        return r.key

    with pytest.raises(_Stop):
        await consume_concurrently(
            consumer,
            _FakeProducer(),
            handle,  # type: ignore[arg-type]
            service="unit",
            key_of=key_of,
            retry=FAST,
        )
    assert sorted(handled) == [1, 2]
    assert consumer.commits == [{tp: 3}]


# --- the pure parts -------------------------------------------------------------------------


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as exc:
        return exc


def test_dead_letter_headers_keep_the_records_own_and_replace_an_earlier_dead_letters() -> None:
    headers = dead_letter_headers(
        [
            ("traceparent", b"00-1"),
            ("error_type", b"Old"),
            ("attempts", b"9"),
            ("replayed_from", b"t.dlq:0:3"),
        ],
        topic="t",
        partition=2,
        offset=40,
        failure=Failure(_raised(ValueError("x")), 3),
        service="sender",
        now_ms=1_764_000_000_000,
    )
    names = [name for name, _ in headers]
    assert names == ["traceparent", "replayed_from", *DLQ_HEADERS]
    values = dict(headers)
    assert values["error_type"] == b"ValueError" and values["attempts"] == b"3"
    assert values["source_partition"] == b"2" and values["source_offset"] == b"40"
    assert values["dead_lettered_at"] == b"1764000000000"


def test_a_long_traceback_keeps_its_end_within_the_limit_and_a_long_detail_its_start() -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise RuntimeError("the innermost failure " + "é" * 5000)
        deep(n - 1)

    try:
        deep(30)
    except RuntimeError as exc:
        error = exc
    values = dict(
        dead_letter_headers(
            None, topic="t", partition=0, offset=1, failure=Failure(error, 1), service="s", now_ms=0
        )
    )
    trace = values["error_traceback"]
    assert len(trace) <= ERROR_TRACEBACK_LIMIT
    assert trace.startswith(b"...(truncated)")
    assert trace.decode().rstrip().endswith("é")  # still valid UTF-8, ends with the error
    detail = values["error_detail"]
    assert len(detail) <= ERROR_DETAIL_LIMIT
    assert detail.decode().startswith("the innermost failure")


def test_failures_are_classified_into_a_closed_set_of_reasons() -> None:
    assert failure_reason(InvalidRequest("bad")) == "permanent"
    assert failure_reason(KeyError("k")) == "unexpected"
    assert failure_reason(TypeError("t")) == "unexpected"


async def test_attempt_record_counts_attempts_and_lets_transient_errors_through() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def bug() -> None:
        raise RuntimeError("bug")

    policy = RetryPolicy(
        first_delay=0.001,
        budget_seconds=0.01,
        unexpected_attempts=4,
        unexpected_first_delay=0.5,
        max_delay=1.5,
    )
    failure = await attempt_record(bug, policy, "t", sleep=sleep)
    assert failure is not None and failure.attempts == 4 and failure.reason == "unexpected"
    assert slept == [0.5, 1.0, 1.5]  # doubling, capped

    async def down() -> None:
        raise DependencyUnavailable("down")

    with pytest.raises(DependencyUnavailable):
        await attempt_record(down, policy, "t", sleep=sleep)

    async def fine() -> None:
        return None

    assert await attempt_record(fine, policy, "t", sleep=sleep) is None


async def test_a_tripped_guard_stops_concurrent_records_from_writing_more_dead_letters() -> None:
    tp = TopicPartition("t", 0)
    keys = [bytes([65 + n]) for n in range(8)]  # eight keys: handled concurrently
    consumer = _FakeConsumer({tp: [_keyed(0, n, key) for n, key in enumerate(keys)]}, {})
    producer = _FakeProducer()

    async def bad_deploy(_: ConsumerRecord) -> None:  # type: ignore[type-arg]
        raise AttributeError("'NoneType' object has no attribute 'id'")

    with pytest.raises(TooManyDeadLetters):
        await consumer_concurrently_with_guard(consumer, producer, bad_deploy, limit=3)
    assert len(producer.sent) == 3
    assert consumer.commits == []


async def consumer_concurrently_with_guard(
    consumer: _FakeConsumer, producer: _FakeProducer, handle, limit: int
) -> None:  # type: ignore[no-untyped-def]
    await consume_concurrently(
        consumer,
        producer,
        handle,  # type: ignore[arg-type]
        service="unit",
        key_of=lambda r: r.key,
        retry=FAST,
        guard=DeadLetterGuard(limit_in_a_row=limit),
    )
