"""The idempotency sweeper: a keyed request's record holds a full copy of the message
(recipient, content), and is needed only while a retry may come: 24 h (core's
IDEMPOTENCY_WINDOW_MS; a lookup reads today's and yesterday's bucket). Records older than
`retention` (48 h by default) are deleted, page by page until a page comes back short.

FerretDB has no TTL index, so this periodic pass is the retention. Deleting is idempotent, so
every ingest replica may run it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Protocol

from services.ingest.metrics import IDEMPOTENCY_RECORDS_DELETED
from shared.clock import Clock
from shared.errors import TransientError
from shared.logging import get_logger
from shared.message_docs import from_ms

log = get_logger(__name__)

RETENTION_SECONDS = 48 * 3600


class ExpiringRecords(Protocol):
    async def created_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Ids of up to `limit` records created before `cutoff`."""
        ...

    async def delete(self, record_ids: list[str]) -> int: ...


class IdempotencySweeper:
    def __init__(
        self,
        records: ExpiringRecords,
        clock: Clock,
        *,
        retention_seconds: float = RETENTION_SECONDS,
        page_size: int = 500,
    ) -> None:
        if retention_seconds < 24 * 3600:
            raise ValueError("idempotency records must outlive the 24 h retry window")
        self._records = records
        self._clock = clock
        self._retention_ms = int(retention_seconds * 1000)
        self._page_size = page_size

    async def sweep_once(self) -> int:
        """Delete every record past retention; return how many."""
        started = time.perf_counter()
        cutoff = from_ms(self._clock.now_ms() - self._retention_ms)
        deleted = pages = 0
        while True:
            ids = await self._records.created_before(cutoff, self._page_size)
            if not ids:
                break
            pages += 1
            gone = await self._records.delete(ids)
            deleted += gone
            IDEMPOTENCY_RECORDS_DELETED.inc(gone)
            if len(ids) < self._page_size or gone == 0:
                break  # caught up (or nothing could be deleted: no spinning)
        log.info(
            "idempotency_records_swept",
            deleted=deleted,
            pages=pages,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return deleted

    async def run_forever(self, interval_seconds: float) -> None:
        """Sweep, wait, repeat. A database outage skips a pass; the next one catches up."""
        while True:
            try:
                await self.sweep_once()
            except TransientError as exc:
                log.warning(
                    "idempotency_sweep_skipped", outcome="dependency_unavailable", error=str(exc)
                )
            await asyncio.sleep(interval_seconds)
