"""The sweeper's verdicts: stuck `unknown` sends fail, old parked statuses go, old messages are
anonymised."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.status import core
from services.status.sweeper import Sweeper, SweepPolicy
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable
from shared.messages import StatusChanged

NOW = 1_764_000_000_000


def test_cutoffs_follow_the_configured_timeouts() -> None:
    cutoffs = core.sweep_cutoffs(
        NOW, unknown_timeout_seconds=600, parked_retention_days=7, message_retention_days=30
    )
    assert cutoffs.unknown_before == NOW - 600_000
    assert cutoffs.parked_before == NOW - 7 * 86_400_000
    assert cutoffs.retained_before == NOW - 30 * 86_400_000


def test_a_stuck_unknown_send_is_failed_with_reason_outcome_unknown() -> None:
    event = core.outcome_unknown_failure(core.MessageRef("msg_1", "acc_1", "GB"), NOW)
    assert (event.status, event.reason, event.source, event.occurred_at) == (
        "failed",
        "outcome_unknown",
        "sender",
        NOW,
    )
    assert event.event_id == "msg_1:failed:outcome_unknown"  # the same on every sweep
    assert event.account_id == "acc_1"  # keyed like every status of the account


def test_the_failure_releases_credit_but_a_late_delivery_still_wins() -> None:
    failure = core.outcome_unknown_failure(core.MessageRef("msg_1", "acc_1"), NOW)
    failed = core.converge(core.MessageState(), failure)
    assert failed is not None
    assert failed.status == "failed" and failed.reason == "outcome_unknown"
    late_delivery = StatusChanged(
        event_id="wamid.1:delivered",
        message_id="msg_1",
        account_id="acc_1",
        status="delivered",
        occurred_at=NOW + 1,
        source="webhook",
        wamid="wamid.1",
    )
    delivered = core.converge(failed, late_delivery)
    assert delivered is not None and delivered.status == "delivered"


def test_anonymising_hashes_the_recipient_with_a_key_and_removes_content() -> None:
    update = core.anonymised_fields({"_id": "msg_1", "recipient": "+447911123456"}, b"k1", NOW)
    hashed = update["$set"]["recipient"]
    assert hashed.startswith("hmac-sha256:") and "447911123456" not in hashed
    assert hashed == core.recipient_hash("+447911123456", b"k1")
    assert hashed != core.recipient_hash("+447911123456", b"k2")
    assert update["$set"]["anonymised_at"] == NOW
    assert set(update["$unset"]) == {"content", "request"}


def test_an_already_hashed_recipient_is_not_hashed_again() -> None:
    hashed = core.recipient_hash("+447911123456", b"k1")
    update = core.anonymised_fields({"_id": "msg_1", "recipient": hashed}, b"k1", NOW)
    assert "recipient" not in update["$set"]


class _CountingStore:
    """The sweeper's store calls, counted; nothing to sweep."""

    def __init__(self, passes: int) -> None:
        self.calls: dict[str, int] = {}
        self.passes = passes
        self.done = asyncio.Event()
        self.failing = False

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def stuck_unknown(self, before_ms: int, limit: int) -> list[core.MessageRef]:
        self._count("stuck_unknown")
        if self.failing:
            raise DependencyUnavailable("database unavailable: NetworkTimeout")
        return []

    async def delete_parked_before(self, before_ms: int) -> int:
        self._count("delete_parked_before")
        return 0

    async def count_parked(self) -> int:
        self._count("count_parked")
        if self.calls["count_parked"] >= self.passes:
            self.done.set()
        return 0

    async def messages_to_anonymise(self, before_ms: int, limit: int) -> list[dict[str, Any]]:
        self._count("messages_to_anonymise")
        return []

    async def inbound_to_anonymise(self, before_ms: int, limit: int) -> list[dict[str, Any]]:
        self._count("inbound_to_anonymise")
        return []

    async def anonymise_message(self, message_id: str, update: dict[str, Any]) -> None:
        raise AssertionError("nothing to anonymise")

    async def anonymise_inbound(self, wamid: str, update: dict[str, Any]) -> None:
        raise AssertionError("nothing to anonymise")

    async def delete_conversations_before(self, before_ms: int) -> int:
        self._count("delete_conversations_before")
        return 0


async def test_the_message_steps_run_on_their_own_slower_cadence() -> None:
    """Each message step is a scan of the collection on FerretDB: the first pass runs them,
    the next passes (within the message interval) sweep only the parked statuses."""
    store = _CountingStore(passes=4)
    sweeper = Sweeper(store, None, FakeClock(start_ms=NOW), SweepPolicy())  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run_forever(0.001, messages_interval_seconds=3600))
    try:
        async with asyncio.timeout(10):
            await store.done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    passes = store.calls["count_parked"]
    assert passes >= 4 and store.calls["delete_parked_before"] == passes
    for step in (
        "stuck_unknown",
        "messages_to_anonymise",
        "inbound_to_anonymise",
        "delete_conversations_before",
    ):
        assert store.calls[step] == 1, step

    failing = _CountingStore(passes=4)  # a failed message sweep waits for its next turn
    failing.failing = True
    sweeper = Sweeper(failing, None, FakeClock(start_ms=NOW), SweepPolicy())  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run_forever(0.001, messages_interval_seconds=3600))
    try:
        async with asyncio.timeout(10):
            await failing.done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert failing.calls["stuck_unknown"] == 1 and failing.calls["count_parked"] >= 3

    every_pass = _CountingStore(passes=3)  # no message interval: every pass, as before
    sweeper = Sweeper(every_pass, None, FakeClock(start_ms=NOW), SweepPolicy())  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run_forever(0.001))
    try:
        async with asyncio.timeout(10):
            await every_pass.done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert every_pass.calls["stuck_unknown"] >= 3
