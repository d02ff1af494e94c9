"""Reservations that never get a final status are expired once Meta can no longer bill them,
through billing's own agent (the sweeper only publishes the status)."""

from __future__ import annotations

import pytest

from services.billing.core import (
    RESERVATION_HORIZON_MS,
    LedgerEntry,
    OpenReservation,
    overdue_expiries,
    settlement_for,
)
from services.billing.sweeper import ReservationSweeper
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable
from shared.messages import SEND_REQUESTED, STATUS_CHANGED
from shared.pricing import load_rate_card
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status
from tests.unit.billing.fakes import FakeCheckpoints, FakeLedger, FakePublisher, Journal
from tests.unit.billing.test_worker import funded

DAY_MS = 86_400_000


def test_the_horizon_is_metas_ttl_plus_its_webhook_retries() -> None:
    assert RESERVATION_HORIZON_MS == 37 * DAY_MS


def test_only_unsettled_reservations_past_the_horizon_expire() -> None:
    now = 100 * DAY_MS
    reservations = [
        OpenReservation(ACCOUNT, "msg_old", at=now - RESERVATION_HORIZON_MS, settled=False),
        OpenReservation(ACCOUNT, "msg_settled", at=0, settled=True),
        OpenReservation(ACCOUNT, "msg_young", at=now - RESERVATION_HORIZON_MS + 1, settled=False),
    ]
    [expiry] = overdue_expiries(reservations, now=now)
    assert (expiry.message_id, expiry.status, expiry.source, expiry.event_id) == (
        "msg_old",
        "expired",
        "billing",
        "msg_old:expired:billing",
    )
    assert settlement_for(expiry) == "release"


async def test_the_sweeper_expires_an_overdue_reservation_and_the_agent_releases_it() -> None:
    shell = await funded()
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_2")))
    await shell.worker.handle(
        shell.record(STATUS_CHANGED, status("msg_2", "delivered", pricing=regular("utility")))
    )
    clock = FakeClock()
    clock.advance(RESERVATION_HORIZON_MS / 1000 + 1)
    shell.publisher.published.clear()

    sweeper = ReservationSweeper(
        shell.ledger,
        shell.publisher,
        clock,  # type: ignore[arg-type]
        FakeCheckpoints(),
    )
    assert await sweeper.run_once() == 1
    [(topic, expiry)] = shell.publisher.published
    assert (topic, expiry.message_id) == ("messages.status-changed.v1", "msg_1")

    assert await shell.worker.handle(shell.record(STATUS_CHANGED, expiry)) == "released"
    assert shell.balance.reserved == 0
    available = shell.balance.available
    # Meta's pricing is the truth: a regular-priced delivery after all is charged, late.
    late = status("msg_1", "delivered", pricing=regular("utility"))
    assert await shell.worker.handle(shell.record(STATUS_CHANGED, late)) == "charged"
    assert shell.balance.reserved == 0
    assert shell.balance.available == available - load_rate_card().price("utility", "GB")


def _old_reserves(ledger: FakeLedger, count: int, *, settled_every: int = 0) -> None:
    """`count` reserve entries written long ago (every `settled_every`-th one settled)."""
    for n in range(count):
        key = f"msg_{n:05}"
        ledger.entries[f"{key}:reserve"] = LedgerEntry(
            key=f"{key}:reserve",
            account_id=ACCOUNT,
            kind="reserve",
            amount=100,
            at=n,
            source="s:0",
            source_offset=n,
            source_event_id=key,
            message_id=key,
        )
        if settled_every and n % settled_every == 0:
            ledger.entries[f"{key}:settle"] = LedgerEntry(
                key=f"{key}:settle",
                account_id=ACCOUNT,
                kind="release",
                amount=100,
                reserved_amount=100,
                at=n + 1,
                source="s:1",
                source_offset=n,
                source_event_id=f"{key}:failed",
                message_id=key,
            )


async def test_each_step_reads_one_page_and_the_next_run_starts_where_the_last_ended() -> None:
    """Many old reserve entries: memory and work per step are one page, never the ledger, and
    what was looked at is not read again."""
    journal = Journal()
    ledger, publisher, checkpoints = FakeLedger(journal), FakePublisher(journal), FakeCheckpoints()
    _old_reserves(ledger, 2_345, settled_every=5)
    clock = FakeClock(start_ms=RESERVATION_HORIZON_MS + 10_000)
    sweeper = ReservationSweeper(
        ledger,
        publisher,
        clock,
        checkpoints,  # type: ignore[arg-type]
        page_size=500,
    )

    first = await sweeper.step()
    assert (first.read, first.caught_up, ledger.pages) == (500, False, [500])
    assert first.expired == 400  # every fifth one was settled

    assert await sweeper.run_once() == 2_345 - 469 - 400
    assert ledger.pages == [500, 500, 500, 500, 345]  # one page per step, each read once
    expired = {e.message_id for _, e in publisher.published}
    assert len(expired) == 2_345 - 469 and "msg_00000" not in expired

    ledger.pages.clear()
    assert await sweeper.run_once() == 0  # nothing new: one empty page
    assert ledger.pages == [0]


async def test_a_page_whose_expiries_could_not_be_published_is_read_again() -> None:
    journal = Journal()
    ledger, publisher, checkpoints = FakeLedger(journal), FakePublisher(journal), FakeCheckpoints()
    _old_reserves(ledger, 3)
    clock = FakeClock(start_ms=RESERVATION_HORIZON_MS + 10_000)
    sweeper = ReservationSweeper(
        ledger,
        publisher,
        clock,
        checkpoints,  # type: ignore[arg-type]
        page_size=10,
    )
    publisher.failures = 1
    with pytest.raises(DependencyUnavailable):
        await sweeper.run_once()
    assert checkpoints.states == {}  # not moved past the page
    assert await sweeper.run_once() == 3
