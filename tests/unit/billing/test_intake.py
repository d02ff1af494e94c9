"""billing's intake between faust's stream and the batches (app.py FairIntake): batches taken
round-robin by account, acks in each partition's offset order, and back-pressure per partition
(a partition over its budget is paused in faust's consumer, the others go on)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.billing.app import FairIntake
from shared.pipeline import BatchPolicy


@dataclass(frozen=True)
class _Message:
    tp: str
    offset: int
    key: bytes


@dataclass(eq=False)
class _Event:
    """What FairIntake reads of a faust event: its message's partition, offset and key."""

    message: _Message
    label: str = field(default="")


def _event(tp: str, offset: int, account: str) -> Any:  # a faust event, as FairIntake reads it
    return _Event(_Message(tp, offset, account.encode()), f"{account}@{tp}:{offset}")


@dataclass
class FakeConsumer:
    """What FairIntake calls of faust's consumer: its assignment, pause and resume."""

    assigned: set[str] = field(default_factory=lambda: {"p0", "p1", "p2", "p3"})
    paused: set[str] = field(default_factory=set)
    calls: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def assignment(self) -> set[str]:
        return set(self.assigned)

    def pause_partitions(self, tps: Iterable[str]) -> None:
        self.calls.append(("pause", frozenset(tps)))
        self.paused |= set(tps)

    def resume_partitions(self, tps: Iterable[str]) -> None:
        self.calls.append(("resume", frozenset(tps)))
        self.paused -= set(tps)


def intake(pause_at: int = 1000, resume_at: int = 0) -> tuple[FairIntake, FakeConsumer]:
    consumer = FakeConsumer()
    return FairIntake(BatchPolicy(pause_at=pause_at, resume_at=resume_at), consumer), consumer


async def test_a_batch_takes_what_arrives_within_the_linger_of_its_first_record() -> None:
    fair, _ = intake()
    await fair.put(_event("p0", 1, "a"))
    later = _event("p0", 2, "a")
    asyncio.get_running_loop().call_later(0.01, lambda: asyncio.ensure_future(fair.put(later)))

    assert [e.label for e in await fair.take(10, linger_s=0.5)] == ["a@p0:1", "a@p0:2"]
    await fair.put(_event("p0", 3, "a"))
    await fair.put(_event("p0", 4, "a"))
    assert [e.label for e in await fair.take(1, linger_s=0.5)] == ["a@p0:3"]  # full: no wait
    assert [e.label for e in await fair.take(10, linger_s=0.0)] == ["a@p0:4"]  # no linger


async def test_a_batch_lingers_only_while_the_stream_holds_events_already_read() -> None:
    buffered = [1]  # events faust's stream buffer holds for the agent
    fair = FairIntake(BatchPolicy(pause_at=1000, resume_at=0), FakeConsumer(), lambda: buffered[0])
    await fair.put(_event("p0", 1, "a"))
    later = _event("p0", 2, "a")

    handed: list[asyncio.Future[None]] = []

    def hand_over() -> None:  # the stream hands the buffered event to the intake
        buffered[0] = 0
        handed.append(asyncio.ensure_future(fair.put(later)))

    asyncio.get_running_loop().call_later(0.01, hand_over)
    assert [e.label for e in await fair.take(10, linger_s=0.5)] == ["a@p0:1", "a@p0:2"]

    # Nothing more read: the batch goes at once, whatever the linger (a record fetched later
    # is the next batch's).
    await fair.put(_event("p0", 3, "a"))
    asyncio.get_running_loop().call_later(
        0.01, lambda: asyncio.ensure_future(fair.put(_event("p0", 4, "a")))
    )
    assert [e.label for e in await fair.take(10, linger_s=0.5)] == ["a@p0:3"]
    assert [e.label for e in await fair.take(10, linger_s=0.0)] == ["a@p0:4"]


async def test_an_account_with_a_burst_waiting_does_not_hold_up_another_accounts_record() -> None:
    fair, _ = intake()
    for n in range(500):  # the campaign's account, one partition
        await fair.put(_event("p0", n, "campaign"))
    await fair.put(_event("p0", 500, "other"))  # same partition
    await fair.put(_event("p3", 7, "third"))

    batch = await fair.take(128, linger_s=0.0)
    labels = [e.label for e in batch]
    assert labels[:3] == ["campaign@p0:0", "other@p0:500", "third@p3:7"]
    assert labels[3:] == [f"campaign@p0:{n}" for n in range(1, 126)]  # in the order read
    # applied, but acked only in each partition's offset order: p0's 500 waits for 126..499
    acked = [e.label for e in fair.finished(batch)]
    assert acked == [
        "campaign@p0:0",
        "third@p3:7",
        *(f"campaign@p0:{n}" for n in range(1, 126)),
    ]
    rest = await fair.take(1000, linger_s=0.0)
    assert [e.label for e in fair.finished(rest)] == [
        *(f"campaign@p0:{n}" for n in range(126, 500)),
        "other@p0:500",
    ]


