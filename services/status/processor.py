"""The webhook processor: one record of webhooks.received.v1 -> the events and documents its
changes call for. Every effect is idempotent (event ids derive from Meta's ids, writes are
upserts), so a redelivered record or a replayed batch changes nothing twice."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from services.status import core
from services.status.metrics import (
    CHANGES_IGNORED,
    INBOUND_MESSAGES,
    ITEMS_MALFORMED,
    PROCESSING_LAG,
    STATUSES,
    STATUSES_PARKED,
    TEMPLATE_UPDATES,
)
from services.status.publisher import Outgoing, Publisher
from services.status.repository import ProcessorStore
from shared.clock import Clock
from shared.logging import get_logger
from shared.messages import (
    INBOUND_RECEIVED,
    STATUS_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    WEBHOOK_RECEIVED,
    WebhookReceived,
)

log = get_logger(__name__)


@dataclass
class _Batch:
    """What one webhook produces, published together once the database work is done."""

    outgoing: list[Outgoing] = field(default_factory=list)
    unparked: list[str] = field(default_factory=list)  # parked, then found: delete once published
    parked: int = 0


class WebhookProcessor:
    def __init__(self, store: ProcessorStore, publisher: Publisher, clock: Clock,
                 remembered_wamids: int = 20_000) -> None:
        self._wamids: OrderedDict[str, core.MessageRef] = OrderedDict()
        self._wamid_capacity = remembered_wamids
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        await self.handle(WEBHOOK_RECEIVED.decode_record(record.value))

    async def handle(self, event: WebhookReceived) -> None:
        started = time.perf_counter()
        now = self._clock.now_ms()
        PROCESSING_LAG.observe(max(0, now - event.received_at) / 1000)
        plan = core.plan_webhook(bytes(event.payload), event.received_at)
        batch = _Batch()
        for status in plan.statuses:
            await self._status(status, now, batch)
        for message in plan.inbound:
            INBOUND_MESSAGES.inc()
            await self._store.record_inbound(
                core.conversation_id(message.phone_number_id, message.sender),
                message.phone_number_id, message.sender, message.sent_at, now)
            batch.outgoing.append((INBOUND_RECEIVED, core.inbound_received(message)))
        for update in plan.template_updates:
            await self._template(update, batch)
        for upgrade in plan.throughput_upgrades:
            await self._throughput(upgrade, batch)
        # Everything is acknowledged before the record is committed (the caller commits).
        await self._publisher.publish_all(batch.outgoing)
        for parked_id in batch.unparked:
            await self._store.delete_parked(parked_id)
        for field_name in plan.ignored_fields:
            CHANGES_IGNORED.labels(core.field_metric_label(field_name)).inc()
        if plan.malformed_items:
            ITEMS_MALFORMED.inc(plan.malformed_items)
        log.info("webhook_processed", outcome="processed", event_id=event.event_id,
                 lag_ms=max(0, now - event.received_at), statuses=len(plan.statuses),
                 parked=batch.parked, published=len(batch.outgoing), inbound=len(plan.inbound),
                 template_updates=len(plan.template_updates),
                 throughput_upgrades=len(plan.throughput_upgrades),
                 ignored=len(plan.ignored_fields), malformed=plan.malformed_items,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _status(self, status: core.WebhookStatus, now: int, batch: _Batch) -> None:
        """Queue the status's event for its message, or park it."""
        STATUSES.labels(core.status_metric_label(status.meta_status)).inc()
        if core.message_status_of(status.meta_status) is None:
            return
        ref = await self._resolve(status)
        if ref is None:
            # Park first, then look again: the state writer indexes the wamid first and then
            # looks for parked statuses, so one of the two always sees the other's write.
            await self._store.park_status(core.parked_status_doc(status, now))
            ref = await self._find_by_wamid(status.wamid)
            if ref is None:
                STATUSES_PARKED.inc()
                batch.parked += 1
                return
            batch.unparked.append(core.parked_status_id(status))
        event = core.status_changed_from_webhook(status, ref)
        if event is not None:
            batch.outgoing.append((STATUS_CHANGED, event))

    async def _resolve(self, status: core.WebhookStatus) -> core.MessageRef | None:
        by_wamid = await self._find_by_wamid(status.wamid)
        by_callback = None
        message_id = core.callback_message_id(status)
        if by_wamid is None and message_id is not None:
            by_callback = await self._store.find_message(message_id)
        return core.resolve_status(by_wamid, by_callback)

    async def _find_by_wamid(self, wamid: str) -> core.MessageRef | None:
        """wamid_index entries never change once written (the first writer wins), so a found
        one is remembered: a message's later statuses need no lookup."""
        ref = self._wamids.get(wamid)
        if ref is None:
            ref = await self._store.find_by_wamid(wamid)
            if ref is not None:
                self._wamids[wamid] = ref
                while len(self._wamids) > self._wamid_capacity:
                    self._wamids.popitem(last=False)
        return ref

    async def _template(self, update: core.TemplateUpdate, batch: _Batch) -> None:
        TEMPLATE_UPDATES.labels(core.template_event_label(update.event)).inc()
        applied = await self._store.apply_template_status(
            update.waba_id, update.name, update.language, update.event, update.reason,
            update.occurred_at)
        if not applied:
            log.info("template_status_not_applied", outcome="unknown_or_stale",
                     template_id=update.template_id, template_event=update.event)
        batch.outgoing.append((TEMPLATE_STATUS_CHANGED, core.template_status_changed(update)))

    async def _throughput(self, upgrade: core.ThroughputUpgrade, batch: _Batch) -> None:
        number = await self._store.find_phone_number(
            core.display_number_variants(upgrade.display_phone_number))
        if number is None:
            log.warning("throughput_upgrade_for_unknown_number", outcome="ignored",
                        waba_id=upgrade.waba_id)
            return
        phone_number_id, waba_id = number
        batch.outgoing.append((THROUGHPUT_CHANGED,
                               core.throughput_changed(upgrade, phone_number_id, waba_id)))
