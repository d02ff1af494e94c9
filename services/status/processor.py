"""The webhook processor: one record of webhooks.received.v1 -> the events and documents its
changes call for. Every effect is idempotent (event ids derive from Meta's ids, inserts are
keyed by Meta's ids, updates only move forward in Meta's time), so a redelivered record or a
replayed batch changes nothing twice.

What a record cannot do is stop the processor: `core.plan_webhook` reads each change and item
on its own and bounds every value that reaches a write, so a shape nobody foresaw costs that
item (counted as malformed), never its siblings. A failure here that is not a dependency being
unavailable is a bug, and the consumer loop deals with it (retries, then the dead-letter
topic).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from services.status import batch_plan, core
from services.status.metrics import (
    ACCOUNT_UPDATES,
    CHANGES_IGNORED,
    INBOUND_MESSAGES,
    ITEMS_MALFORMED,
    NUMBER_UPDATES,
    PROCESSING_LAG,
    STATUSES,
    STATUSES_PARKED,
    SUPPRESSIONS,
    TEMPLATE_UPDATES,
    USER_PREFERENCES,
    WABA_FACTS,
    WABAS_HELD,
    WEBHOOK_ERRORS,
)
from services.status.publisher import Outgoing, Publisher
from services.status.repository import ProcessorStore
from shared import contact_lists, opt_out
from shared.clock import Clock
from shared.logging import get_logger
from shared.messages import (
    INBOUND_RECEIVED,
    NUMBER_QUALITY_CHANGED,
    STATUS_CHANGED,
    SUPPRESSION_CHANGE_REQUESTED,
    TEMPLATE_STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    WABA_STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    SuppressionChangeRequested,
    WebhookReceived,
)
from shared.pipeline import Item

log = get_logger(__name__)

ProcessorEvent = WebhookReceived | SuppressionChangeRequested


def decode(record: ConsumerRecord[bytes, bytes]) -> ProcessorEvent:
    """The pipeline's decode step (a record that can never decode is a PermanentError)."""
    if record.topic.endswith(SUPPRESSION_CHANGE_REQUESTED.name):
        return SUPPRESSION_CHANGE_REQUESTED.decode_record(record.value)
    return WEBHOOK_RECEIVED.decode_record(record.value)


# How long a phone number's registration is trusted before it is read again (an operator may
# register a number after its first inbound message).
NUMBER_CACHE_SECONDS = 60.0
UNKNOWN_NUMBER_CACHE_SECONDS = 5.0
# An account's opt-out keywords are read again after this (a change applies within it).
KEYWORDS_CACHE_SECONDS = 10.0


@dataclass
class _Batch:
    """What a batch's records produce: the writes, made together (one command per collection)
    once every record is handled, then the events, published together."""

    outgoing: list[Outgoing] = field(default_factory=list)
    unparked: list[str] = field(default_factory=list)  # parked, then found: delete once published
    not_indexed: set[str] = field(default_factory=set)  # wamids the batch's read did not find
    # the batch's one read by callback data: the ids asked, and the messages found among them
    callback_ids: set[str] = field(default_factory=set)
    by_callback: dict[str, core.CallbackMessage] = field(default_factory=dict)
    to_park: list[core.WebhookStatus] = field(default_factory=list)  # no message found (yet)
    inbound: list[dict[str, object]] = field(default_factory=list)
    conversations: dict[str, dict[str, object]] = field(default_factory=dict)  # merged upserts
    templates: list[batch_plan.TemplateWrite] = field(default_factory=list)
    number_states: dict[str, dict[str, object]] = field(default_factory=dict)  # merged $set
    preferences: list[dict[str, object]] = field(default_factory=list)
    suppressions: list[dict[str, object]] = field(default_factory=list)
    parked: int = 0


