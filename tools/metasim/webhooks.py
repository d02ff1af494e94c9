"""Webhook delivery: status timelines, batching, signing, retries, duplicates - off the send path.

Producers (the send handler, control API) only push onto the timeline and return; the timeline
task turns due events into pending items, a batcher groups them into Meta envelopes, and each POST
runs in its own task under a concurrency cap. Every random choice uses the simulator's seeded rng.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from tools.metasim.clock import Clock
from tools.metasim.config import OutcomesConfig, WebhooksConfig, resolve_habits
from tools.metasim.core import (
    PlannedStatus,
    StatusDelays,
    later_status,
    plan_statuses,
    retry_delay,
    version_number,
)
from tools.metasim.metrics import Metrics
from tools.metasim.payloads import (
    envelope,
    messages_value_head,
    serialize_like_meta,
    signature_header,
    status_item,
    template_status_value,
    throughput_upgrade_value,
)
from tools.metasim.sends import Accepted
from tools.metasim.state import PhoneNumber, SendRecord, Template
from tools.metasim.timeline import Timeline

log = structlog.get_logger("metasim.webhooks")

# Metric label (closed set) and delivery-log counter of each webhook field the simulator emits.
_CHANGE_KINDS = {
    "message_template_status_update": "template_status",
    "message_template_quality_update": "template_quality",
    "template_category_update": "template_category",
    "phone_number_quality_update": "quality_update",
    "phone_number_name_update": "name_update",
    "account_update": "account_update",
    "user_preferences": "user_preferences",
    "smb_message_echoes": "message_echo",
}
_CHANGE_COUNTS = {
    "message_template_status_update": "template_status_updates",
    "message_template_quality_update": "template_quality_updates",
    "template_category_update": "template_category_updates",
    "phone_number_quality_update": "quality_updates",
    "phone_number_name_update": "name_updates",
    "account_update": "account_updates",
    "user_preferences": "user_preferences",
    "smb_message_echoes": "message_echoes",
}


@dataclass(slots=True)
class _Pending:
    kind: str  # status | message | template_status | quality_update | foreign_status
    waba_id: str
    field: str
    number: PhoneNumber | None  # set for `messages` changes, which merge per phone number
    lists: dict[str, list[dict[str, Any]]] | None = None
    value: dict[str, Any] | None = None
    waiter: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Delivery:
    id: int
    body: bytes
    signature: str
    items: int
    first_at: float
    duplicate_of: int | None = None
    attempts: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        clock: Clock,
        timeline: Timeline,
        rng: random.Random,
        app_secret: bytes,
        time_scale: float,
        webhooks: WebhooksConfig,
        outcomes: OutcomesConfig,
        max_log: int,
        metrics: Metrics,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._clock = clock
        self._ssl_context = ssl_context
        self._timeline = timeline
        self._app_secret = app_secret
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivery_ids = itertools.count(1)
        self.log: deque[dict[str, Any]] = deque(maxlen=max_log)
        self.counts: Counter[str] = Counter()
        self._pending: list[_Pending] = []
        self._batch_generation = 0
        self.reset(rng=rng, time_scale=time_scale, webhooks=webhooks, outcomes=outcomes)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.config.max_concurrency, ssl=self._ssl_context or True
            ),
            headers={"User-Agent": "facebookexternalua"},
        )

    async def close(self) -> None:
        self._cancel_deliveries()
        if self._session is not None:
            await self._session.close()

    def reset(
        self,
        *,
        rng: random.Random,
        time_scale: float,
        webhooks: WebhooksConfig,
        outcomes: OutcomesConfig,
    ) -> None:
        self._cancel_deliveries()
        for pending in self._pending:
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.set_result(None)
        self._pending.clear()
        self._batch_generation += 1
        self.log.clear()
        self.counts.clear()
        self.rng = rng
        self.time_scale = time_scale
        self.outcomes = outcomes
        self.configure(webhooks)

    def configure(self, webhooks: WebhooksConfig) -> None:
        self.config = webhooks
        self.habits = resolve_habits(webhooks.profile, webhooks.habits)
        self._semaphore = asyncio.Semaphore(webhooks.max_concurrency)
        self._with_conversation = version_number(webhooks.graph_version) < 24.0

    def _cancel_deliveries(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _real(self, simulated_seconds: float) -> float:
        return simulated_seconds * self.time_scale

    # -- producers ------------------------------------------------------------------------

    def on_accepted(self, accepted: Accepted, number: PhoneNumber) -> asyncio.Future[None] | None:
        """Schedule the status webhooks of an accepted send. Returns a future when this send's
        `sent` webhook must reach the receiver before the HTTP response is returned."""
        if not self.config.enabled:
            return None
        rng, habits, outcomes = self.rng, self.habits, self.outcomes
        failure = accepted.failure_code
        failure_details = accepted.failure_details
        fail_after_sent = False
        if failure is None and accepted.paced and rng.random() < outcomes.paced_drop_probability:
            failure = 132015  # a held message Meta decides not to release
        if failure is None and rng.random() < outcomes.async_failure_probability:
            failure, fail_after_sent = outcomes.async_failure_code, True
            failure_details = None
        plan = plan_statuses(
            delays=self._jittered_delays(),
            reaction=accepted.reaction,
            failure_code=failure,
            fail_after_sent=fail_after_sent,
            will_read=rng.random() < self.config.read_probability,
            skip_delivered=habits["skip_delivered"]
            and rng.random() < habits["skip_delivered_probability"],
            out_of_order=habits["out_of_order"]
            and rng.random() < habits["out_of_order_probability"],
            hold_seconds=self.outcomes.paced_hold_seconds if accepted.paced else 0.0,
            voice=accepted.voice,
            failure_details=failure_details,
        )
        waiter = None
        if (
            habits["sent_before_response"]
            and plan[0].status == "sent"
            and not accepted.paced
            and rng.random() < habits["sent_before_response_probability"]
        ):
            waiter = asyncio.get_running_loop().create_future()
        record = accepted.record
        now = self._clock.monotonic()
        for planned in plan:
            first = waiter is not None and planned.status == "sent"
            emit_at = now if first else now + self._real(planned.emit_offset)
            self._timeline.call_at(
                emit_at,
                self._status_due,
                record,
                planned,
                number,
                record.accepted_at + self._real(planned.event_offset),
                waiter if first else None,
            )
        return waiter

    def _jittered_delays(self) -> StatusDelays:
        d = self.config.delays
        if d.jitter == 0:
            return StatusDelays(d.sent, d.delivered, d.read)
        u = self.rng.uniform
        return StatusDelays(
            d.sent * (1 + d.jitter * u(-1, 1)),
            d.delivered * (1 + d.jitter * u(-1, 1)),
            d.read * (1 + d.jitter * u(-1, 1)),
        )

    def _status_due(
        self,
        record: SendRecord,
        planned: PlannedStatus,
        number: PhoneNumber,
        event_wall: float,
        waiter: asyncio.Future[None] | None,
    ) -> None:
        record.final_status = later_status(record.final_status, planned.status)
        if planned.status == "failed":
            record.error_code = planned.error_code
        self.counts[f"status_{planned.status}"] += 1
        item = status_item(record, planned, event_wall, record.pricing, self._with_conversation)
        self._enqueue(
            _Pending(
                "status",
                number.waba_id,
                "messages",
                number,
                lists={"statuses": [item]},
                waiter=waiter,
            ),
            flush_now=waiter is not None,
        )

    def emit_inbound(
        self, number: PhoneNumber, contact: dict[str, Any] | None, message: dict[str, Any]
    ) -> None:
        """A user's message (`contact` None for `system` messages, which carry no contacts)."""
        self.counts["inbound_messages"] += 1
        lists: dict[str, list[dict[str, Any]]] = {"messages": [message]}
        if contact is not None:
            lists = {"contacts": [contact], "messages": [message]}
        self._enqueue(_Pending("message", number.waba_id, "messages", number, lists=lists))

    def emit_template_status(
        self,
        template: Template,
        event: str,
        reason: object = "NONE",
        other_info: dict[str, str] | None = None,
    ) -> None:
        value = template_status_value(template, event, reason, other_info)
        self.emit_change(template.waba_id, "message_template_status_update", value)

    def emit_throughput_upgrade(self, number: PhoneNumber, tier: str) -> None:
        value = throughput_upgrade_value(number, tier)
        self.emit_change(number.waba_id, "phone_number_quality_update", value)

    def emit_change(self, waba_id: str, field: str, value: dict[str, Any]) -> None:
        """One `changes[]` item of any field, in Meta's envelope for `waba_id` (never merged with
        other changes' values; batched with them like everything else)."""
        self.counts[_CHANGE_COUNTS.get(field, "other_updates")] += 1
        kind = _CHANGE_KINDS.get(field, "other")
        self._enqueue(_Pending(kind, waba_id, field, None, value=value))

    # -- batching -------------------------------------------------------------------------

    def _enqueue(self, pending: _Pending, flush_now: bool = False) -> None:
        if not self.config.enabled:
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.set_result(None)
            return
        self._metrics.webhook_items.labels(pending.kind).inc()
        self._pending.append(pending)
        habits = self.habits
        if flush_now or not habits["batching"] or len(self._pending) >= habits["batch_max"]:
            self._flush()
        elif len(self._pending) == 1:
            self._timeline.call_later(
                self._real(habits["batch_window_seconds"]), self._flush, self._batch_generation
            )

    def _flush(self, generation: int | None = None) -> None:
        if generation is not None and generation != self._batch_generation:
            return  # that batch was already flushed by size
        self._batch_generation += 1
        pending, self._pending = self._pending, []
        if not pending:
            return
        if (
            self.habits["foreign_statuses"]
            and self.rng.random() < self.habits["foreign_status_probability"]
        ):
            donor = next((p for p in pending if p.number is not None), None)
            if donor is not None:
                pending.append(self._foreign_status(donor.number))
        entries: dict[str, list[dict[str, Any]]] = {}
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        waiters = []
        for p in pending:
            if p.waiter is not None:
                waiters.append(p.waiter)
            changes = entries.setdefault(p.waba_id, [])
            if p.number is None:
                changes.append({"value": p.value, "field": p.field})
                continue
            value = merged.get((p.waba_id, p.number.id))
            if value is None:
                value = merged[(p.waba_id, p.number.id)] = messages_value_head(p.number)
                changes.append({"value": value, "field": "messages"})
            for key, items in (p.lists or {}).items():
                value.setdefault(key, []).extend(items)
        wall = self._clock.wall()
        body = serialize_like_meta(envelope(entries.items(), wall), self.config.escape_like_meta)
        self._deliver(body, len(pending), waiters)

    def _foreign_status(self, number: PhoneNumber) -> _Pending:
        """A status for a message some other app (or WhatsApp Manager) sent from the same number."""
        wamid = "wamid.FOREIGN" + "".join(
            self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=24)
        )
        item = {
            "id": wamid,
            "status": "delivered",
            "timestamp": str(int(self._clock.wall())),
            "recipient_id": "4477009" + str(self.rng.randrange(10_000, 99_999)),
        }
        self.counts["foreign_statuses"] += 1
        return _Pending(
            "foreign_status", number.waba_id, "messages", number, lists={"statuses": [item]}
        )

    # -- delivery -------------------------------------------------------------------------

    def _deliver(
        self,
        body: bytes,
        items: int,
        waiters: list[asyncio.Future[None]],
        duplicate_of: int | None = None,
    ) -> None:
        delivery = _Delivery(
            next(self._delivery_ids),
            body,
            signature_header(body, self._app_secret),
            items,
            self._clock.monotonic(),
            duplicate_of,
            waiters=waiters,
        )
        self._launch(delivery)

    def _launch(self, delivery: _Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        status: int | None = None
        error: str | None = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self._semaphore:
            try:
                assert self._session is not None, "dispatcher not started"
                async with self._session.post(
                    self.config.callback_url,
                    data=delivery.body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": delivery.signature,
                    },
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                ) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientError as exc:
                error = f"connection_error: {type(exc).__name__}"
        ok = status == 200  # Meta wants exactly 200; anything else is redelivered
        result = "ok" if ok else ("http_error" if status is not None else error.split(":")[0])  # type: ignore[union-attr]
        self._metrics.webhook_attempts.labels(result).inc()
        self.counts[f"attempts_{result}"] += 1
        entry: dict[str, Any] = {
            "delivery_id": delivery.id,
            "attempt": delivery.attempts,
            "at": self._clock.wall(),
            "at_monotonic": self._clock.monotonic(),
            "status": status,
            "error": error,
            "duration_ms": round((loop.time() - started) * 1000, 3),
            "items": delivery.items,
            "bytes": len(delivery.body),
            "duplicate_of": delivery.duplicate_of,
        }
        if ok:
            entry["outcome"] = "delivered"
            self._release(delivery)
            habits = self.habits
            if (
                delivery.duplicate_of is None
                and habits["duplicates"]
                and self.rng.random() < habits["duplicate_probability"]
            ):
                # Same bytes again later, as Meta does when its own bookkeeping missed the ack.
                delay = self._real(self.rng.uniform(0.5, 5.0))
                self._timeline.call_later(delay, self._send_duplicate, delivery)
        else:
            habits = self.habits
            wait = retry_delay(
                delivery.attempts,
                habits["retry_initial_seconds"],
                habits["retry_max_interval_seconds"],
            )
            elapsed = self._clock.monotonic() - delivery.first_at
            if habits["retries"] and elapsed + self._real(wait) <= self._real(
                habits["retry_horizon_seconds"]
            ):
                entry["outcome"] = "retry_scheduled"
                entry["retry_in_seconds"] = self._real(wait)
                self._timeline.call_later(self._real(wait), self._launch, delivery)
            else:
                entry["outcome"] = "dropped"
                self.counts["deliveries_dropped"] += 1
                log.warning("webhook_dropped", delivery_id=delivery.id, attempts=delivery.attempts)
                self._release(delivery)
        self.log.append(entry)

    def _send_duplicate(self, original: _Delivery) -> None:
        self.counts["duplicates_sent"] += 1
        self._deliver(original.body, original.items, [], duplicate_of=original.id)

    @staticmethod
    def _release(delivery: _Delivery) -> None:
        for waiter in delivery.waiters:
            if not waiter.done():
                waiter.set_result(None)
        delivery.waiters.clear()

    # -- verification handshake -----------------------------------------------------------

    async def verify_subscription(
        self, callback_url: str, verify_token: str, challenge: str
    ) -> dict[str, Any]:
        """Meta's GET handshake: the receiver must answer 200 with the challenge echoed raw."""
        assert self._session is not None, "dispatcher not started"
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token,
            "hub.challenge": challenge,
        }
        try:
            async with self._session.get(
                callback_url,
                params=params,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
            ) as response:
                text = await response.text()
                status: int | None = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            return {
                "verified": False,
                "status": None,
                "error": type(exc).__name__,
                "challenge": challenge,
            }
        return {
            "verified": status == 200 and text == challenge,
            "status": status,
            "body": text[:200],
            "challenge": challenge,
        }
