"""Reservations that never get a final status are expired once Meta can no longer bill them,
through billing's own agent (the sweeper only publishes the status)."""

from __future__ import annotations

from services.billing.core import (
    RESERVATION_HORIZON_MS,
    OpenReservation,
    overdue_expiries,
    settlement_for,
)
from services.billing.sweeper import ReservationSweeper
from shared.clock import FakeClock
from shared.messages import SEND_REQUESTED, STATUS_CHANGED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status
from tests.unit.billing.test_worker import funded

DAY_MS = 86_400_000


def test_the_horizon_is_metas_ttl_plus_its_webhook_retries() -> None:
    assert RESERVATION_HORIZON_MS == 37 * DAY_MS


def test_only_unsettled_reservations_past_the_horizon_expire() -> None:
    now = 100 * DAY_MS
    reservations = [
        OpenReservation(ACCOUNT, "msg_old", at=now - RESERVATION_HORIZON_MS, settled=False),
        OpenReservation(ACCOUNT, "msg_settled", at=0, settled=True),
        OpenReservation(ACCOUNT, "msg_young", at=now - RESERVATION_HORIZON_MS + 1,
                        settled=False),
    ]
    [expiry] = overdue_expiries(reservations, now=now)
    assert (expiry.message_id, expiry.status, expiry.source, expiry.event_id) == (
        "msg_old", "expired", "billing", "msg_old:expired:billing")
    assert settlement_for(expiry) == "release"


async def test_the_sweeper_expires_an_overdue_reservation_and_the_agent_releases_it() -> None:
    shell = await funded()
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_2")))
    await shell.worker.handle(shell.record(STATUS_CHANGED, status(
        "msg_2", "delivered", pricing=regular("utility"))))
    clock = FakeClock()
    clock.advance(RESERVATION_HORIZON_MS / 1000 + 1)
    shell.publisher.published.clear()

    sweeper = ReservationSweeper(shell.ledger, shell.publisher, clock)  # type: ignore[arg-type]
    assert await sweeper.run_once() == 1
    [(topic, expiry)] = shell.publisher.published
    assert (topic, expiry.message_id) == ("messages.status-changed.v1", "msg_1")

    assert await shell.worker.handle(shell.record(STATUS_CHANGED, expiry)) == "released"
    assert shell.balance.reserved == 0
    late = status("msg_1", "delivered", pricing=regular("utility"))
    assert await shell.worker.handle(shell.record(STATUS_CHANGED, late)) == "duplicate"
    assert shell.balance.reserved == 0
