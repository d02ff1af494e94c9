"""The dispatcher: delivers what the consumer stored (the outbox), never inside the Kafka loop.

Each endpoint has its own lane: a queue and at most `per_endpoint_concurrency` attempts in
flight, under a global cap. An endpoint that never answers, trickles its answer or answers 500
with a huge body holds only its own lane's slots (each attempt ends by the total timeout), so
it cannot delay another endpoint's deliveries.

Where deliveries come from:
- the consumer hands each new delivery over in memory at once (the fast path);
- a poller reads the database every `poll_interval` for deliveries due: retries (their
  `next_at`), and new ones nobody had in memory past their grace (a lane's queue was full);
- at start, every pending delivery never attempted, then whatever is due: a notify killed in a
  retry storm loses nothing, since every delivery is pending in the database until an attempt
  settled it.

A delivery is held by one task at a time (the `owned` set), and a poll that started before an
attempt's result was written ignores what it read of that delivery (`finished`), so no stale
read starts a second attempt. One notify process dispatches; a second would need a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.notify import core, metrics
from services.notify.endpoints import EndpointDirectory
from services.notify.repository import Doc, NotifyStore
from services.notify.transport import Transport
from shared.clock import Clock
from shared.errors import PermanentError, TransientError
from shared.logging import get_logger

log = get_logger(__name__)

OnDisabled = Callable[[core.Endpoint, core.Health], Awaitable[None]]


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: tuple[float, ...] = core.DEFAULT_RETRY_SCHEDULE_SECONDS  # real seconds
    jitter: float = 0.2
    disable_after_ms: int = 3 * 86_400_000
    # Retry-After is read in real seconds and divided by this (the development time scale).
    retry_after_scale: float = 1.0
    per_endpoint_concurrency: int = 4
    max_in_flight: int = 128
    per_endpoint_queue: int = 1000
    poll_interval: float = 1.0
    poll_batch: int = 500
    grace_ms: int = 30_000


@dataclass
class Pending:
    doc: Doc
    body: bytes | None = None  # the event's bytes, when the consumer handed it over


@dataclass
class _Lane:
    queue: deque[Pending] = field(default_factory=deque)
    running: int = 0


class Dispatcher:
    def __init__(
        self,
        store: NotifyStore,
        directory: EndpointDirectory,
        transport: Transport,
        clock: Clock,
        policy: DeliveryPolicy,
        on_disabled: OnDisabled | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._directory = directory
        self._transport = transport
        self._clock = clock
        self.policy = policy
        self._on_disabled = on_disabled
        self._draw = draw
        self._lanes: dict[str, _Lane] = {}
        self._owned: set[str] = set()
        self._finished: dict[str, float] = {}  # delivery id -> monotonic time its write ended
        self._global = asyncio.Semaphore(policy.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0  # deliveries being attempted or recorded
        self._idle = asyncio.Event()
        self._idle.set()

    # --- intake --------------------------------------------------------------------------

    def submit(self, items: Iterable[Pending]) -> None:
        """Queue deliveries in their endpoints' lanes (ones already held are skipped; a full
        lane leaves the rest to the poller)."""
        touched = set()
        for item in items:
            delivery_id = item.doc["_id"]
            if delivery_id in self._owned:
                continue
            lane = self._lanes.setdefault(item.doc["endpoint_id"], _Lane())
            if len(lane.queue) >= self.policy.per_endpoint_queue:
                continue
            self._owned.add(delivery_id)
            lane.queue.append(item)
            touched.add(item.doc["endpoint_id"])
        for endpoint_id in touched:
            self._pump(endpoint_id)
        self._update_gauges()

    def _pump(self, endpoint_id: str) -> None:
        lane = self._lanes[endpoint_id]
        while lane.queue and lane.running < self.policy.per_endpoint_concurrency:
            item = lane.queue.popleft()
            lane.running += 1
            self._active += 1
            self._idle.clear()
            task = asyncio.create_task(self._run(endpoint_id, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not lane.queue and lane.running == 0:
            del self._lanes[endpoint_id]

    async def _run(self, endpoint_id: str, item: Pending) -> None:
        """One delivery: its lane's slot is held only while its endpoint is being called;
        recording the result happens after the slot went to the next delivery."""
        delivery_id = item.doc["_id"]
        lane = self._lanes[endpoint_id]
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            lane.running -= 1
            if self._lanes.get(endpoint_id) is lane:
                self._pump(endpoint_id)

        try:
            await self._attempt(item, release)
        except (TransientError, PermanentError) as exc:
            # The database failed around the attempt: the delivery is still pending in it,
            # and the poller takes it again when due.
            log.warning(
                "delivery_attempt_not_recorded",
                outcome="left_pending",
                delivery_id=delivery_id,
                error=str(exc),
            )
        except Exception:
            log.exception(
                "delivery_attempt_failed", outcome="left_pending", delivery_id=delivery_id
            )
        finally:
            release()
            self._owned.discard(delivery_id)
            self._finished[delivery_id] = time.monotonic()
            self._update_gauges()
            self._active -= 1
            if not self._lanes and self._active == 0:
                self._idle.set()

    def _update_gauges(self) -> None:
        metrics.QUEUED.set(sum(len(lane.queue) for lane in self._lanes.values()))

    async def wait_idle(self) -> None:
        """Until nothing is queued or in flight (tests, and a graceful stop)."""
        await self._idle.wait()

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, item: Pending, release: Callable[[], None]) -> None:
        doc = item.doc
        endpoint = await self._directory.get(doc["endpoint_id"])
        if endpoint is None or endpoint.deleted:
            await self._finish(doc, "cancelled", "endpoint_deleted")
            return
        health = self._directory.health_of(endpoint.id)
        if doc.get("kind", "live") == "live" and not core.receives(endpoint, health):
            await self._finish(
                doc,
                "cancelled",
                "endpoint_disabled" if core.disabled(endpoint, health) else "endpoint_switched_off",
            )
            return
        body = item.body
        if body is None:
            event = await self._store.event(doc["event_id"])
            if event is None:
                await self._finish(doc, "cancelled", "event_missing")
                return
            body = str(event["payload"]).encode()
        started = self._clock.now_ms()
        n = int(doc.get("attempts", 0)) + 1
        if n == 1 and doc.get("kind", "live") == "live" and doc.get("source_at"):
            metrics.EVENT_LAG.observe(max(0, started - int(doc["source_at"])) / 1000)
        async with self._global:
            metrics.IN_FLIGHT.inc()
            try:
                result = await self._post(endpoint, doc["event_id"], body, started)
            finally:
                metrics.IN_FLIGHT.dec()
        release()
        now = self._clock.now_ms()
        update = core.after_attempt(
            n,
            result,
            now,
            self.policy.schedule,
            self.policy.jitter,
            self._draw(),
            self.policy.retry_after_scale,
        )
        metrics.ATTEMPTS.labels(update.outcome).inc()
        if result.status is not None:
            metrics.ATTEMPT_DURATION.observe(result.latency_s)
        recorded = self._store.insert_attempt(
            core.attempt_doc(doc, n, started, result, update.outcome, update.next_at)
        )
        if update.state == "delivered":
            await asyncio.gather(recorded, self._store.mark_delivered(doc["_id"], now))
            metrics.DELIVERIES.labels("delivered").inc()
        else:
            await recorded
            fields: dict[str, Any] = {
                "attempts": n,
                "state": update.state,
                "next_at": update.next_at,
                "last_status": result.status,
                "last_error": result.error or update.outcome,
            }
            if update.state == "failed":
                fields["done_at"] = now
                metrics.DELIVERIES.labels("failed").inc()
            await self._store.update_delivery(doc["_id"], fields)
        log.info(
            "delivery_attempted",
            outcome=update.outcome,
            state=update.state,
            endpoint_id=endpoint.id,
            event_type=doc.get("event_type"),
            attempt=n,
            status_code=result.status,
            duration_ms=round(result.latency_s * 1000, 1),
        )
        await self._judge(endpoint, health, update.outcome, now)

    async def _post(
        self, endpoint: core.Endpoint, event_id: str, body: bytes, now: int
    ) -> core.AttemptResult:
        try:
            secrets = self._directory.secrets(endpoint, now)
        except PermanentError as exc:
            return core.AttemptResult(None, 0.0, "blocked", f"secret unreadable: {exc.message}")
        if not secrets:
            return core.AttemptResult(None, 0.0, "blocked", "the endpoint has no live secret")
        headers = core.delivery_headers(event_id, body, secrets, endpoint.format, now // 1000)
        return await self._transport.post(endpoint.url, body, headers)

    async def _finish(self, doc: Doc, state: str, reason: str) -> None:
        await self._store.update_delivery(
            doc["_id"],
            {
                "state": state,
                "last_error": reason,
                "next_at": None,
                "done_at": self._clock.now_ms(),
            },
        )
        metrics.DELIVERIES.labels(state).inc()
        log.info(
            "delivery_cancelled",
            outcome=reason,
            endpoint_id=doc["endpoint_id"],
            event_type=doc.get("event_type"),
        )

    async def _judge(
        self, endpoint: core.Endpoint, before: core.Health, outcome: core.AttemptOutcome, now: int
    ) -> None:
        current = self._directory.health_of(endpoint.id)  # another attempt may have moved it
        after, change = core.health_after(
            current, endpoint, outcome, now, self.policy.disable_after_ms
        )
        self._directory.health[endpoint.id] = after
        if change is None:
            return
        await self._store.save_endpoint_state(endpoint.id, endpoint.account_id, after.fields())
        if change == "disabled":
            reason = after.disabled_reason or "failing"
            metrics.ENDPOINTS_DISABLED.labels(reason).inc()
            log.warning(
                "endpoint_disabled",
                outcome=reason,
                endpoint_id=endpoint.id,
                account_id=endpoint.account_id,
            )
            if self._on_disabled is not None:
                await self._on_disabled(endpoint, after)

    # --- the poller ----------------------------------------------------------------------

    async def recover(self) -> int:
        """At start: every pending delivery never attempted (in pages), so a restart delivers
        them without waiting for their grace."""
        after, found = "", 0
        while True:
            docs = await self._store.unattempted_deliveries(after, self.policy.poll_batch)
            if not docs:
                return found
            found += len(docs)
            after = docs[-1]["_id"]
            await self._take(docs, time.monotonic())

    async def poll_once(self) -> int:
        started = time.monotonic()
        docs = await self._store.due_deliveries(self._clock.now_ms(), self.policy.poll_batch)
        return await self._take(docs, started)

    async def _take(self, docs: list[Doc], read_started: float) -> int:
        fresh = [
            d
            for d in docs
            if d["_id"] not in self._owned
            and self._finished.get(d["_id"], float("-inf")) < read_started
        ]
        self._forget_finished(read_started - 300.0)
        bodies = await self._store.events_by_ids(list({d["event_id"] for d in fresh}))
        self.submit(
            Pending(
                d,
                str(bodies[d["event_id"]]["payload"]).encode() if d["event_id"] in bodies else None,
            )
            for d in fresh
        )
        return len(fresh)

    def _forget_finished(self, before: float) -> None:
        if len(self._finished) > 10_000:
            self._finished = {k: t for k, t in self._finished.items() if t >= before}

    async def run_forever(self) -> None:
        """Recover, then poll for due deliveries until cancelled."""
        while True:
            try:
                recovered = await self.recover()
                if recovered:
                    log.info("deliveries_recovered", outcome="queued", count=recovered)
                break
            except TransientError as exc:
                log.warning("delivery_recovery_failed", error=str(exc))
                await asyncio.sleep(self.policy.poll_interval)
        while True:
            try:
                await self.poll_once()
            except TransientError as exc:
                log.warning("delivery_poll_failed", error=str(exc))
            await asyncio.sleep(self.policy.poll_interval)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
