"""The reservation sweeper: credit reserved for a message that never got a final status is
released once Meta can no longer bill it (see `core.RESERVATION_HORIZON_MS`).

The sweeper writes no balance: it publishes an `expired` StatusChanged (keyed by account) for
each overdue reservation, and billing's agent applies it like any other status, as the one
writer of the account. Publishing one twice changes nothing (the settle entry is unique, and
the status service dedupes by event id).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from services.billing import metrics
from services.billing.core import (
    RESERVATION_HORIZON_MS,
    LedgerEntry,
    OpenReservation,
    overdue_expiries,
    settle_key,
)
from services.billing.worker import LedgerStore, Publisher
from shared.clock import Clock
from shared.logging import get_logger
from shared.messages import STATUS_CHANGED

log = get_logger(__name__)


class SweepLedger(LedgerStore, Protocol):
    async def reserves_before(self, cutoff: int) -> list[LedgerEntry]: ...


class ReservationSweeper:
    def __init__(self, ledger: SweepLedger, publisher: Publisher, clock: Clock, *,
                 horizon_ms: int = RESERVATION_HORIZON_MS, concurrency: int = 32) -> None:
        self._ledger = ledger
        self._publisher = publisher
        self._clock = clock
        self._horizon_ms = horizon_ms
        self._concurrency = concurrency

    async def run_once(self) -> int:
        """Publish an expiry for every overdue reservation; return how many."""
        started = time.perf_counter()
        now = self._clock.now_ms()
        old = await self._ledger.reserves_before(now - self._horizon_ms)
        reservations: list[OpenReservation] = []
        for start in range(0, len(old), self._concurrency):
            chunk = [e for e in old[start:start + self._concurrency] if e.message_id]
            settles = await asyncio.gather(
                *(self._ledger.get(settle_key(e.message_id or "")) for e in chunk))
            reservations.extend(
                OpenReservation(account_id=e.account_id, message_id=e.message_id or "", at=e.at,
                                settled=s is not None)
                for e, s in zip(chunk, settles, strict=True))
        expiries = overdue_expiries(reservations, now=now, horizon_ms=self._horizon_ms)
        await self._publisher.publish_all([(STATUS_CHANGED, e) for e in expiries])
        metrics.RESERVATIONS_EXPIRED.inc(len(expiries))
        log.info("reservations_swept", old_reservations=len(old), expired=len(expiries),
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return len(expiries)
