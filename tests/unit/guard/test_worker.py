"""guard's shell over in-memory adapters: a burst of failures holds the account once (the hold
document and one event); windows survive a restart and a replayed record is not counted twice;
a recipient is new once, also across a crash; a release clears the hold and the windows; a
flagged number holds the account; an unreadable record is handed back for the DLQ and a
database outage leaves nothing half-remembered."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from services.guard import core
from services.guard.core import Rule, Rules
from services.guard.worker import Guard
from shared import holds
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable
from shared.messages import (
    ACCOUNT_RELEASE_REQUESTED,
    NUMBER_QUALITY_CHANGED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    AccountReleaseRequested,
    MetaError,
    NumberQualityChanged,
    SendRequested,
    StatusChanged,
)
from shared.pseudonyms import keyed_hash
from tests.unit.guard.fakes import FakeGuardStore, FakeHoldPublisher, FakeRecord, Log

ACC = "acc_1"
RULES = Rules(
    failure_rate=Rule(0.5, 900, 10),
    new_recipients=Rule(0.9, 3600, 5),
    volume_spike=Rule(5, 3600, 10_000),
)


class World:
    def __init__(self, store: FakeGuardStore | None = None, rules: Rules = RULES) -> None:
        self.clock = FakeClock()
        self.store = store or FakeGuardStore()
        self.publisher = FakeHoldPublisher()
        self.log = Log()
        self.rules = rules
        self.guard = self.restart()
        self.n = 0

    def restart(self) -> Guard:
        """A new process: nothing in memory."""
        self.publisher = FakeHoldPublisher()
        self.guard = Guard(
            self.store, self.publisher, self.clock, self.rules, partial(keyed_hash, key=b"k")
        )
        return self.guard

    def failed(self, n: int, code: int = 131026) -> list[FakeRecord]:
        return [self._status("failed", MetaError(code=code)) for _ in range(n)]

    def delivered(self, n: int) -> list[FakeRecord]:
        return [self._status("delivered") for _ in range(n)]

    def _status(self, kind: str, error: MetaError | None = None) -> FakeRecord:
        self.n += 1
        return self.log.record(
            STATUS_CHANGED,
            StatusChanged(
                event_id=f"s{self.n}",
                message_id=f"m{self.n}",
                account_id=ACC,
                status=kind,  # type: ignore[arg-type]
                occurred_at=self.clock.now_ms(),
                source="webhook",
                error=error,
            ),
        )

    def send(self, to: str) -> FakeRecord:
        self.n += 1
        now = self.clock.now_ms()
        return self.log.record(
            SEND_REQUESTED,
            SendRequested(
                event_id=f"m{self.n}",
                message_id=f"m{self.n}",
                account_id=ACC,
                portfolio_id="p",
                waba_id="w",
                phone_number_id="1",
                recipient=to,
                recipient_region="GB",
                message_type="text",
                content={},
                category="service",
                accepted_at=now,
                expires_at=now + 1,
            ),
        )

    def release(self) -> FakeRecord:
        return self.log.record(
            ACCOUNT_RELEASE_REQUESTED,
            AccountReleaseRequested(
                event_id=f"rel{self.n}",
                account_id=ACC,
                reason="checked",
                operator="ana@ops",
                requested_at=self.clock.now_ms(),
            ),
        )

    async def handle(self, records: list[FakeRecord]) -> list[Any]:
        return await self.guard.handle_batch(records)  # type: ignore[arg-type]

    def held(self) -> bool:
        return holds.is_held(self.store.hold_docs.get(ACC))


async def test_a_burst_of_failures_holds_the_account_once() -> None:
    world = World()
    assert await world.handle(world.delivered(4) + world.failed(5)) == []
    assert not world.held() and world.publisher.events == []
    await world.handle(world.failed(1))
    assert world.held()
    [event] = world.publisher.events
    assert (event.held, event.change, event.rule, event.rules) == (
        True,
        "held",
        "failure_rate",
        ["failure_rate"],
    )
    assert event.observed["finished"] == 10 and event.observed["failed"] == 6
    await world.handle(world.failed(5))
    assert len(world.publisher.events) == 1  # held already: no second hold


async def test_windows_survive_a_restart_and_a_replay_is_not_counted_twice() -> None:
    world = World()
    first = world.delivered(5) + world.failed(4)
    await world.handle(first)
    world.restart()
    await world.handle(first)  # the same records again (committed offsets lost)
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert state.count("finished", state.latest_at, 900_000) == 9
    await world.handle(world.failed(1))  # 5 of 10 failed, from before and after the restart
    assert world.held()


async def test_a_recipient_is_new_once_also_when_its_send_is_replayed() -> None:
    world = World()
    first = [world.send("+447911000001"), world.send("+447911000001")]
    await world.handle(first)
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert state.count("new", state.latest_at, 60_000) == 1
    # a crash after the recipient was stored but before the windows were: replayed
    world.store.state_docs.clear()
    world.restart()
    await world.handle(first)
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert (
        state.count("sent", state.latest_at, 60_000),
        state.count("new", state.latest_at, 60_000),
    ) == (2, 1)
    assert all(not rid.endswith("447911000001") for rid in world.store.recipient_docs)


async def test_sends_to_never_seen_recipients_hold_at_their_share() -> None:
    world = World()
    await world.handle([world.send(f"+4479110000{i:02d}") for i in range(5)])
    assert world.held()
    assert world.publisher.events[0].rule == "new_recipients"


async def test_a_release_clears_the_hold_and_the_windows() -> None:
    world = World()
    await world.handle(world.failed(10))
    assert world.held()
    world.clock.advance(60)
    await world.handle([world.release()])
    assert not world.held()
    released = world.publisher.events[-1]
    assert (released.change, released.held, released.operator) == ("released", False, "ana@ops")
    await world.handle(world.failed(5))  # fresh evidence is needed to hold again
    assert not world.held()
    await world.handle(world.failed(5))
    assert world.held() and world.publisher.events[-1].change == "held"


async def test_a_flagged_number_holds_the_account_and_other_quality_events_do_not() -> None:
    world = World()
    now = world.clock.now_ms()
    upgrade = world.log.record(
        NUMBER_QUALITY_CHANGED,
        NumberQualityChanged(
            event_id="q1",
            phone_number_id="1",
            waba_id="w",
            account_id=ACC,
            event="THROUGHPUT_UPGRADE",
            occurred_at=now,
        ),
    )
    await world.handle([upgrade])
    assert world.publisher.events == []
    world.store.flagged[ACC] = [now]
    flagged = world.log.record(
        NUMBER_QUALITY_CHANGED,
        NumberQualityChanged(
            event_id="q2",
            phone_number_id="1",
            waba_id="w",
            account_id=ACC,
            event="FLAGGED",
            occurred_at=now,
        ),
    )
    await world.handle([flagged])
    assert world.held() and world.publisher.events[-1].rule == "quality_red"
    await world.handle([flagged])
    assert len(world.publisher.events) == 1


async def test_per_account_overrides_apply() -> None:
    store = FakeGuardStore()
    store.overrides[ACC] = {"failure_rate": {"threshold": 0.9}}
    world = World(store)
    await world.handle(world.delivered(2) + world.failed(8))
    assert not world.held()
    await world.handle(world.failed(10))
    assert world.held()


async def test_an_unreadable_record_is_handed_back_and_the_rest_applied() -> None:
    world = World()
    bad = FakeRecord(STATUS_CHANGED.name, 0, 99, b"{not json")
    failures = await world.handle([bad, *world.failed(10)])
    assert [(r, f.error.code) for r, f in failures] == [(bad, "malformed_event")]
    assert world.held()


async def test_a_database_outage_leaves_nothing_half_remembered() -> None:
    world = World()
    world.store.fail_saves = True
    batch = [*world.failed(3), world.send("+447911000001"), world.send("+447911000002")]
    with pytest.raises(DependencyUnavailable):
        await world.handle(batch)  # the recipients were stored, the windows were not
    world.store.fail_saves = False
    reads = world.store.state_reads
    await world.handle(batch)  # retried by the same process: read again, applied once
    assert world.store.state_reads == reads + 1
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert state.count("failed", state.latest_at, 900_000) == 3
    assert state.count("new", state.latest_at, 60_000) == 2  # still new: they found them
    await world.handle([world.send("+447911000001")])
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert state.count("new", state.latest_at, 60_000) == 2  # a third send: not new


async def test_a_batch_that_fails_on_a_bug_forgets_what_it_half_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the pipeline then tries each record alone: each attempt must start from the database
    world = World()
    batch = world.failed(3)
    real = world.store.save_state

    async def buggy(doc: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(world.store, "save_state", buggy)
    with pytest.raises(RuntimeError):
        await world.handle(batch)
    monkeypatch.setattr(world.store, "save_state", real)
    reads = world.store.state_reads
    await world.handle(batch)
    assert world.store.state_reads == reads + 1
    state = core.account_from_doc(ACC, world.store.state_docs[ACC])
    assert state.count("failed", state.latest_at, 900_000) == 3  # counted once
