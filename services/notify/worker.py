"""The Kafka side of notify, on the shared pipeline (shared/pipeline.py): every platform event
a client may hear of becomes a stored client event and one pending delivery per endpoint that
wants it (the outbox), then the batch is committed and the dispatcher delivers. Alerts become
`email_alerts` documents for the mailer.

A batch is handled in two steps:
- plan: each record becomes the events and deliveries it implies, concurrently (none depends
  on another's effect; the reads they need, endpoints and owners, go through caches that load
  each key once however many records ask). The requests' details that later statuses repeat are
  learnt from the batch first, and the stored ones of the batch's statuses read in one query,
  so a status in the same batch as its request reads nothing;
- write: one insert_many of the batch's events, then one of its deliveries (an event is stored
  before any delivery names it); only deliveries that were new are handed to the dispatcher.

A record that can never be handled goes to the dead-letter topic (the pipeline's rule); a
request naming an unknown endpoint is logged and counted, not dead-lettered (it is the
client's, not a bug).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
from shared.kafka import KafkaConfig, make_consumer, report_lag_forever, topic_name
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
    AccountHoldChanged,
    BalanceToppedUp,
    InboundReceived,
    LowBalanceAlerted,
    NotifyRequested,
    NumberQualityChanged,
    SendRequested,
    StatusChanged,
    TemplateStatusChanged,
    Topic,
    WabaStatusChanged,
    WebhookReceived,
    topics_read_by,
)
from shared.pipeline import BatchPolicy, Item, Pipeline

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
    """A small cache of look-ups that rarely change (which account owns a WABA or number). A
    key being loaded is loaded once: the batch's other records wait for that load."""

    def __init__(self, clock: Clock, seconds: float, capacity: int = 10_000) -> None:
        self._clock = clock
        self._seconds = seconds
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Any]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        now = self._clock.monotonic()
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters (if any) get it too
            raise
        finally:
            del self._loading[key]
        future.set_result(value)
        # an unknown owner is asked again sooner: it may be registered any moment
        self._items[key] = (now + (self._seconds if value is not None else 5.0), value)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value


@dataclass(frozen=True)
class Incoming:
    """A decoded record: what it is (its topic's handler) and its value."""

    topic: str
    value: Any
    timestamp: int  # the record's (ms; <= 0: none)


@dataclass
class _Emission:
    """What one handler wants written: an event (None: deliveries of a stored event, a
    replay) and its deliveries."""

    event_doc: dict[str, Any] | None
    deliveries: list[dict[str, Any]]
    body: bytes | None
    label: str | None = None  # hala_notify_events_total's type label (None: not counted)
    done: Callable[[int], None] | None = None  # told how many deliveries were new


@dataclass
class _Outbox:
    emissions: list[_Emission] = field(default_factory=list)

    def add(self, emission: _Emission) -> None:
        self.emissions.append(emission)