class WebhookProcessor:
    def __init__(
        self,
        store: ProcessorStore,
        publisher: Publisher,
        clock: Clock,
        remembered_wamids: int = 20_000,
        remembered_numbers: int = 10_000,
        keywords_cache_seconds: float = KEYWORDS_CACHE_SECONDS,
    ) -> None:
        self._wamids: OrderedDict[str, core.MessageRef] = OrderedDict()
        self._keywords: OrderedDict[str, tuple[float, opt_out.Keywords]] = OrderedDict()
        self._keywords_seconds = keywords_cache_seconds
        self._wamid_capacity = remembered_wamids
        self._numbers: OrderedDict[str, tuple[float, core.NumberRef | None]] = OrderedDict()
        self._number_capacity = remembered_numbers
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        await self.handle_events([decode(record)])

    async def handle(self, event: WebhookReceived) -> None:
        await self.handle_events([event])

    async def handle_batch(self, items: Sequence[Item[ProcessorEvent]]) -> None:
        """The pipeline's effect: the batch's records in order (one WABA's in offset order)."""
        await self.handle_events([item.value for item in items])

    async def handle_events(self, events: Sequence[ProcessorEvent]) -> None:
        """Apply each record in order; publish what they all produce together and return once
        the broker acknowledged it (the caller commits after)."""
        batch = _Batch()
        now = self._clock.now_ms()
        plans = [
            core.plan_webhook(bytes(e.payload), e.received_at)
            if isinstance(e, WebhookReceived)
            else None
            for e in events
        ]
        # The wamids of the batch's statuses that are not remembered: one read for them all;
        # then the messages of those not indexed (yet) by their callback data: one more.
        statuses = [s for plan in plans if plan is not None for s in plan.statuses]
        batch.not_indexed = await self._prefetch_wamids([s.wamid for s in statuses])
        if batch.not_indexed:
            await self._prefetch_callbacks(statuses, batch)
        for event, plan in zip(events, plans, strict=True):
            if plan is None:
                assert isinstance(event, SuppressionChangeRequested)
                await self._suppression_request(event, batch)
            else:
                assert isinstance(event, WebhookReceived)
                await self._webhook(event, plan, now, batch)
        await self._park(batch, now)
        await self._write(batch, now)
        # Everything is acknowledged before the records are committed (the caller commits).
        await self._publisher.publish_all(batch.outgoing)
        if batch.unparked:
            await self._store.delete_parked_many(batch.unparked)

    async def _park(self, batch: _Batch, now: int) -> None:
        """Park the statuses of unknown messages (one insert), then look again (one read): the
        state writer indexes a wamid first and then looks for parked statuses, so one of the
        two always sees the other's write."""
        if not batch.to_park:
            return
        await self._store.park_statuses([core.parked_status_doc(s, now) for s in batch.to_park])
        found = await self._store.find_by_wamids(
            list(dict.fromkeys(s.wamid for s in batch.to_park))
        )
        for wamid, ref in found.items():
            self._remember_wamid(wamid, ref)
        for status in batch.to_park:
            ref = found.get(status.wamid)
            if ref is None:
                STATUSES_PARKED.inc()
                batch.parked += 1
            else:
                batch.unparked.append(core.parked_status_id(status))
                self._status_event(status, ref, now, batch)

    async def _write(self, batch: _Batch, now: int) -> None:
        """The batch's writes, one command per collection (updates in chunks of
        repository.UPDATES_PER_COMMAND), before any of its events is published."""
        if batch.inbound:
            taken = await self._store.store_inbound_many(batch.inbound)
            if taken:
                log.info("inbound_already_stored", outcome="duplicate", count=len(taken))
        if batch.conversations:
            await self._store.update_conversations(batch.conversations)
        if batch.templates:
            outcomes = await self._store.apply_templates(batch.templates)
            if outcomes.not_applied:
                log.info(
                    "template_updates_not_applied",
                    outcome="stale_or_unknown",
                    count=outcomes.not_applied,
                    created=outcomes.created,
                    applied=outcomes.applied,
                )
        await self._flush_number_states(batch, now)
        if batch.preferences:
            await self._store.save_user_preferences(batch.preferences)
        if batch.suppressions:
            saved = await self._store.save_suppressions(batch.suppressions)
            for doc, ok in zip(batch.suppressions, saved, strict=True):
                self._suppressed(doc, ok)

    async def _flush_number_states(self, batch: _Batch, now: int) -> None:
        if batch.number_states:
            await self._store.update_number_states(batch.number_states, now)
            batch.number_states = {}

    def _set_number_state(self, batch: _Batch, state_id: str, fields: dict[str, object]) -> None:
        if fields:
            batch.number_states[state_id] = {**batch.number_states.get(state_id, {}), **fields}

    async def _number_state(
        self, batch: _Batch, state_id: str, now: int
    ) -> dict[str, object] | None:
        """A state as the batch left it so far (its pending writes go first)."""
        if state_id in batch.number_states:
            await self._flush_number_states(batch, now)
        return await self._store.number_state(state_id)

    async def _webhook(
        self, event: WebhookReceived, plan: core.WebhookPlan, now: int, batch: _Batch
    ) -> None:
        started = time.perf_counter()
        PROCESSING_LAG.observe(max(0, now - event.received_at) / 1000)
        published = len(batch.outgoing)
        for status in plan.statuses:
            await self._status(status, now, batch)
        for message in plan.inbound:
            await self._inbound(message, event.received_at, now, batch)
        for update in plan.template_updates:
            await self._template(update, batch)
        for number_update in plan.number_updates:
            await self._number_update(number_update, now, batch)
        for account_update in plan.account_updates:
            await self._account_update(account_update, now, batch)
        for fact in plan.waba_facts:
            await self._waba_fact(fact, now, batch)
        for preference in plan.user_preferences:
            await self._user_preference(preference, now, batch)
        for error in plan.value_errors:
            WEBHOOK_ERRORS.inc()
            log.warning(
                "webhook_error_reported",
                outcome="logged",
                code=error.code,
                title=error.title[:200],
                phone_number_id=error.phone_number_id,
            )
        for field_name in plan.ignored_fields:
            CHANGES_IGNORED.labels(core.field_metric_label(field_name)).inc()
        if plan.malformed_items:
            ITEMS_MALFORMED.inc(plan.malformed_items)
        log.info(
            "webhook_processed",
            outcome="processed",
            event_id=event.event_id,
            lag_ms=max(0, now - event.received_at),
            published=len(batch.outgoing) - published,
            **plan.counts(),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def _prefetch_wamids(self, wamids: list[str]) -> set[str]:
        """Read the wamids not remembered, in one command; those not indexed (yet)."""
        wanted = list(dict.fromkeys(w for w in wamids if w and w not in self._wamids))
        if not wanted:
            return set()
        found = await self._store.find_by_wamids(wanted)
        for wamid, ref in found.items():
            self._remember_wamid(wamid, ref)
        return set(wanted) - set(found)

    async def _prefetch_callbacks(
        self, statuses: Sequence[core.WebhookStatus], batch: _Batch
    ) -> None:
        """Read, in one command, the messages named by the callback data of the statuses whose
        wamid is neither remembered nor indexed (while the state writer is behind, a whole
        campaign's). Without it each such status cost a read of its own, one after another."""
        wanted = core.callback_ids_to_read(statuses, self._wamids)
        if wanted:
            batch.by_callback = await self._store.find_messages(wanted)
            batch.callback_ids = set(wanted)

    def _remember_wamid(self, wamid: str, ref: core.MessageRef) -> None:
        self._wamids[wamid] = ref
        while len(self._wamids) > self._wamid_capacity:
            self._wamids.popitem(last=False)

    # --- statuses ------------------------------------------------------------------------------

    async def _status(self, status: core.WebhookStatus, now: int, batch: _Batch) -> None:
        """Queue the status's event for its message, or park it (at the end of the batch)."""
        STATUSES.labels(core.status_metric_label(status.meta_status)).inc()
        if core.message_status_of(status.meta_status) is None:
            return
        ref = await self._resolve(status, batch)
        if ref is None:
            batch.to_park.append(status)
            return
        self._status_event(status, ref, now, batch)

    def _status_event(
        self, status: core.WebhookStatus, ref: core.MessageRef, now: int, batch: _Batch
    ) -> None:
        event = core.status_changed_from_webhook(status, ref)
        if event is not None:
            batch.outgoing.append((STATUS_CHANGED, event))
        if core.stopped_marketing(status):
            batch.suppressions.append(
                contact_lists.suppression_doc(
                    account_id=ref.account_id,
                    phone_number_id=status.phone_number_id,
                    wa_id=status.recipient_id,
                    suppressed=True,
                    source="meta",
                    at=status.occurred_at,
                    now_ms=now,
                    detail="Meta refused a marketing template with 131050: the user "
                    "stopped marketing messages",
                )
            )

    async def _resolve(self, status: core.WebhookStatus, batch: _Batch) -> core.MessageRef | None:
        if status.wamid in batch.not_indexed:  # the batch's read just found it missing
            by_wamid = self._wamids.get(status.wamid)
        else:
            by_wamid = await self._find_by_wamid(status.wamid)
        by_callback = None
        message_id = core.callback_message_id(status)
        if by_wamid is None and message_id is not None:
            found = await self._find_by_callback(message_id, batch)
            if found is not None:
                by_callback = found.ref
                if core.wamid_confirmed(status, found):
                    self._remember_wamid(status.wamid, found.ref)
        return core.resolve_status(by_wamid, by_callback)

    async def _find_by_callback(
        self, message_id: str, batch: _Batch
    ) -> core.CallbackMessage | None:
        """From the batch's read; a message it did not ask for (a wamid remembered at the
        start of the batch and forgotten since) is read on its own and kept for the batch."""
        if message_id not in batch.callback_ids:
            batch.by_callback.update(await self._store.find_messages([message_id]))
            batch.callback_ids.add(message_id)
        return batch.by_callback.get(message_id)

    async def _find_by_wamid(self, wamid: str) -> core.MessageRef | None:
        """wamid_index entries never change once written (the first writer wins), so a found
        one is remembered: a message's later statuses need no lookup."""
        ref = self._wamids.get(wamid)
        if ref is None:
            ref = await self._store.find_by_wamid(wamid)
            if ref is not None:
                self._remember_wamid(wamid, ref)
        return ref

    # --- inbound messages and echoes -----------------------------------------------------------

    async def _inbound(
        self, message: core.InboundMessage, received_at: int, now: int, batch: _Batch
    ) -> None:
        INBOUND_MESSAGES.labels(
            message.direction, core.inbound_type_label(message.message_type)
        ).inc()
        number = await self._number(message.phone_number_id)
        account_id = number.account_id if number is not None else None
        if number is None:
            log.warning(
                "inbound_for_unknown_number",
                outcome="stored_without_account",
                phone_number_id=message.phone_number_id,
                waba_id=message.waba_id,
            )
        batch.inbound.append(core.inbound_doc(message, account_id, received_at))
        conversation = core.conversation_id(message.phone_number_id, message.wa_id)
        update = core.conversation_update(message, account_id, now)
        known = batch.conversations.get(conversation)
        batch.conversations[conversation] = (
            update if known is None else batch_plan.merge_update(known, update)
        )
        if message.direction == core.INBOUND:  # echoes were sent by the business itself
            batch.outgoing.append(
                (INBOUND_RECEIVED, core.inbound_received(message, account_id, received_at))
            )
        if account_id is not None:
            await self._keyword(message, account_id, now, batch)

    async def _number(self, phone_number_id: str) -> core.NumberRef | None:
        """The registered number, read through a small cache (an inbound burst to one number
        costs one read)."""
        now = self._clock.monotonic()
        cached = self._numbers.get(phone_number_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        number = await self._store.phone_number(phone_number_id) if phone_number_id else None
        ttl = NUMBER_CACHE_SECONDS if number is not None else UNKNOWN_NUMBER_CACHE_SECONDS
        self._numbers[phone_number_id] = (now + ttl, number)
        self._numbers.move_to_end(phone_number_id)
        while len(self._numbers) > self._number_capacity:
            self._numbers.popitem(last=False)
        return number

    # --- templates -----------------------------------------------------------------------------

    async def _template(self, update: core.TemplateUpdate, batch: _Batch) -> None:
        TEMPLATE_UPDATES.labels(
            update.kind,
            core.template_event_label(update.event) if update.kind == "status" else "none",
        ).inc()
        known_name = bool(update.name)
        batch.templates.append(
            batch_plan.TemplateWrite(
                core.template_doc_id(update.waba_id, update.name, update.language),
                update.template_id,
                update.waba_id,
                core.template_fields(update),
                core.TEMPLATE_EVENT_AT[update.kind],
                update.occurred_at,
                core.minimal_template_doc(update) if known_name else None,
            )
        )
        if update.kind == "status":
            batch.outgoing.append((TEMPLATE_STATUS_CHANGED, core.template_status_changed(update)))

    # --- phone numbers -------------------------------------------------------------------------

    async def _number_update(self, update: core.NumberUpdate, now: int, batch: _Batch) -> None:
        NUMBER_UPDATES.labels(update.field).inc()
        number = await self._store.find_phone_number(
            core.display_number_variants(update.display_phone_number)
        )
        if number is None:
            log.warning(
                "number_update_for_unknown_number",
                outcome="ignored",
                field=update.field,
                number_event=update.event[:64],
                waba_id=update.waba_id,
            )
            return
        fields = core.number_update_fields(update)
        if update.field == "phone_number_quality_update":
            batch.outgoing.append(
                (NUMBER_QUALITY_CHANGED, core.number_quality_changed(number, update))
            )
        if update.throughput_upgrade or update.messaging_limit is not None:
            fields.update(
                await self._repace(
                    number,
                    core.UPGRADED_MESSAGES_PER_SECOND if update.throughput_upgrade else None,
                    update.messaging_limit,
                    update.event,
                    update.occurred_at,
                    now,
                    batch,
                )
            )
        self._set_number_state(batch, number.phone_number_id, fields)

    async def _repace(
        self,
        number: core.NumberRef,
        messages_per_second: int | None,
        messaging_limit: str | None,
        event: str,
        at: int,
        now: int,
        batch: _Batch,
    ) -> dict[str, object]:
        """Merge Meta's word into the number's pacing; publish the whole of it when it
        changed. The fields to store (none when nothing changed)."""
        current = core.pacing_of(
            await self._number_state(batch, number.phone_number_id, now), number
        )
        after = core.next_pacing(current, messages_per_second, messaging_limit, at)
        if after is None:
            return {}
        batch.outgoing.append(
            (THROUGHPUT_CHANGED, core.throughput_changed(number, after, event, at))
        )
        return core.pacing_fields(after)

    # --- WABAs ---------------------------------------------------------------------------------

    async def _account_update(self, update: core.AccountUpdate, now: int, batch: _Batch) -> None:
        ACCOUNT_UPDATES.labels(core.account_event_label(update.event)).inc()
        if not update.waba_id:
            return
        state_id = core.waba_state_id(update.waba_id)
        fields = core.account_event_fields(update)
        change = core.hold_change(update)
        if change is not None:
            state = await self._number_state(batch, state_id, now) or {}
            holds_now = state.get("holds")
            holds = core.apply_hold(
                holds_now if isinstance(holds_now, dict) else None, *change, update.occurred_at
            )
            if holds is not None:
                fields["holds"] = holds
                event = core.waba_status_changed(
                    update.waba_id, holds, update.event, update.occurred_at
                )
                fields["held"] = event.held
                batch.outgoing.append((WABA_STATUS_CHANGED, event))
                WABAS_HELD.labels("held" if event.held else "released").inc()
                log.warning(
                    "waba_status_changed",
                    waba_id=update.waba_id,
                    held=event.held,
                    reasons=event.reasons,
                    account_event=update.event,
                )
        self._set_number_state(batch, state_id, fields)

    async def _waba_fact(self, fact: core.WabaFact, now: int, batch: _Batch) -> None:
        WABA_FACTS.labels(fact.field).inc()
        if not fact.waba_id:
            return
        self._set_number_state(batch, core.waba_state_id(fact.waba_id), core.waba_fact_fields(fact))
        if fact.messaging_limit is None:
            return
        # The portfolio's messaging limit: every number of the WABA paces by it.
        for number in await self._store.numbers_of_waba(fact.waba_id):
            fields = await self._repace(
                number, None, fact.messaging_limit, fact.field, fact.occurred_at, now, batch
            )
            self._set_number_state(batch, number.phone_number_id, fields)

    # --- user preferences ----------------------------------------------------------------------

    async def _user_preference(
        self, preference: core.UserPreference, now: int, batch: _Batch
    ) -> None:
        USER_PREFERENCES.labels(
            preference.value if preference.value in ("stop", "resume") else "other"
        ).inc()
        number = await self._number(preference.phone_number_id)
        account_id = number.account_id if number is not None else None
        batch.preferences.append(core.user_preference_doc(preference, account_id))
        suppresses = core.PREFERENCE_SUPPRESSES.get(preference.value)
        if preference.category != core.MARKETING_PREFERENCE or suppresses is None:
            return
        if account_id is None:
            SUPPRESSIONS.labels("user_preferences", "ignored").inc()
            return
        batch.suppressions.append(
            contact_lists.suppression_doc(
                account_id=account_id,
                phone_number_id=preference.phone_number_id,
                wa_id=preference.wa_id,
                suppressed=suppresses,
                source="user_preferences",
                at=preference.at,
                now_ms=now,
                detail=preference.detail,
            )
        )

    # --- the marketing suppression list (this processor is its only writer) ------------------

    async def _keyword(
        self, message: core.InboundMessage, account_id: str, now: int, batch: _Batch
    ) -> None:
        """A user's STOP (or START) to one of the account's numbers: the whole message is one
        of the account's keywords (shared/opt_out.py)."""
        text = core.keyword_text(message)
        if text is None:
            return
        keyword = (await self._account_keywords(account_id)).match(text)
        if keyword is None:
            return
        batch.suppressions.append(
            contact_lists.suppression_doc(
                account_id=account_id,
                phone_number_id=message.phone_number_id,
                wa_id=message.wa_id,
                suppressed=keyword == "stop",
                source="keyword",
                at=message.sent_at,
                now_ms=now,
                keyword=opt_out.normalise(text),
            )
        )

    async def _account_keywords(self, account_id: str) -> opt_out.Keywords:
        now = self._clock.monotonic()
        cached = self._keywords.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        keywords = opt_out.config_of(await self._store.opt_out_keywords(account_id)).keywords()
        self._keywords[account_id] = (now + self._keywords_seconds, keywords)
        self._keywords.move_to_end(account_id)
        while len(self._keywords) > self._number_capacity:
            self._keywords.popitem(last=False)
        return keywords

    async def handle_suppression_request(self, event: SuppressionChangeRequested) -> None:
        await self.handle_events([event])

    async def _suppression_request(self, event: SuppressionChangeRequested, batch: _Batch) -> None:
        """A client's or an operator's change, applied like a user's own (the latest wins)."""
        number = await self._number(event.phone_number_id)
        if number is None or number.account_id != event.account_id:
            SUPPRESSIONS.labels(event.source, "ignored").inc()
            log.warning(
                "suppression_request_ignored",
                outcome="foreign_number",
                account_id=event.account_id,
                phone_number_id=event.phone_number_id,
                request_id=event.event_id,
            )
            return
        batch.suppressions.append(
            contact_lists.suppression_doc(
                account_id=event.account_id,
                phone_number_id=event.phone_number_id,
                wa_id=event.wa_id,
                suppressed=event.suppressed,
                source=event.source,
                at=event.requested_at,
                now_ms=self._clock.now_ms(),
                detail=event.note,
                operator=event.operator,
            )
        )

    def _suppressed(self, doc: dict[str, object], saved: bool) -> None:
        outcome = "stale" if not saved else "suppressed" if doc["suppressed"] else "resubscribed"
        SUPPRESSIONS.labels(str(doc["source"]), outcome).inc()
        # never the contact's number in a log line
        log.info(
            "suppression_changed",
            outcome=outcome,
            source=doc["source"],
            account_id=doc["account_id"],
            phone_number_id=doc["phone_number_id"],
        )
