"""Retention: events (which may hold users' message content), finished deliveries and their
attempts are deleted once older than the retention period."""

from __future__ import annotations

import asyncio

from services.notify import metrics
from services.notify.repository import NotifyStore
from shared.clock import Clock
from shared.errors import TransientError
from shared.logging import get_logger

log = get_logger(__name__)


async def sweep_once(store: NotifyStore, clock: Clock, retention_days: float) -> int:
    removed = await store.sweep(clock.now_ms() - round(retention_days * 86_400_000))
    if removed:
        metrics.SWEPT.inc(removed)
        log.info("notify_swept", outcome="deleted", count=removed)
    return removed


async def sweep_forever(
    store: NotifyStore, clock: Clock, retention_days: float, interval_seconds: float
) -> None:
    while True:
        try:
            await sweep_once(store, clock, retention_days)
        except TransientError as exc:
            log.warning("notify_sweep_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