Handler = Callable[[Any, int, _Outbox], Awaitable[None]]


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
        handlers: list[tuple[Topic[Any], Handler]] = [
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
        self._topics: dict[str, tuple[Topic[Any], Handler]] = {
            topic_name(t, prefix): (t, h) for t, h in handlers
        }

    # --- the pipeline's steps ------------------------------------------------------------

    def decode(self, record: Record) -> Incoming:
        """The pipeline's decode step (pure): a record of another topic or shape raises
        PermanentError, and goes to the dead-letter topic."""
        known = self._topics.get(record.topic)
        if known is None:
            raise PermanentError(f"notify does not read {record.topic}", code="unknown_topic")
        return Incoming(
            record.topic, known[0].decode_record(record.value or b""), int(record.timestamp or 0)
        )

    async def handle_batch(self, items: Sequence[Item[Incoming]]) -> None:
        """The pipeline's effect: plan every record, then write the batch's events and its
        deliveries, one insert_many each."""
        await self._learn_details([item.value.value for item in items])
        out = _Outbox()
        await _all(self._plan(item.value, out) for item in items)
        await self._write(out)

    async def handle_record(self, record: Record) -> None:
        """One record alone (tests, tools): decode, then a batch of one."""
        await self.handle_batch([Item(record, self.decode(record))])

    async def _plan(self, incoming: Incoming, out: _Outbox) -> None:
        source_at = incoming.timestamp if incoming.timestamp > 0 else self._clock.now_ms()
        await self._topics[incoming.topic][1](incoming.value, source_at, out)

    async def _learn_details(self, values: Sequence[Any]) -> None:
        """What the batch's statuses will repeat from their requests: the batch's own requests
        (no read), then the stored accepted events of the others (one read for the batch)."""
        for value in values:
            if isinstance(value, SendRequested):
                details = core.accepted_event(value).details
                if details is not None:
                    self._remember_details(value.message_id, core.MessageDetails.from_dict(details))
        missing = sorted(
            {
                v.message_id
                for v in values
                if isinstance(v, StatusChanged)
                and v.status in core.CLIENT_STATUSES
                and v.message_id not in self._details
            }
        )
        if not missing:
            return
        stored = await self._store.events_by_ids([core.accepted_event_id(m) for m in missing])
        for message_id in missing:
            doc = stored.get(core.accepted_event_id(message_id))
            if doc is not None and doc.get("details"):
                self._remember_details(message_id, core.MessageDetails.from_dict(doc["details"]))

    async def _write(self, out: _Outbox) -> None:
        emissions = out.emissions
        with_event = [e for e in emissions if e.event_doc is not None]
        stored = await self._store.insert_events([e.event_doc for e in with_event])  # type: ignore[misc]
        for emission, ok in zip(with_event, stored, strict=True):
            if emission.label is not None:
                metrics.EVENTS.labels(emission.label, "stored" if ok else "duplicate").inc()
        docs = [(e, d) for e in emissions for d in e.deliveries]
        inserted = await self._store.insert_deliveries([d for _, d in docs])
        new: list[Pending] = []
        counts: dict[int, int] = {}
        for (emission, doc), ok in zip(docs, inserted, strict=True):
            if ok:
                new.append(Pending(doc, emission.body))
                counts[id(emission)] = counts.get(id(emission), 0) + 1
        self._dispatcher.submit(new)
        for emission in emissions:
            if emission.done is not None:
                emission.done(counts.get(id(emission), 0))

    # --- events and deliveries ------------------------------------------------------------

    async def emit(self, event: core.OutEvent, source_at: int, out: _Outbox) -> None:
        """The event and a delivery per endpoint that wants it, for the batch's writes."""
        endpoints = [
            e
            for e in await self._directory.for_account(event.account_id)
            if e.format == event.format
        ]
        label = type_label(event.type)
        if not endpoints:
            metrics.EVENTS.labels(label, "no_endpoint").inc()
            return
        now = self._clock.now_ms()
        targets = [
            e for e in endpoints if core.wants(e, self._directory.health_of(e.id), event, source_at)
        ]
        out.add(
            _Emission(
                event.document(source_at, now),
                [
                    core.delivery_doc(
                        e, event.id, event.type, "live", source_at, now, self._grace_ms
                    )
                    for e in targets
                ],
                event.body,
                label,
            )
        )

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

    async def _send_requested(self, request: SendRequested, source_at: int, out: _Outbox) -> None:
        await self.emit(core.accepted_event(request), source_at, out)

    def _remember_details(self, message_id: str, details: core.MessageDetails) -> None:
        self._details[message_id] = details
        self._details.move_to_end(message_id)
        while len(self._details) > 50_000:
            self._details.popitem(last=False)

    async def _status_changed(self, change: StatusChanged, source_at: int, out: _Outbox) -> None:
        if change.status not in core.CLIENT_STATUSES:
            return
        endpoints = await self._directory.for_account(change.account_id)
        if not any(e.format == core.STANDARD for e in endpoints):
            metrics.EVENTS.labels(f"message.{change.status}", "no_endpoint").inc()
            return
        details = await self._message_details(change.message_id)
        event = core.status_event(change, details)
        if event is not None:
            await self.emit(event, source_at, out)

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

    async def _inbound(self, received: InboundReceived, source_at: int, out: _Outbox) -> None:
        event = core.received_event(received)
        if event is not None:
            await self.emit(event, source_at, out)

    # --- templates, numbers, WABAs, money ---------------------------------------------

    async def _template(self, change: TemplateStatusChanged, source_at: int, out: _Outbox) -> None:
        account_id = await self._account_of_waba(change.waba_id)
        if account_id is None:
            return
        await self.emit(core.template_event(change, account_id), source_at, out)
        await self._alert(alerts.template_status(change, account_id), source_at)

    async def _quality(self, change: NumberQualityChanged, source_at: int, out: _Outbox) -> None:
        account_id = change.account_id or await self._account_of_number(change.phone_number_id)
        if account_id is None:
            return
        await self.emit(core.quality_event(change, account_id), source_at, out)
        await self._alert(alerts.number_quality(change, account_id), source_at)

    async def _waba(self, change: WabaStatusChanged, source_at: int, out: _Outbox) -> None:
        account_id = await self._account_of_waba(change.waba_id)
        if account_id is not None:
            await self.emit(core.account_event(change, account_id), source_at, out)

    async def _hold(self, change: AccountHoldChanged, source_at: int, out: _Outbox) -> None:
        await self.emit(core.hold_event(change), source_at, out)
        await self._alert(alerts.account_hold(change), source_at)

    async def _low_balance(self, alert: LowBalanceAlerted, source_at: int, out: _Outbox) -> None:
        currency = await self._store.currency(alert.account_id) or "USD"
        await self.emit(core.low_balance_event(alert, currency), source_at, out)
        await self._alert(alerts.low_balance(alert, currency), source_at)

    async def _topped_up(self, topped: BalanceToppedUp, source_at: int, out: _Outbox) -> None:
        await self.emit(core.topped_up_event(topped), source_at, out)

    # --- Meta's payloads for `meta` endpoints ------------------------------------------

    async def _webhook(self, received: WebhookReceived, source_at: int, out: _Outbox) -> None:
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
                    out,
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

    async def _request(self, request: NotifyRequested, source_at: int, out: _Outbox) -> None:
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
            self._test(request, endpoint, source_at, out)
        elif request.replay_event_id is not None:
            await self._replay_one(request, endpoint, source_at, out)
        else:
            await self._replay_range(request, endpoint, source_at, out)

    def _test(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int, out: _Outbox
    ) -> None:
        event = core.endpoint_test_event(request, endpoint.format)
        now = self._clock.now_ms()
        out.add(
            _Emission(
                event.document(source_at, now),
                [
                    core.delivery_doc(
                        endpoint, event.id, event.type, "test", source_at, now, self._grace_ms
                    )
                ],
                event.body,
                done=lambda _: metrics.REQUESTS.labels("test", "done").inc(),
            )
        )

    async def _replay_one(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int, out: _Outbox
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
        out.add(
            _Emission(
                None,
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
                done=lambda _: metrics.REQUESTS.labels("replay", "done").inc(),
            )
        )

    async def _replay_range(
        self, request: NotifyRequested, endpoint: core.Endpoint, source_at: int, out: _Outbox
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

        def done(replayed: int) -> None:
            metrics.REQUESTS.labels("replay", "done").inc()
            log.info(
                "replay_requested",
                outcome="queued",
                endpoint_id=endpoint.id,
                events=len(chosen),
                deliveries=replayed,
            )

        out.add(_Emission(None, docs, None, done=done))


# --- the consumer -------------------------------------------------------------------------------


async def _all(plans: Iterable[Awaitable[None]]) -> None:
    """Run the batch's plans together; the first failure cancels the others and is raised
    (the pipeline then retries the batch, or each record alone)."""
    tasks = [asyncio.ensure_future(p) for p in plans]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# A batch: up to 500 records, the first waiting at most 5 ms for others (one write per
# collection per batch instead of per record; notify's events are not on the send path).
BATCH_POLICY = BatchPolicy(max_records=500, max_wait_s=0.005)


async def run_consumer(
    kafka: KafkaConfig,
    prefix: str,
    worker: NotifyWorker,
    producer: AIOKafkaProducer,
    policy: BatchPolicy = BATCH_POLICY,
    consumer_options: Mapping[str, int] | None = None,
) -> None:
    """notify's consumer pipeline; `consumer_options`: its fetch settings
    (NotifySettings.consumer_options)."""
    consumer = make_consumer(kafka, group(prefix), **(consumer_options or {}))
    pipeline: Pipeline[Incoming] = Pipeline(
        consumer,
        producer,
        decode=worker.decode,
        effect=worker.handle_batch,
        service=SERVICE,
        policy=policy,
    )
    consumer.subscribe(
        [topic_name(t, prefix) for t in topics_read_by(SERVICE)], listener=pipeline.listener
    )
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group(prefix)))
    try:
        await pipeline.run()
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()
