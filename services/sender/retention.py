"""Retention of `tier_usage`: a recipient last sent to longer ago than the tier's moving 24 h
window no longer counts, so its entry is deleted (a periodic pass; FerretDB has no TTL index).
Deleting is idempotent: every sender replica may run it."""

from __future__ import annotations

import asyncio
from typing import Protocol

from shared.clock import Clock
from shared.errors import TransientError
from shared.logging import get_logger

log = get_logger(__name__)


class TierUsageStore(Protocol):
    async def delete_tier_usage_before(self, cutoff_ms: int) -> int: ...


async def sweep_tier_usage_once(store: TierUsageStore, clock: Clock, retention_ms: int) -> int:
    deleted = await store.delete_tier_usage_before(clock.now_ms() - retention_ms)
    log.info("tier_usage_swept", deleted=deleted)
    return deleted


async def sweep_tier_usage_forever(
    store: TierUsageStore, clock: Clock, retention_ms: int, interval_seconds: float
) -> None:
    while True:
        try:
            await sweep_tier_usage_once(store, clock, retention_ms)
        except TransientError as exc:
            log.warning(
                "tier_usage_sweep_skipped", outcome="dependency_unavailable", error=str(exc)
            )
        await asyncio.sleep(interval_seconds)
