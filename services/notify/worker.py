"""The Kafka side of notify: every platform event a client may hear of becomes a stored client
event and one pending delivery per endpoint that wants it (the outbox), then the record is
committed and the dispatcher delivers. Alerts become `email_alerts` documents for the mailer.

The records of a batch are handled concurrently (none depends on another's effect: a status
that arrives before its request waits a moment for the request's details, then goes without
them), so their inserts go out together. A record that can never be handled goes to the
dead-letter topic (shared/kafka.py's rule); a request naming an unknown endpoint is logged and
counted, not dead-lettered (it is the client's, not a bug).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from aiokafka import AIOKafkaProducer, ConsumerRecord

from services.notify import alerts, core, meta_format, metrics
from services.notify.dispatcher import Dispatcher, Pending
from services.notify.endpoints import EndpointDirectory
from services.notify.mailer import Mailer
from services.notify.repository import NotifyStore
from shared.client_events import ClientEventType
from shared.clock import Clock
from shared.errors import PermanentError
from shared.kafka import (
    KafkaConfig,
    consume_concurrently,
    make_consumer,
    report_lag_forever,
    topic_name,
)
from shared.logging import get_logger
from shared.messages import (
    ACCOUNT_HOLD_CHANGED,
    BALANCE_TOPPED_UP,
    INBOUND_RECEIVED,
    LOW_BALANCE_ALERTED,
    NOTIFY_REQUESTED,
    NUMBER_QUALITY_CHANGED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    WABA_STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    NotifyRequested,
    Topic,
    topics_read_by,
)

log = get_logger(__name__)

SERVICE = "notify"
Record = ConsumerRecord[bytes, bytes]
_CLIENT_TYPES = frozenset(get_args(ClientEventType))
_ACCOUNT_CACHE_SECONDS = 60.0


def group(prefix: str) -> str:
    return f"{prefix}notify"


def type_label(event_type: str) -> str:
    return event_type if event_type in _CLIENT_TYPES else "meta"


class _Ttl:
    """A small cache of look-ups that rarely change (which account owns a WABA or number)."""

    def __init__(self, clock: Clock, seconds: float, capacity: int = 10_000) -> None:
        self._clock = clock
        self._seconds = seconds
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    async def get(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        now = self._clock.monotonic()
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        # an unknown owner is asked again sooner: it may be registered any moment
        self._items[key] = (now + (self._seconds if value is not None else 5.0), value)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value


class NotifyWorker:
    def __init__(
        self,
        store: NotifyStore,
        directory: EndpointDirectory,
        dispatcher: Dispatcher,
        mailer: Mailer,
        clock: Clock,
        prefix: str = "",
        grace_ms: int = 30_000,
        max_replay_events: int = 10_000,
        details_wait_seconds: float = 3.0,
        alert_max_age_ms: int = 86_400_000,
    ) -> None:
        self._store = store
        self._directory = directory
        self._dispatcher = dispatcher
        self._mailer = mailer
        self._clock = clock
        self._grace_ms = grace_ms
        self._max_replay = max_replay_events
        self._details_wait = details_wait_seconds
        self._alert_max_age = alert_max_age_ms
        self._details: OrderedDict[str, core.MessageDetails] = OrderedDict()
        self._owners = _Ttl(clock, _ACCOUNT_CACHE_SECONDS)
        handlers: list[tuple[Topic[Any], Callable[[bytes, int], Awaitable[None]]]] = [
            (SEND_REQUESTED, self._send_requested),
            (STATUS_CHANGED, self._status_changed),
            (INBOUND_RECEIVED, self._inbound),
            (TEMPLATE_STATUS_CHANGED, self._template),
            (NUMBER_QUALITY_CHANGED, self._quality),
            (WABA_STATUS_CHANGED, self._waba),
            (ACCOUNT_HOLD_CHANGED, self._hold),
            (LOW_BALANCE_ALERTED, self._low_balance),
            (BALANCE_TOPPED_UP, self._topped_up),
            (NOTIFY_REQUESTED, self._request),
            (WEBHOOK_RECEIVED, self._webhook),
        ]
        self._handlers = {topic_name(t, prefix): h for t, h in handlers}

    async def handle_record(self, record: Record) -> None:
        handler = self._handlers.get(record.topic)
        if handler is None:
            raise PermanentError(f"notify does not read {record.topic}", code="unknown_topic")
        source_at = (
            int(record.timestamp)
            if record.timestamp and record.timestamp > 0
            else self._clock.now_ms()
        )
        await handler(record.value or b"", source_at)

    # --- storing and handing over -------------------------------------------------------

    async def emit(self, event: core.OutEvent, source_at: int) -> int:
        """Store the event and a delivery per endpoint that wants it, and hand the new ones to
        the dispatcher. The number of new deliveries."""
        endpoints = [
            e
            for e in await self._directory.for_account(event.account_id)
            if e.format == event.format
        ]
        label = type_label(event.type)
        if not endpoints:
            metrics.EVENTS.labels(label, "no_endpoint").inc()
            return 0
        now = self._clock.now_ms()
        stored = await self._store.insert_event(event.document(source_at, now))
        metrics.EVENTS.labels(label, "stored" if stored else "duplicate").inc()
        targets = [
            e for e in endpoints if core.wants(e, self._directory.health_of(e.id), event, source_at)
        ]
        docs = [
            core.delivery_doc(e, event.id, event.type, "live", source_at, now, self._grace_ms)
            for e in targets
        ]
        return await self._deliver(docs, event.body)

    async def _deliver(self, docs: list[dict[str, Any]], body: bytes | None) -> int:
        inserted = await asyncio.gather(*(self._store.insert_delivery(d) for d in docs))
        new = [Pending(d, body) for d, ok in zip(docs, inserted, strict=True) if ok]
        self._dispatcher.submit(new)
        return len(new)

    async def _alert(self, alert: alerts.Alert | None, source_at: int) -> None:
        if alert is None:
            return
        if self._clock.now_ms() - source_at > self._alert_max_age:
            log.info("alert_skipped", outcome="too_old", kind=alert.kind)
            return  # e.g. a first start reading months of history: no stale mail
        await self._mailer.raise_alert(alert)

    async def _account_of_waba(self, waba_id: str) -> str | None:
        return await self._owners.get(
            f"waba:{waba_id}",  # type: ignore[no-any-return]
            lambda: self._store.account_of_waba(waba_id),
        )

    async def _account_of_number(self, number: str) -> str | None:
        return await self._owners.get(
            f"number:{number}",  # type: ignore[no-any-return]
            lambda: self._store.account_of_number(number),
        )

    # --- messages -------------------------------------------------------------------------

    async def _send_requested(self, raw: bytes, source_at: int) -> None:
        request = SEND_REQUESTED.decode_record(raw)
        event = core.accepted_event(request)
        if event.details is not None:
            self._remember_details(request.message_id, core.MessageDetails.from_dict(event.details))
        await self.emit(event, source_at)

    def _remember_details(self, message_id: str, details: core.MessageDetails) -> None:
        self._details[message_id] = details
        self._details.move_to_end(message_id)
        while len(self._details) > 50_000:
            self._details.popitem(last=False)

    async def _status_changed(self, raw: bytes, source_at: int) -> None:
        change = STATUS_CHANGED.decode_record(raw)
        if change.status not in core.CLIENT_STATUSES:
            return
        endpoints = await self._directory.for_account(change.account_id)
        if not any(e.format == core.STANDARD for e in endpoints):
            metrics.EVENTS.labels(f"message.{change.status}", "no_endpoint").inc()
            return
        details = await self._message_details(change.message_id)
        event = core.status_event(change, details)
        if event is not None:
            await self.emit(event, source_at)

    async def _message_details(self, message_id: str) -> core.MessageDetails | None:
        """The request's details: ours (memory, then our stored accepted event), else status's
        message document. A status read before its request waits a little for it."""
        deadline = time.monotonic() + self._details_wait
        partial: core.MessageDetails | None = None
        while True:
            known = self._details.get(message_id)
            if known is not None:
                return known
            stored = await self._store.message_details(message_id)
            if stored:
                return core.MessageDetails.from_dict(stored)
            doc = await self._store.message_doc(message_id)
            if doc is not None:
                partial = core.MessageDetails.from_message_doc(doc)
                if partial.complete:
                    return partial
            if time.monotonic() >= deadline:
                log.warning(
                    "status_without_request_details", outcome="sent_without", message_id=message_id
                )
                return partial
            await asyncio.sleep(0.2)

    async def _inbound(self, raw: bytes, source_at: int) -> None:
        event = core.received_event(INBOUND_RECEIVED.decode_record(raw))
        if event is not None:
            await self.emit(event, source_at)

    # --- templates, numbers, WABAs, money ---------------------------------------------

    async def _template(self, raw: bytes, source_at: int) -> None:
        change = TEMPLATE_STATUS_CHANGED.decode_record(raw)
        account_id = await self._account_of_waba(change.waba_id)
        if account_id is None:
            return
        await self.emit(core.template_event(change, account_id), source_at)
        await self._alert(alerts.template_status(change, account_id), source_at)

    async def _quality(self, raw: bytes, source_at: int) -> None:
        change = NUMBER_QUALITY_CHANGED.decode_record(raw)
        account_id = change.account_id or await self._account_of_number(change.phone_number_id)
        if account_id is None:
            return
        await self.emit(core.quality_event(change, account_id), source_at)
        await self._alert(alerts.number_quality(change, account_id), source_at)

    async def _waba(self, raw: bytes, source_at: int) -> None:
        change = WABA_STATUS_CHANGED.decode_record(raw)
        account_id = await self._account_of_waba(change.waba_id)
        if account_id is not None:
            await self.emit(core.account_event(change, account_id), source_at)

    async def _hold(self, raw: bytes, source_at: int) -> None:
        change = ACCOUNT_HOLD_CHANGED.decode_record(raw)
        await self.emit(core.hold_event(change), source_at)
        await self._alert(alerts.account_hold(change), source_at)

    async def _low_balance(self, raw: bytes, source_at: int) -> None:
        alert = LOW_BALANCE_ALERTED.decode_record(raw)
        currency = await self._store.currency(alert.account_id) or "USD"
        await self.emit(core.low_balance_event(alert, currency), source_at)
        await self._alert(alerts.low_balance(alert, currency), source_at)

    async def _topped_up(self, raw: bytes, source_at: int) -> None:
        await self.emit(core.topped_up_event(BALANCE_TOPPED_UP.decode_record(raw)), source_at)

    # --- Meta's payloads for `meta` endpoints ------------------------------------------

    async def _webhook(self, raw: bytes, source_at: int) -> None:
        received = WEBHOOK_RECEIVED.decode_record(raw)
        by_account: dict[str, list[meta_format.Piece]] = {}
        for piece in meta_format.split(bytes(received.payload)):
            account_id = await self._account_of_waba(piece.waba_id)
            if account_id is None and piece.phone_number_id:
                account_id = await self._account_of_number(piece.phone_number_id)
            if account_id is not None:
                by_account.setdefault(account_id, []).append(piece)
        for account_id, pieces in by_account.items():
            endpoints = await self._directory.for_account(account_id)
            if not any(e.format == core.META for e in endpoints):
                metrics.EVENTS.labels("meta", "no_endpoint").inc(len(pieces))
                continue
            lookups = await self._lookups(account_id, pieces)
            for piece in pieces:
                envelope = meta_format.rewrite(piece, lookups)
                await self.emit(
                    meta_format.to_event(piece, envelope, account_id, received.received_at),
                    source_at,
                )

    async def _lookups(
        self, account_id: str, pieces: list[meta_format.Piece]
    ) -> meta_format.Lookups:
        """The account's messages the pieces name: by our id (statuses' callback data) and by
        wamid (statuses without it, replies' contexts). Another account's are never used."""
        ours = sorted({m for p in pieces if (m := meta_format.our_message_id(p))})
        wamids = sorted({w for p in pieces for w in p.wamids})
        lookups = meta_format.Lookups()
        deadline = time.monotonic() + self._details_wait
        while True:
            docs = await self._store.messages_by_ids(ours)
            missing = [m for m in ours if m not in docs]
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)  # status stores a message from its request first
        index = {
            w: d
            for w, d in (await self._store.wamid_messages(wamids)).items()
            if d.get("account_id") == account_id and d.get("message_id")
        }
        extra = sorted({d["message_id"] for d in index.values()} - set(docs))
        docs.update(await self._store.messages_by_ids(extra))
        for message_id, doc in docs.items():
            if doc.get("account_id") == account_id:
                lookups.by_id[message_id] = meta_format.KnownMessage(
                    message_id, doc.get("callback_data")
                )
        for wamid, entry in index.items():
            lookups.by_wamid[wamid] = lookups.by_id.get(
                entry["message_id"], meta_format.KnownMessage(entry["message_id"])
            )
        return lookups

    # --- client requests: test events and replays ---------------------------------------

    async def _request(self, raw: bytes, source_at: int) -> None:
        request = NOTIFY_REQUESTED.decode_record(raw)
        self._directory.forget(request.account_id)
        endpoint = await self._directory.get(request.endpoint_id, fresh=True)
        if endpoint is None or endpoint.deleted or endpoint.account_id != request.account_id:
            metrics.REQUESTS.labels(request.kind, "unknown_endpoint").inc()
            log.warning(
                "notify_request_refused",
                outcome="unknown_endpoint",
                kind=request.kind,
                endpoint_id=request.endpoint_id,
            )
            return
        if request.kind == "test":
            await self._test(request, endpoint, source_at)
        elif request.replay_event_id is not None:
            await self._replay_one(request, endpoint, source_at)
        else:
            await self._replay_range(request, endpoint, source_at)

    async def _test(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int
    ) -> None:
        event = core.endpoint_test_event(request, endpoint.format)
        now = self._clock.now_ms()
        await self._store.insert_event(event.document(source_at, now))
        await self._deliver(
            [
                core.delivery_doc(
                    endpoint, event.id, event.type, "test", source_at, now, self._grace_ms
                )
            ],
            event.body,
        )
        metrics.REQUESTS.labels("test", "done").inc()

    async def _replay_one(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int
    ) -> None:
        assert request.replay_event_id is not None
        doc = await self._store.event(request.replay_event_id)
        if (
            doc is None
            or doc.get("account_id") != endpoint.account_id
            or doc.get("format") != endpoint.format
        ):
            metrics.REQUESTS.labels("replay", "unknown_event").inc()
            log.warning(
                "notify_request_refused",
                outcome="unknown_event",
                kind="replay",
                endpoint_id=endpoint.id,
            )
            return
        now = self._clock.now_ms()
        await self._deliver(
            [
                core.delivery_doc(
                    endpoint,
                    doc["_id"],
                    doc["type"],
                    "replay",
                    source_at,
                    now,
                    self._grace_ms,
                    request_id=request.event_id,
                )
            ],
            str(doc["payload"]).encode(),
        )
        metrics.REQUESTS.labels("replay", "done").inc()

    async def _replay_range(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int
    ) -> None:
        since = request.since or 0
        until = request.until if request.until is not None else self._clock.now_ms()
        found = await self._store.events_in_range(
            endpoint.account_id, since, until, self._max_replay
        )
        chosen = [
            d
            for d in found
            if core.replay_selects(endpoint, str(d.get("type")), str(d.get("format")))
        ]
        now = self._clock.now_ms()
        docs = [
            core.delivery_doc(
                endpoint,
                d["_id"],
                d["type"],
                "replay",
                source_at,
                now,
                self._grace_ms,
                request_id=request.event_id,
            )
            for d in chosen
        ]
        replayed = 0
        for start in range(0, len(docs), 500):
            replayed += await self._deliver(docs[start : start + 500], None)
        metrics.REQUESTS.labels("replay", "done").inc()
        log.info(
            "replay_requested",
            outcome="queued",
            endpoint_id=endpoint.id,
            events=len(chosen),
            deliveries=replayed,
        )


# --- the consumer -------------------------------------------------------------------------------


def record_key(record: Record) -> object:
    """Every record on its own: none depends on another's effect, so a batch's records are
    handled concurrently and their writes grouped."""
    return (record.topic, record.partition, record.offset)


async def run_consumer(
    kafka: KafkaConfig,
    prefix: str,
    handle: Callable[[Record], Awaitable[None]],
    producer: AIOKafkaProducer,
) -> None:
    consumer = make_consumer(
        kafka, group(prefix), *[topic_name(t, prefix) for t in topics_read_by(SERVICE)]
    )
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group(prefix)))
    try:
        await consume_concurrently(consumer, producer, handle, service=SERVICE, key_of=record_key)
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()
