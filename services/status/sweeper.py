"""The sweeper: a periodic pass over what no event will ever finish.

- messages stuck in `unknown` past the timeout -> StatusChanged(failed, outcome_unknown), so
  billing releases their credit (the state writer applies it like any other event);
- parked statuses older than Meta's retry horizon -> deleted (their wamid is not ours);
- messages past retention -> recipient hashed, content removed; inbound messages and echoes
  past retention -> contact hashed, content and profile name removed; stale conversations
  deleted.

Every step is idempotent, so running it in each status replica is harmless.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.status import core
from services.status.metrics import (
    INBOUND_ANONYMISED,
    MESSAGES_ANONYMISED,
    PARKED_STATUSES,
    UNKNOWN_OUTCOMES_FAILED,
)
from services.status.publisher import Publisher
from services.status.repository import StatusRepository
from shared.clock import Clock
from shared.errors import TransientError
from shared.logging import get_logger
from shared.messages import STATUS_CHANGED

log = get_logger(__name__)


@dataclass(frozen=True)
class SweepPolicy:
    unknown_timeout_seconds: int = 600
    parked_retention_days: int = 7
    message_retention_days: int = 30
    batch_size: int = 500
    recipient_hash_key: bytes = b""


@dataclass(frozen=True)
class SweepReport:
    unknown_failed: int
    parked_deleted: int
    parked_remaining: int
    anonymised: int
    conversations_deleted: int
    inbound_anonymised: int = 0


class Sweeper:
    def __init__(self, repository: StatusRepository, publisher: Publisher, clock: Clock,
                 policy: SweepPolicy) -> None:
        self._repository = repository
        self._publisher = publisher
        self._clock = clock
        self._policy = policy

    async def sweep_once(self) -> SweepReport:
        started = time.perf_counter()
        now = self._clock.now_ms()
        policy = self._policy
        cutoffs = core.sweep_cutoffs(now, policy.unknown_timeout_seconds,
                                     policy.parked_retention_days, policy.message_retention_days)

        stuck = await self._repository.stuck_unknown(cutoffs.unknown_before, policy.batch_size)
        for ref in stuck:
            await self._publisher.publish(STATUS_CHANGED, core.outcome_unknown_failure(ref, now))
        UNKNOWN_OUTCOMES_FAILED.inc(len(stuck))

        parked_deleted = await self._repository.delete_parked_before(cutoffs.parked_before)
        parked_remaining = await self._repository.count_parked()
        PARKED_STATUSES.set(parked_remaining)

        expired = await self._repository.messages_to_anonymise(cutoffs.retained_before,
                                                               policy.batch_size)
        for doc in expired:
            await self._repository.anonymise_message(
                str(doc["_id"]), core.anonymised_fields(doc, policy.recipient_hash_key, now))
        MESSAGES_ANONYMISED.inc(len(expired))
        inbound = await self._repository.inbound_to_anonymise(cutoffs.retained_before,
                                                              policy.batch_size)
        for doc in inbound:
            await self._repository.anonymise_inbound(
                str(doc["_id"]), core.anonymised_inbound_fields(doc, policy.recipient_hash_key,
                                                                now))
        INBOUND_ANONYMISED.inc(len(inbound))
        conversations_deleted = await self._repository.delete_conversations_before(
            cutoffs.retained_before)

        report = SweepReport(unknown_failed=len(stuck), parked_deleted=parked_deleted,
                             parked_remaining=parked_remaining, anonymised=len(expired),
                             conversations_deleted=conversations_deleted,
                             inbound_anonymised=len(inbound))
        log.info("sweep_finished", outcome="swept", unknown_failed=report.unknown_failed,
                 parked_deleted=parked_deleted, parked_remaining=parked_remaining,
                 anonymised=report.anonymised, conversations_deleted=conversations_deleted,
                 inbound_anonymised=report.inbound_anonymised,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        return report

    async def run_forever(self, interval_seconds: float) -> None:
        """Sweep, wait, repeat. A dependency outage skips one pass; the next one catches up."""
        while True:
            try:
                await self.sweep_once()
            except TransientError as exc:
                log.warning("sweep_skipped", outcome="dependency_unavailable", error=str(exc))
            await asyncio.sleep(interval_seconds)
