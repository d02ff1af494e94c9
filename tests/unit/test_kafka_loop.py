"""The consumer loop's retry and dead-letter rules, with fakes (no broker)."""

import pytest

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
