"""The sender holds back only the partitions that are behind: one tenant's flood on a slow number
holds back its own partition, while another tenant's number on another partition keeps its full
rate, and memory stays bounded. The policy is pure (core.partitions_to_hold_back); the worker
and engine run here over a fake broker (per-partition logs, polled by partition as aiokafka's
`getmany(*partitions)` is; it has no `pause`, which the worker must not use) and a fake
clock."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from services.sender.consumer import SenderWorker, WorkerConfig
from services.sender.core import Backlog, FetchPolicy, partitions_to_hold_back
from shared.kafka import KafkaConfig
from shared.messages import SEND_APPROVED, SendApproved
from tests.unit.sender.fakes import FakeTimer, Harness, phone_number, settle

# --- the policy ----------------------------------------------------------------------------------

POLICY = FetchPolicy(lead_seconds=2.0, floor=100, max_held=20_000)


def test_a_partition_is_behind_when_it_holds_more_than_its_numbers_send_in_the_lead() -> None:
    backlogs = {
        "slow": Backlog(held=150, drain_per_second=20),  # budget max(100, 40) = 100
        "fast": Backlog(held=150, drain_per_second=80),  # budget 160
        "idle": Backlog(),
    }
    assert partitions_to_hold_back(backlogs, set(), POLICY) == {"slow"}


def test_a_partition_held_back_is_polled_again_only_at_half_its_budget() -> None:
    assert partitions_to_hold_back({"p": Backlog(held=60, drain_per_second=20)}, {"p"}, POLICY) == {
        "p"
    }
    assert (
        partitions_to_hold_back({"p": Backlog(held=50, drain_per_second=20)}, {"p"}, POLICY)
        == set()
    )
    assert (
        partitions_to_hold_back({"p": Backlog(held=60, drain_per_second=20)}, set(), POLICY)
        == set()
    )


def test_messages_parked_for_their_recipient_do_not_make_a_partition_behind() -> None:
    hot = Backlog(held=400, parked=390, drain_per_second=80)  # 10 ready
    assert partitions_to_hold_back({"p": hot}, set(), POLICY) == set()


def test_a_held_number_sends_nothing_so_its_partition_is_held_back_at_the_floor() -> None:
    assert partitions_to_hold_back({"p": Backlog(held=100, drain_per_second=0)}, set(), POLICY) == {
        "p"
    }


def test_with_memory_full_every_partition_keeps_at_most_its_share_parked_ones_included() -> None:
    policy = FetchPolicy(lead_seconds=2.0, floor=100, max_held=1000)
    backlogs = {
        "hot": Backlog(held=900, parked=900, drain_per_second=80),
        "busy": Backlog(held=300, drain_per_second=1000),
        "light": Backlog(held=40, drain_per_second=80),
    }
    # 1,240 held >= 1,000: shares of 333; the light partition keeps fetching.
    assert partitions_to_hold_back(backlogs, set(), policy) == {"hot"}
    assert partitions_to_hold_back(backlogs, {"busy"}, policy) == {"hot", "busy"}
    assert partitions_to_hold_back({}, set(), policy) == set()


# --- the worker and the engine -------------------------------------------------------------------

TOPIC = "messages.send-approved.v1"
TP_SLOW, TP_FAST = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
SLOW_NUMBER, FAST_NUMBER = "109731225428301", "118243906275101"
UNUSED_BROKER = KafkaConfig("unused:9092", "PLAINTEXT")  # the fake broker is the consumer


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes = b"k"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeBroker:
    """A consumer over per-partition logs: `getmany(*partitions)` returns at most
    `max_records` records of those partitions (all of them when none is named), taking turns,
    or waits `timeout_ms` of virtual time. `polls` keeps the partitions of each poll."""

    def __init__(self, timer: FakeTimer, *partitions: TopicPartition) -> None:
        self.timer = timer
        self.logs: dict[TopicPartition, list[Record]] = {tp: [] for tp in partitions}
        self.position: dict[TopicPartition, int] = dict.fromkeys(partitions, 0)
        self.polls: list[set[TopicPartition]] = []
        self.fetched: dict[TopicPartition, int] = dict.fromkeys(partitions, 0)

    def append(self, tp: TopicPartition, events: list[SendApproved]) -> None:
        log = self.logs[tp]
        base = len(log)
        log.extend(
            [
                Record(TOPIC, tp.partition, base + i, SEND_APPROVED.encode(e)[1])
                for i, e in enumerate(events)
            ]
        )

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int = 500
    ) -> dict[TopicPartition, list[Record]]:
        polled = set(partitions or self.logs)
        self.polls.append(polled)
        batch: dict[TopicPartition, list[Record]] = {}
        fetchable = [
            tp for tp in self.logs if tp in polled and self.position[tp] < len(self.logs[tp])
        ]
        for i, tp in enumerate(fetchable):
            share = (max_records - sum(map(len, batch.values()))) // (len(fetchable) - i)
            start = self.position[tp]
            records = self.logs[tp][start : start + share]
            if records:
                batch[tp] = records
                self.position[tp] += len(records)
                self.fetched[tp] += len(records)
        if not batch:
            await self.timer.sleep_until(self.timer.clock.monotonic() + timeout_ms / 1000)
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def unread(self, tp: TopicPartition) -> int:
        return len(self.logs[tp]) - self.position[tp]


class NoProducer:
    async def send_and_wait(self, *_: Any, **__: Any) -> None:
        raise AssertionError("nothing here is dead-lettered")


@dataclass
class Run:
    h: Harness
    broker: FakeBroker
    worker: SenderWorker
    task: asyncio.Task[None]
    most_held: int = 0

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.h.close()


async def two_tenants(max_queued: int = 20_000) -> Run:
    """Tenant A's number paced at 20 mps on partition 0, tenant B's at 80 mps on partition 1,
    one sender consuming both."""
    h = Harness(
        phone_number(id=SLOW_NUMBER, account_id="acc_a", throughput_mps=20),
        phone_number(
            id=FAST_NUMBER, account_id="acc_b", throughput_mps=80, waba_id="117552438690213"
        ),
    )
    h.meta.set_mps(SLOW_NUMBER, 20)
    h.meta.set_mps(FAST_NUMBER, 80)
    broker = FakeBroker(h.timer, TP_SLOW, TP_FAST)
    worker = SenderWorker(
        WorkerConfig(UNUSED_BROKER, max_queued=max_queued),
        NoProducer(),  # type: ignore[arg-type]
        h.engine,
        h.clock,
        consumer=broker,
    )  # type: ignore[arg-type]
    worker.partitions_assigned({TP_SLOW, TP_FAST})
    await h.timer.advance(300.0)  # taken over long ago: buckets full
    task = asyncio.create_task(worker.consume([]))
    await settle()
    return Run(h, broker, worker, task)


def _events(h: Harness, number: str, account: str, n: int) -> list[SendApproved]:
    return [h.event(phone_number_id=number, account_id=account) for _ in range(n)]


async def _feed_fast_tenant(run: Run, seconds: float, step: float = 0.25) -> None:
    """Tenant B writes 80 messages a second, in steps of virtual time."""
    for _ in range(round(seconds / step)):
        run.broker.append(TP_FAST, _events(run.h, FAST_NUMBER, "acc_b", round(80 * step)))
        await run.h.timer.advance(step)
        held = sum(b.held for b in run.h.engine.backlogs().values())
        run.most_held = max(run.most_held, held)


def _rate(run: Run, number: str, since: float, until: float) -> float:
    calls = [c for c in run.h.meta.calls if c.phone_number_id == number and since <= c.at < until]
    return len(calls) / (until - since)


async def test_a_flood_on_a_slow_number_does_not_slow_another_tenants_number() -> None:
    # A memory bound the flood exceeds on its own: before, reaching it paused every
    # partition until half of it had drained at 20 mps (25 s), and B's number starved.
    run = await two_tenants(max_queued=1000)
    try:
        run.broker.append(TP_SLOW, _events(run.h, SLOW_NUMBER, "acc_a", 5000))
        start = run.h.clock.monotonic()
        await _feed_fast_tenant(run, 30.0)
        fast = _rate(run, FAST_NUMBER, start + 2.0, start + 30.0)
        slow = _rate(run, SLOW_NUMBER, start + 2.0, start + 30.0)
        assert fast >= 0.95 * 80, f"B sent {fast:.1f}/s next to A's flood"
        assert slow >= 0.95 * 20, f"A sent {slow:.1f}/s"  # A keeps its own number busy
        assert run.h.meta.refusals == []
        # A's partition is behind and held back; most of its flood is still in the broker.
        assert run.worker.held_back == {TP_SLOW} and run.broker.polls[-1] == {TP_FAST}
        assert run.broker.unread(TP_SLOW) >= 5000 - 20 * 30 - 600
        assert run.most_held <= 1000 + 500
    finally:
        await run.stop()


async def test_both_tenants_flooding_stay_within_memory_and_keep_their_numbers_busy() -> None:
    run = await two_tenants(max_queued=1000)
    try:
        run.broker.append(TP_SLOW, _events(run.h, SLOW_NUMBER, "acc_a", 3000))
        run.broker.append(TP_FAST, _events(run.h, FAST_NUMBER, "acc_b", 6000))
        start = run.h.clock.monotonic()
        for _ in range(60):
            await run.h.timer.advance(0.25)
            held = sum(b.held for b in run.h.engine.backlogs().values())
            run.most_held = max(run.most_held, held)
        assert _rate(run, FAST_NUMBER, start + 2.0, start + 15.0) >= 0.95 * 80
        assert _rate(run, SLOW_NUMBER, start + 2.0, start + 15.0) >= 0.95 * 20
        # Memory: the bound, overshot by one fetch at most (500 records).
        assert run.most_held <= 1000 + 500
        assert TP_SLOW in run.worker.held_back  # A's flood is behind: it waits in the broker
        assert run.broker.unread(TP_SLOW) >= 3000 - 20 * 15 - 600
    finally:
        await run.stop()


async def test_a_hot_recipient_parks_its_messages_without_holding_back_its_partition() -> None:
    run = await two_tenants()
    try:
        hot = [
            run.h.event("+447700000001", phone_number_id=FAST_NUMBER, account_id="acc_b")
            for _ in range(400)
        ]
        cold = _events(run.h, FAST_NUMBER, "acc_b", 400)
        run.broker.append(TP_FAST, [*hot, *cold])
        start = run.h.clock.monotonic()
        await run.h.timer.run_until_true(
            lambda: {c.event.message_id for c in run.h.meta.calls} >= {e.message_id for e in cold},
            limit=60.0,
            step=0.25,
        )
        # 400 cold at 80 mps: ~5 s, not the half hour the hot recipient's messages take.
        assert run.h.clock.monotonic() - start <= 8.0
        assert run.worker.held_back == set() and run.broker.polls[-1] == {TP_SLOW, TP_FAST}
        backlog = run.h.engine.backlogs()[TP_FAST]
        assert backlog.parked >= 300 and backlog.ready <= 20
    finally:
        await run.stop()
