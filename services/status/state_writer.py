"""The state writer: messages.send-requested.v1 and messages.status-changed.v1 -> the message's
document.

Both topics are keyed by account and read by one consumer with the range assignor (the same
partitions of both go to the same process), and one message's records are handled in order, so
the state writer is the only writer of its accounts' `messages` documents and `wamid_index`
entries: a read-converge-write needs no atomic conditional update (FerretDB has none). The
request creates the document; a status event read before it creates a minimal one, which the
request then completes.

Being the only writer, the state writer also remembers what it last wrote of recent messages
(their state and the few document fields it reads), so a message's next event costs one write
and no read. All of it is forgotten whenever partitions move (`forget_all`): another process may
write those messages from then on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

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


Doc = dict[str, Any]
# The document fields the state writer reads (see repository.load_message).
_KEPT_FIELDS = ("account_id", "recipient_region", "created_at", "type")


class StateWriter:
    def __init__(
        self,
        store: StateStore,
        publisher: Publisher,
        clock: Clock,
        remembered_messages: int = 20_000,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._known: OrderedDict[str, tuple[core.MessageState, Doc]] = OrderedDict()
        self._capacity = remembered_messages
        self._generation = 0  # moves on with every forget_all

    def forget_all(self) -> None:
        """Partitions moved: what this process wrote may be another process's to write now."""
        self._known.clear()
        self._generation += 1

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.topic.endswith(SEND_REQUESTED.name):
            await self.handle_request(SEND_REQUESTED.decode_record(record.value))
        else:
            await self.handle(STATUS_CHANGED.decode_record(record.value))

    async def handle_request(self, event: SendRequested) -> None:
        """Create the message's document from its accepted request (a replay finds it made)."""
        started, generation = time.perf_counter(), self._generation
        doc = message_document(event)
        outcome = "created"
        if await self._store.create_message(doc):
            self._remember(event.message_id, core.state_from_doc(doc), doc, generation)
        else:
            state, existing = await self._load(event.message_id)
            outcome = "exists"
            if existing is not None and existing.get("type") is None:
                # Made from a status event read before the request: add what the client asked
                # for and the `accepted` step.
                fields = {k: doc[k] for k in REQUEST_FIELDS if k in doc}
                new_state = core.with_accepted(state, event.accepted_at)
                fields.update(core.state_fields(new_state, self._clock.now_ms()))
                await self._store.save_message(event.message_id, fields, {})
                self._remember(event.message_id, new_state, doc, generation)
                outcome = "completed"
        metrics.MESSAGES_CREATED.labels(outcome=outcome).inc()
        log.info(
            "message_created",
            outcome=outcome,
            event_id=event.event_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def handle(self, event: StatusChanged) -> None:
        started, generation = time.perf_counter(), self._generation
        state, doc = await self._load(event.message_id)
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
            if_new = core.minimal_message_fields(event) if doc is None else {}
            await self._store.save_message(
                event.message_id, core.state_fields(new_state, now_ms), if_new
            )
            self._remember(event.message_id, new_state, doc or if_new, generation)
            accepted_ms = core.epoch_ms((doc or {}).get("created_at"))
            if accepted_ms is not None and core.newly_delivered(state, new_state):
                # The pipeline's whole latency: the client's 202 to the delivery being stored.
                metrics.ACCEPT_TO_DELIVERED.observe(max(0.0, (now_ms - accepted_ms) / 1000))
        log.info(
            "message_state_applied",
            outcome="changed" if new_state is not None else "unchanged",
            event_id=event.event_id,
            event_status=event.status,
            source=event.source,
            status=(new_state or state).status,
            released_parked=released,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def _load(self, message_id: str) -> tuple[core.MessageState, Doc | None]:
        known = self._known.get(message_id)
        if known is not None:
            self._known.move_to_end(message_id)
            return known
        return await self._store.load_message(message_id)

    def _remember(
        self, message_id: str, state: core.MessageState, doc: Doc, generation: int
    ) -> None:
        if generation != self._generation:
            return  # partitions moved while this was being written: don't trust it
        self._known[message_id] = (state, {k: doc[k] for k in _KEPT_FIELDS if k in doc})
        self._known.move_to_end(message_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

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
