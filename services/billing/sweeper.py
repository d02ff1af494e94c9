"""The reservation sweeper: credit reserved for a message that never got a final status is
released once Meta can no longer bill it (see `core.RESERVATION_HORIZON_MS`).

The sweeper writes no balance: it publishes an `expired` StatusChanged (keyed by account) for
each overdue reservation, and billing's agent applies it like any other status, as the one
writer of the account. Publishing one twice changes nothing (the settle entry is unique, and
the status service dedupes by event id).

It works through the reserve entries in (at, _id) order from where it got to, one page per
step (memory: one page), and remembers its position in `billing_checkpoints` after each page
whose expiries are published. A reserve entry passed once is never read again: by then it was
settled, or its expiry is published. Entries are written within seconds of their `at`, and the
sweeper only reads those older than the horizon (37 days), so none can appear behind it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from services.billing import metrics
from services.billing.checkpoints import CheckpointStore
from services.billing.core import (
    RESERVATION_HORIZON_MS,
    LedgerEntry,
    OpenReservation,
    overdue_expiries,
    settle_key,
)
from services.billing.ledger import LedgerPosition
from services.billing.worker import LedgerStore, Publisher
from shared.clock import Clock
from shared.logging import get_logger
from shared.messages import STATUS_CHANGED

log = get_logger(__name__)

JOB = "reservation_sweep"


class SweepLedger(LedgerStore, Protocol):
    async def reserves_page(
        self, position: LedgerPosition | None, cutoff: int, limit: int
    ) -> list[LedgerEntry]: ...


@dataclass(frozen=True)
class SweepStep:
    read: int  # reserve entries read (at most a page)
    expired: int
    caught_up: bool  # the page came back short: nothing older is left to look at


class ReservationSweeper:
    def __init__(
        self,
        ledger: SweepLedger,
        publisher: Publisher,
        clock: Clock,
        checkpoints: CheckpointStore,
        *,
        horizon_ms: int = RESERVATION_HORIZON_MS,
        page_size: int = 500,
        concurrency: int = 32,
    ) -> None:
        self._ledger = ledger
        self._publisher = publisher
        self._clock = clock
        self._checkpoints = checkpoints
        self._horizon_ms = horizon_ms
        self._page_size = page_size
        self._concurrency = concurrency

    async def step(self) -> SweepStep:
        """One page: read it, publish its overdue reservations' expiries, remember where it
        ended."""
        now = self._clock.now_ms()
        state = await self._checkpoints.load(JOB) or {}
        position = _position(state)
        page = await self._ledger.reserves_page(position, now - self._horizon_ms, self._page_size)
        reservations: list[OpenReservation] = []
        for start in range(0, len(page), self._concurrency):
            chunk = [e for e in page[start : start + self._concurrency] if e.message_id]
            settles = await asyncio.gather(
                *(self._ledger.get(settle_key(e.message_id or "")) for e in chunk)
            )
            reservations.extend(
                OpenReservation(
                    account_id=e.account_id,
                    message_id=e.message_id or "",
                    at=e.at,
                    settled=s is not None,
                )
                for e, s in zip(chunk, settles, strict=True)
            )
        expiries = overdue_expiries(reservations, now=now, horizon_ms=self._horizon_ms)
        await self._publisher.publish_all([(STATUS_CHANGED, e) for e in expiries])
        metrics.RESERVATIONS_EXPIRED.inc(len(expiries))
        if page:  # only once its expiries are durable
            last = page[-1]
            await self._checkpoints.save(
                JOB, {"position": {"at": last.at, "key": last.key}, "updated_at": now}
            )
        return SweepStep(
            read=len(page), expired=len(expiries), caught_up=len(page) < self._page_size
        )

    async def run_once(self) -> int:
        """Step until caught up; return how many reservations were expired."""
        started = time.perf_counter()
        expired = read = steps = 0
        while True:
            step = await self.step()
            steps += 1
            read += step.read
            expired += step.expired
            if step.caught_up:
                break
        log.info(
            "reservations_swept",
            reserve_entries_read=read,
            pages=steps,
            expired=expired,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return expired


def _position(state: dict[str, object]) -> LedgerPosition | None:
    position = state.get("position")
    if not isinstance(position, dict):
        return None
    return int(position["at"]), str(position["key"])
