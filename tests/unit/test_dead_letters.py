"""The dead-letter rule's parts in shared/kafka.py, with fakes (no broker): the retry of transient
errors, `attempt_record`, the dead letter's headers, `DeadLetters` and its guard. How a consumer
applies them: tests/unit/test_pipeline.py (and tests/unit/sender for the sender's lanes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from shared.errors import DependencyUnavailable, InvalidRequest
from shared.kafka import (
    DLQ_HEADERS,
    ERROR_DETAIL_LIMIT,
    ERROR_TRACEBACK_LIMIT,
    DeadLetterGuard,
    DeadLetters,
    Failure,
    RetryPolicy,
    TooManyDeadLetters,
    attempt_record,
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
    """The sender's lanes give records up concurrently through one `DeadLetters`: once the guard
    tripped, every dead letter that comes after raises instead of being written."""
    sent: list[int] = []

    class _Producer:
        async def send_and_wait(self, topic: str, value: bytes, key: bytes, headers: Any) -> None:
            sent.append(int(dict(headers)["source_offset"]))

    dead_letters = DeadLetters(
        _Producer(),  # type: ignore[arg-type]
        "unit",
        DeadLetterGuard(limit_in_a_row=3),
    )
    records = [ConsumerRecord("t", 0, n, 0, 0, b"k", b"v", None, 1, 1, []) for n in range(8)]
    results = await asyncio.gather(
        *(dead_letters.send(r, Failure(_raised(KeyError("bug")), 3)) for r in records),
        return_exceptions=True,
    )
    assert sent == [0, 1, 2]  # stopped, not drained
    assert results[:2] == [None, None]
    assert all(isinstance(result, TooManyDeadLetters) for result in results[2:])
    assert dead_letters.guard.tripped
