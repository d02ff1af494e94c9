"""The sweeper: a periodic pass over what no event will ever finish.

- messages stuck in `unknown` past the timeout -> StatusChanged(failed, outcome_unknown), so
  billing releases their credit (the state writer applies it like any other event);
- parked statuses older than Meta's retry horizon -> deleted (their wamid is not ours);
- messages past retention -> recipient hashed, content removed; inbound messages and echoes
  past retention -> contact hashed, content and profile name removed; stale conversations
  deleted. Anonymisation goes page after page until a page comes back short: one pass
  catches up with everything past retention, however much has piled up (one page per
  interval fell behind for good once more than a page a minute aged out).

Every step is idempotent, so running it in each status replica is harmless.

Two cadences. Parked statuses (a small collection) are swept every pass. The steps over the
messages, inbound messages and conversations run every `messages_interval_seconds` (10 min by
default): on FerretDB each of their queries (a filter on `status`, `created_at`, ...) scans and
decodes the whole collection, ~2-3 s per query at 10,000 messages on a busy machine, and the
messages collection grows with every send. Once a minute that was a scan per step per minute,
growing with the collection (a 100,000-message campaign's drain slowed as it went). An ambiguous
send is still failed, between `unknown_timeout_seconds` and that plus the interval after it;
retention is in days.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pymongo

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

Doc = dict[str, Any]

# The deadline of a pass with the message steps, all its operations together (each of their
# queries scans its collection on FerretDB: 2-3 s at 10,000 messages, beyond one operation's
# usual 10 s at 100,000 on a busy machine).
MESSAGES_PASS_TIMEOUT_S = 120.0


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
    def __init__(
        self, repository: StatusRepository, publisher: Publisher, clock: Clock, policy: SweepPolicy
    ) -> None:
        self._repository = repository
        self._publisher = publisher
        self._clock = clock
        self._policy = policy

    async def sweep_once(self, messages: bool = True) -> SweepReport:
        """One pass; `messages=False` sweeps only the parked statuses."""
        started = time.perf_counter()
        now = self._clock.now_ms()
        policy = self._policy
        cutoffs = core.sweep_cutoffs(
            now,
            policy.unknown_timeout_seconds,
            policy.parked_retention_days,
            policy.message_retention_days,
        )

        unknown_failed = (
            await self._fail_stuck_unknown(cutoffs.unknown_before, now) if messages else 0
        )

        parked_deleted = await self._repository.delete_parked_before(cutoffs.parked_before)
        parked_remaining = await self._repository.count_parked()
        PARKED_STATUSES.set(parked_remaining)

        anonymised, inbound, conversations_deleted = (
            await self._apply_retention(cutoffs.retained_before, now) if messages else (0, 0, 0)
        )

        report = SweepReport(
            unknown_failed=unknown_failed,
            parked_deleted=parked_deleted,
            parked_remaining=parked_remaining,
            anonymised=anonymised,
            conversations_deleted=conversations_deleted,
            inbound_anonymised=inbound,
        )
        log.info(
            "sweep_finished",
            outcome="swept",
            unknown_failed=report.unknown_failed,
            parked_deleted=parked_deleted,
            parked_remaining=parked_remaining,
            anonymised=report.anonymised,
            conversations_deleted=conversations_deleted,
            inbound_anonymised=report.inbound_anonymised,
            messages=messages,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return report

    async def _fail_stuck_unknown(self, before: int, now: int) -> int:
        """Sends still `unknown` past the timeout are declared failed (outcome unknown)."""
        stuck = await self._repository.stuck_unknown(before, self._policy.batch_size)
        for ref in stuck:
            await self._publisher.publish(STATUS_CHANGED, core.outcome_unknown_failure(ref, now))
        UNKNOWN_OUTCOMES_FAILED.inc(len(stuck))
        return len(stuck)

    async def _apply_retention(self, before: int, now: int) -> tuple[int, int, int]:
        """Messages and inbound messages older than the retention anonymised, conversations
        deleted: (messages anonymised, inbound anonymised, conversations deleted)."""
        anonymised = await self._until_caught_up(
            self._repository.messages_to_anonymise,
            self._repository.anonymise_message,
            core.anonymised_fields,
            before,
            now,
        )
        MESSAGES_ANONYMISED.inc(anonymised)
        inbound = await self._until_caught_up(
            self._repository.inbound_to_anonymise,
            self._repository.anonymise_inbound,
            core.anonymised_inbound_fields,
            before,
            now,
        )
        INBOUND_ANONYMISED.inc(inbound)
        conversations_deleted = await self._repository.delete_conversations_before(before)
        return anonymised, inbound, conversations_deleted

    async def _until_caught_up(
        self,
        find: Callable[[int, int], Awaitable[list[Doc]]],
        anonymise: Callable[[str, Doc], Awaitable[None]],
        fields: Callable[[Doc, bytes, int], Doc],
        before_ms: int,
        now: int,
    ) -> int:
        """Anonymise page after page until a page comes back short; how many in all. Each
        update marks its document, so the next query no longer finds it; a page that comes
        back unchanged (nothing could be marked) ends the pass instead of spinning."""
        batch, key = self._policy.batch_size, self._policy.recipient_hash_key
        done, previous = 0, None
        while True:
            page = await find(before_ms, batch)
            ids = [str(doc["_id"]) for doc in page]
            if not page or ids == previous:
                return done
            for doc_id, doc in zip(ids, page, strict=True):
                await anonymise(doc_id, fields(doc, key, now))
            done += len(page)
            if len(page) < batch:
                return done
            previous = ids

    async def run_forever(
        self, interval_seconds: float, messages_interval_seconds: float | None = None
    ) -> None:
        """Sweep, wait, repeat; the message steps only once per `messages_interval_seconds`
        (every pass when None), starting with the first pass, with a deadline of their own
        (MESSAGES_PASS_TIMEOUT_S: a scan of a big collection outlasts one operation's, and a
        query given up client-side still costs the server its scan). A dependency outage skips
        a pass; a message sweep that failed waits for its next turn (tried again each minute,
        it was a scan a minute again)."""
        messages_due = 0.0
        while True:
            messages = time.monotonic() >= messages_due
            if messages and messages_interval_seconds is not None:
                messages_due = time.monotonic() + messages_interval_seconds
            try:
                if messages:
                    with pymongo.timeout(MESSAGES_PASS_TIMEOUT_S):
                        await self.sweep_once(messages=True)
                else:
                    await self.sweep_once(messages=False)
            except TransientError as exc:
                log.warning("sweep_skipped", outcome="dependency_unavailable", error=str(exc))
            await asyncio.sleep(interval_seconds)
