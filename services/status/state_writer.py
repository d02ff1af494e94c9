"""The state writer: one record of messages.status-changed.v1 -> the message's document.

status-changed is keyed by account, so the consumer of a partition is the only writer of its
accounts' `messages` state and `wamid_index` entries: a read-converge-write needs no atomic
conditional update (FerretDB has none).
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
from shared.messages import STATUS_CHANGED, StatusChanged

log = get_logger(__name__)


class StateWriter:
    def __init__(self, store: StateStore, publisher: Publisher, clock: Clock) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        await self.handle(STATUS_CHANGED.decode_record(record.value))

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
