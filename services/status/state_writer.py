"""The state writer: messages.send-requested.v1 and messages.status-changed.v1 -> the message's
document.

Both topics are keyed by account and read by one consumer with the range assignor (the same
partitions of both go to the same process), and one message's records are handled in order, so
the state writer is the only writer of its accounts' `messages` documents and `wamid_index`
entries: a read-converge-write needs no atomic conditional update (FerretDB has none). The
request creates the document; a status event read before it creates a minimal one, which the
request then completes.
"""

from __future__ import annotations

import time

import msgspec
from aiokafka import ConsumerRecord

from services.status import core, metrics
from services.status.publisher import Outgoing, Publisher
from services.status.repository import StateStore
from shared.clock import Clock
from shared.logging import get_logger
from shared.message_docs import REQUEST_FIELDS, message_document
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, SendRequested, StatusChanged

log = get_logger(__name__)


class StateWriter:
    def __init__(self, store: StateStore, publisher: Publisher, clock: Clock) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.topic.endswith(SEND_REQUESTED.name):
            await self.handle_request(SEND_REQUESTED.decode_record(record.value))
        else:
            await self.handle(STATUS_CHANGED.decode_record(record.value))

    async def handle_request(self, event: SendRequested) -> None:
        """Create the message's document from its accepted request (a replay finds it made)."""
        started = time.perf_counter()
        doc = message_document(event)
        outcome = "created"
        if not await self._store.create_message(doc):
            state, existing = await self._store.load_message(event.message_id)
            outcome = "exists"
            if existing is not None and existing.get("type") is None:
                # Made from a status event read before the request: add what the client asked
                # for and the `accepted` step.
                fields = {k: doc[k] for k in REQUEST_FIELDS if k in doc}
                fields.update(core.state_fields(core.with_accepted(state, event.accepted_at),
                                                self._clock.now_ms()))
                await self._store.save_message(event.message_id, fields, {})
                outcome = "completed"
        metrics.MESSAGES_CREATED.labels(outcome=outcome).inc()
        log.info("message_created", outcome=outcome, event_id=event.event_id,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def handle(self, event: StatusChanged) -> None:
        started = time.perf_counter()
        state, doc = await self._store.load_message(event.message_id)
        released = 0
        if event.wamid and event.wamid != state.wamid:
            # A wamid new to this message: index it and release what was parked for it before
            # the document records it, so that a document showing the wamid proves both done.
            region = event.recipient_region or str((doc or {}).get("recipient_region") or "")
            ref = core.MessageRef(event.message_id, event.account_id, region)
            released = await self._index_and_release(event.wamid, ref)
        new_state = core.converge(state, event)
        if new_state is not None:
            now_ms = self._clock.now_ms()
            await self._store.save_message(
                event.message_id, core.state_fields(new_state, now_ms),
                core.minimal_message_fields(event) if doc is None else {})
            accepted_ms = core.epoch_ms((doc or {}).get("created_at"))
            if accepted_ms is not None and core.newly_delivered(state, new_state):
                # The pipeline's whole latency: the client's 202 to the delivery being stored.
                metrics.ACCEPT_TO_DELIVERED.observe(max(0.0, (now_ms - accepted_ms) / 1000))
        log.info("message_state_applied",
                 outcome="changed" if new_state is not None else "unchanged",
                 event_id=event.event_id, event_status=event.status, source=event.source,
                 status=(new_state or state).status, released_parked=released,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _index_and_release(self, wamid: str, ref: core.MessageRef) -> int:
        """Index the wamid, then publish the statuses parked while it was unknown. Index first,
        then look: the processor parks first, then looks at the index (see processor.py)."""
        await self._store.index_wamid(core.wamid_index_doc(wamid, ref))
        released: list[Outgoing] = []
        parked_ids: list[str] = []
        for parked in await self._store.parked_for(wamid):
            parked_ids.append(str(parked["_id"]))
            try:
                status = core.status_from_parked(parked)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError):
                log.warning("parked_status_unreadable", outcome="dropped")
                continue
            event = core.status_changed_from_webhook(status, ref)
            if event is not None:
                # Published, not applied here: billing must see it too. It comes back to us.
                released.append((STATUS_CHANGED, event))
        await self._publisher.publish_all(released)
        for parked_id in parked_ids:
            await self._store.delete_parked(parked_id)
        return len(released)