async def test_a_partition_over_its_budget_is_paused_and_the_others_are_still_taken() -> None:
    fair, consumer = intake(pause_at=3, resume_at=1)
    for n in range(2):
        await fair.put(_event("p0", n, "campaign"))
    assert consumer.calls == []  # within its budget
    await fair.put(_event("p0", 2, "campaign"))
    assert consumer.calls == [("pause", frozenset({"p0"}))]
    assert fair.paused == {"p0"}

    # faust still hands over what it fetched for p0 before the pause: taken, not waited for
    await asyncio.wait_for(fair.put(_event("p0", 3, "campaign")), timeout=1.0)
    await asyncio.wait_for(fair.put(_event("p1", 0, "other")), timeout=1.0)
    assert consumer.calls == [("pause", frozenset({"p0"}))]  # paused once
    assert (fair.held("p0"), fair.held("p1")) == (4, 1)


async def test_a_paused_partition_is_resumed_once_down_to_the_lower_mark() -> None:
    fair, consumer = intake(pause_at=4, resume_at=1)
    for n in range(4):
        await fair.put(_event("p0", n, "campaign"))
    assert consumer.paused == {"p0"}

    first = await fair.take(2, linger_s=0.0)
    fair.finished(first)
    assert fair.held("p0") == 2 and consumer.paused == {"p0"}  # above the lower mark
    fair.finished(await fair.take(1, linger_s=0.0))
    assert consumer.calls[-1] == ("resume", frozenset({"p0"}))
    assert fair.paused == frozenset() and consumer.paused == set()


async def test_held_counts_what_is_not_acked_yet_not_what_is_not_taken_yet() -> None:
    fair, consumer = intake(pause_at=3, resume_at=0)
    events = [_event("p0", n, "a" if n else "b") for n in range(3)]
    for event in events:
        await fair.put(event)
    assert consumer.paused == {"p0"}
    batch = await fair.take(3, linger_s=0.0)  # a@1, b@0 ... taken round-robin
    # offsets 1 and 2 applied first: acked only with offset 0, so p0 stays paused
    later = [e for e in batch if e.message.offset != 0]
    assert fair.finished(later) == []
    assert fair.held("p0") == 3 and consumer.paused == {"p0"}
    assert [e.label for e in fair.finished([events[0]])] == ["b@p0:0", "a@p0:1", "a@p0:2"]
    assert consumer.paused == set()


async def test_a_paused_partition_no_longer_assigned_is_forgotten_not_resumed_in_faust() -> None:
    fair, consumer = intake(pause_at=2, resume_at=0)
    await fair.put(_event("p0", 0, "a"))
    await fair.put(_event("p0", 1, "a"))
    await fair.put(_event("p2", 0, "b"))
    assert consumer.paused == {"p0"}
    consumer.assigned.discard("p0")  # revoked: faust forgets its own pause of it

    fair.finished(await fair.take(3, linger_s=0.0))
    assert fair.paused == frozenset()
    assert ("resume", frozenset({"p0"})) not in consumer.calls


async def test_a_partition_read_again_from_an_earlier_offset_starts_its_count_again() -> None:
    fair, consumer = intake(pause_at=3, resume_at=0)
    for n in range(10, 12):
        await fair.put(_event("p0", n, "a"))
    await fair.put(_event("p0", 10, "a"))  # faust sought back to the committed offset
    assert fair.held("p0") == 1 and consumer.calls == []


async def test_a_partition_that_is_not_stopped_by_its_pause_holds_up_the_stream_at_the_guard() -> (
    None
):
    fair, _ = intake(pause_at=2, resume_at=0)
    guard = 2 * FairIntake.guard_factor
    for n in range(guard):
        await fair.put(_event("p0", n, "a"))  # pausing failed: faust kept handing p0 over
    blocked = asyncio.create_task(fair.put(_event("p0", guard, "a")))
    other = asyncio.create_task(fair.take(1, linger_s=0.0))
    first = await asyncio.wait_for(other, timeout=1.0)
    assert not blocked.done()
    fair.finished(first)
    await asyncio.wait_for(blocked, timeout=1.0)
    assert fair.held("p0") == guard


async def test_putting_stops_when_the_applier_has_ended() -> None:
    fair, _ = intake()

    async def broken() -> None:
        raise RuntimeError("a bug")

    applier = asyncio.create_task(broken())
    await asyncio.wait([applier])
    with pytest.raises(RuntimeError, match="a bug"):
        await fair.put(_event("p0", 0, "a"), applier)
    assert len(fair) == 0
