"""No message can stop the sender: a bug while handling one is retried (through the never-twice
path once a request may have left), then its record is dead-lettered and the others go on; a
crashed dispatcher is restarted; followers skip what they cannot apply. Virtual time, fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from services.sender.followers import _apply_followed
from services.sender.ports import Done
from services.sender.repository import SendRecord
from shared.kafka import DeadLetterGuard, Failure, TooManyDeadLetters
from shared.messages import THROUGHPUT_CHANGED
from tests.unit.sender.fakes import FakeStore, Harness, phone_number
from tests.unit.sender.test_worker_kafka import TP, records, running_worker, stop


class Bug(Exception):
    pass


class BuggyStore(FakeStore):
    """The real fake, raising Bug for marked messages in one method (`times` times, or always)."""

    def __init__(self, method: str, marked: set[str], times: int | None = None) -> None:
        super().__init__()
        self.method, self.marked, self.times = method, marked, times
        self.raised = 0

    def _maybe_raise(self, method: str, message_id: str) -> None:
        if (
            method == self.method
            and message_id in self.marked
            and (self.times is None or self.raised < self.times)
        ):
            self.raised += 1
            raise Bug(f"{method} failed for {message_id}")

    async def start_send(self, message_id: str, **kwargs: Any) -> SendRecord | None:
        self._maybe_raise("start_send", message_id)
        return await super().start_send(message_id, **kwargs)

    async def record_outcome(self, message_id: str, state: str, **kwargs: Any) -> SendRecord | None:
        self._maybe_raise("record_outcome", message_id)
        return await super().record_outcome(message_id, state, **kwargs)


class DeadLetterSpy:
    def __init__(self) -> None:
        self.given_up: list[tuple[list[Done], Failure]] = []

    async def __call__(self, done: list[Done], failure: Failure) -> None:
        self.given_up.append((done, failure))


def _harness(store: FakeStore, **numbers: Any) -> tuple[Harness, DeadLetterSpy]:
    h = Harness(phone_number(**numbers))
    h.store = store
    h.engine._store = store
    spy = DeadLetterSpy()
    h.engine.set_dead_letter(spy)
    return h, spy


def _unexpected(where: str) -> float:
    return REGISTRY.get_sample_value("sender_unexpected_errors_total", {"kind": where}) or 0.0


@pytest.fixture
async def closing() -> AsyncIterator[list[Harness]]:
    harnesses: list[Harness] = []
    yield harnesses
    for h in harnesses:
        await h.close()


async def test_a_bug_before_the_send_record_is_retried_then_dead_lettered_and_others_go_on(
    closing: list[Harness],
) -> None:
    events_before = _unexpected("delivery")
    store = BuggyStore("start_send", set())
    h, spy = _harness(store)
    closing.append(h)
    events = [h.event() for _ in range(5)]
    store.marked = {events[2].message_id}
    await h.admit(*events)
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 4 and spy.given_up, limit=10)
    [(done, failure)] = spy.given_up
    assert failure.attempts == 3 and isinstance(failure.error, Bug)
    assert len(done) == 1
    assert store.raised == 3
    assert events[2].message_id not in h.meta.sent_ids()
    assert sorted(h.done) == sorted(e.message_id for i, e in enumerate(events) if i != 2)
    assert h.engine.failure is None
    assert _unexpected("delivery") == events_before + 3


async def test_a_bug_after_metas_answer_is_retried_without_a_second_call_to_meta(
    closing: list[Harness],
) -> None:
    store = BuggyStore("record_outcome", set(), times=1)
    h, spy = _harness(store)
    closing.append(h)
    event = h.event()
    store.marked = {event.message_id}
    await h.admit(event)
    await h.timer.run_until_true(lambda: bool(h.published), limit=10)
    # The call reached Meta; recording its answer failed once. The retry finds our `sending`
    # record: the outcome is ambiguous, Meta is not called again.
    assert h.meta.sent_ids() == [event.message_id]
    assert [c.status for c in h.published] == ["unknown"]
    assert h.published[0].reason == "meta_outcome_ambiguous"
    assert h.done == [event.message_id]
    assert spy.given_up == []


async def test_a_bug_that_stays_after_metas_answer_ends_in_the_dlq_with_one_call(
    closing: list[Harness],
) -> None:
    store = BuggyStore("record_outcome", set())
    h, spy = _harness(store)
    closing.append(h)
    event, other = h.event(), h.event()
    store.marked = {event.message_id}
    await h.admit(event, other)
    await h.timer.run_until_true(lambda: bool(spy.given_up), limit=10)
    assert h.meta.sent_ids().count(event.message_id) == 1
    assert [c.message_id for c in h.statuses("sent")] == [other.message_id]
    assert store.sends[event.message_id]["state"] == "sending"  # kept: a call may have left
    assert h.engine.failure is None


async def test_a_message_given_up_before_any_call_leaves_no_sending_record(
    closing: list[Harness],
) -> None:
    store = FakeStore()
    h, spy = _harness(store)
    closing.append(h)
    event = h.event()

    # The bug comes after the `sending` record and before the call: from the token gate.
    original = h.engine._pass_gate
    calls = 0

    async def broken_gate(lane: Any, delivery: Any) -> bool:
        nonlocal calls
        if delivery.message_id == event.message_id:
            calls += 1
            raise Bug("gate")
        return await original(lane, delivery)

    h.engine._pass_gate = broken_gate  # type: ignore[method-assign]
    await h.admit(event)
    await h.timer.run_until_true(lambda: bool(spy.given_up), limit=10)
    assert calls == 3
    assert h.meta.calls == []
    assert event.message_id not in store.sends  # a replay of the dead letter sends it


async def test_a_crashed_dispatcher_is_restarted_and_its_messages_still_go(
    closing: list[Harness],
) -> None:
    h, spy = _harness(FakeStore())
    closing.append(h)
    before = _unexpected("dispatcher")
    original = h.engine._dispatch_once
    crashes = 0

    def crash_twice(lane: Any, now: float) -> float | None:
        nonlocal crashes
        if crashes < 2:
            crashes += 1
            raise Bug("dispatcher")
        return original(lane, now)

    h.engine._dispatch_once = crash_twice  # type: ignore[method-assign]
    events = [h.event() for _ in range(3)]
    await h.admit(*events)
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 3, limit=10)
    assert crashes == 2
    assert _unexpected("dispatcher") == before + 2
    assert h.engine.failure is None and spy.given_up == []


async def test_a_message_taken_off_the_queue_when_the_dispatcher_fails_is_not_lost(
    closing: list[Harness],
) -> None:
    h, spy = _harness(FakeStore())
    closing.append(h)
    original = h.engine._take_off
    failed = False

    async def fail_once(*args: Any) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise Bug("take off")
        await original(*args)

    h.engine._take_off = fail_once  # type: ignore[method-assign]
    events = [h.event() for _ in range(3)]
    await h.admit(*events)
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 3, limit=10)
    assert sorted(h.done) == sorted(e.message_id for e in events)
    assert spy.given_up == []


async def test_a_revoked_partition_drops_a_message_waiting_to_retry_after_a_bug(
    closing: list[Harness],
) -> None:
    store = BuggyStore("start_send", set(), times=1)
    h, spy = _harness(store)
    closing.append(h)
    event = h.event()
    store.marked = {event.message_id}
    await h.admit(event, partition="p0")
    assert store.raised == 1  # the first attempt failed; the retry waits
    await h.engine.revoke({"p0"})
    await h.timer.advance(5.0)
    assert h.meta.calls == [] and spy.given_up == [] and h.done == []
    assert h.engine.failure is None


async def test_a_bug_at_admission_is_retried_and_the_message_goes(closing: list[Harness]) -> None:
    h, spy = _harness(FakeStore())
    closing.append(h)
    original = h.engine._lane
    failed = False

    def fail_once(*args: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise Bug("lane")
        return original(*args)

    h.engine._lane = fail_once  # type: ignore[method-assign]
    events = [h.event() for _ in range(2)]
    await h.admit(*events)
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 2, limit=10)
    assert spy.given_up == [] and h.engine.failure is None


@dataclass
class _Followed:
    value: bytes
    partition: int = 0
    offset: int = 7


def test_a_followed_record_that_raises_is_skipped_and_counted() -> None:
    before = _unexpected("follower")
    applied: list[Any] = []

    def apply(event: Any) -> None:
        applied.append(event)
        raise Bug("apply")

    valid = orjson.dumps(THROUGHPUT_CHANGED.examples[0])
    _apply_followed(THROUGHPUT_CHANGED, apply, _Followed(valid))  # does not raise
    _apply_followed(THROUGHPUT_CHANGED, apply, _Followed(b"not json", offset=8))
    assert len(applied) == 1
    assert _unexpected("follower") == before + 1  # the unreadable one is only logged


async def test_a_record_whose_message_keeps_failing_is_dead_lettered_and_committed_past() -> None:
    store = BuggyStore("start_send", set())
    h = Harness()
    h.store = store
    h.engine._store = store
    worker, consumer, producer, task = await running_worker(h)
    try:
        events = [h.event() for _ in range(3)]
        store.marked = {events[0].message_id}
        await consumer.batches.put({TP: records(h, *events)})
        await h.timer.run_until_true(lambda: bool(producer.sent), limit=10)
        await h.timer.advance(1.0)
        await worker.commit_finished()
        assert consumer.commits[-1] == {TP: 3}  # past the dead letter and the others
        [(topic, value, headers)] = producer.sent
        values = dict(headers)
        assert topic.endswith(".dlq") and value == records(h, events[0])[0].value
        assert values["error_type"] == b"Bug" and values["error_reason"] == b"unexpected"
        assert values["attempts"] == b"3" and values["service"] == b"sender"
        assert values["source_offset"] == b"0"
        assert len(h.statuses("sent")) == 2
    finally:
        await stop(task, h)


async def test_many_messages_given_up_in_a_row_stop_the_worker_as_a_bad_deploy() -> None:
    store = BuggyStore("start_send", set())
    h = Harness()
    h.store = store
    h.engine._store = store
    worker, consumer, producer, task = await running_worker(h)
    worker._dead_letters.guard = DeadLetterGuard(limit_in_a_row=2)
    try:
        events = [h.event() for _ in range(4)]
        store.marked = {e.message_id for e in events}
        await consumer.batches.put({TP: records(h, *events)})
        await h.timer.run_until_true(lambda: h.engine.failure is not None, limit=10)
        await consumer.batches.put({})  # the loop looks at the engine again
        with pytest.raises(TooManyDeadLetters):
            await task
        assert len(producer.sent) == 2  # stopped, not drained
        await worker.commit_finished()
        assert consumer.commits == [{TP: 1}]  # past the first dead letter, no further
    finally:
        if task.done():
            await h.close()
        else:
            await stop(task, h)
