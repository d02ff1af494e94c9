"""The state writer: messages.send-requested.v1 and messages.status-changed.v1 -> the message's
document, a batch at a time (shared/pipeline.py).

Both topics are keyed by account and read by one consumer with the range assignor (the same
partitions of both go to the same process), and one message's records reach the batch in order,
so the state writer is the only writer of its accounts' `messages` documents and `wamid_index`
entries: a read-converge-write needs no atomic conditional update (FerretDB has none). Batches
are taken round-robin over the accounts of each partition (workers.state_writer_policy): an
account's records read behind another's backlog on the same partition are not written after it. The
request creates the document; a status event read before it creates a minimal one, which the
request then completes.

A batch costs at most: one insert of the messages its requests create, one read of the other
messages it does not remember (`find` by `$in`), one insert of the new wamids, one read of the
statuses parked for them (and their release), and one `bulk_write` of every message's write
(services/status/batch_plan.py plans them without I/O; FerretDB takes them 50 statements per
command: repository.UPDATES_PER_COMMAND).
Being the only writer, the state writer remembers what it last wrote of recent messages (their
state and the few document fields it reads), so a message's next event costs no read. All of it
is forgotten whenever partitions move (`forget_all`): another process may write those messages
from then on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec
from aiokafka import ConsumerRecord

from services.status import core, metrics
from services.status.batch_plan import Known, StateEvent, pack_known, plan_batch, unpack_known
from services.status.publisher import Outgoing, Publisher
from services.status.repository import StateStore
from shared.clock import Clock
from shared.logging import get_logger
from shared.message_docs import message_document
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, SendRequested, StatusChanged
from shared.pipeline import Item

log = get_logger(__name__)

Doc = dict[str, Any]


def decode(record: ConsumerRecord[bytes, bytes]) -> StateEvent:
    """The pipeline's decode step (a record that can never decode is a PermanentError)."""
    if record.topic.endswith(SEND_REQUESTED.name):
        return SEND_REQUESTED.decode_record(record.value)
    return STATUS_CHANGED.decode_record(record.value)


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
        # packed (batch_plan.pack_known): ~0.3 KB per message instead of ~2 KB
        self._known: OrderedDict[str, bytes | Known] = OrderedDict()
        self._capacity = remembered_messages
        self._generation = 0  # moves on with every forget_all

    def forget_all(self) -> None:
        """Partitions moved: what this process wrote may be another process's to write now."""
        self._known.clear()
        self._generation += 1

    async def handle_batch(self, items: Sequence[Item[StateEvent]]) -> None:
        """The pipeline's effect: the batch's events, each message's in offset order."""
        await self.apply([item.value for item in items])

    async def handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        await self.apply([decode(record)])

    async def handle_request(self, event: SendRequested) -> None:
        await self.apply([event])

    async def handle(self, event: StatusChanged) -> None:
        await self.apply([event])

    async def apply(self, events: Sequence[StateEvent]) -> None:
        started, generation = time.perf_counter(), self._generation
        known: dict[str, Known] = {}
        unknown: list[str] = []
        for event in events:
            message_id = event.message_id
            if message_id in known or message_id in unknown:
                continue
            remembered = self._known.get(message_id)
            if remembered is None:
                unknown.append(message_id)
            else:
                self._known.move_to_end(message_id)
                known[message_id] = unpack_known(remembered)
        # A message first met by its request is created without a read (one insert for all);
        # only those whose id is taken, and the others not remembered, are read (one find).
        requests: dict[str, Doc] = {}
        for event in events:
            if event.message_id in unknown and event.message_id not in requests:
                requests[event.message_id] = (
                    message_document(event) if isinstance(event, SendRequested) else {}
                )
        new_docs = [doc for doc in requests.values() if doc]
        taken = await self._store.create_messages(new_docs) if new_docs else set()
        created = {str(doc["_id"]) for doc in new_docs} - taken
        for doc in new_docs:
            if doc["_id"] in created:
                known[doc["_id"]] = Known(core.state_from_doc(doc), doc)
        to_read = [m for m in unknown if m not in created]
        if to_read:
            docs = await self._store.load_messages(to_read)
            for message_id in to_read:
                stored = docs.get(message_id)
                known[message_id] = Known(core.state_from_doc(stored), stored)
        now_ms = self._clock.now_ms()
        plan = plan_batch(events, known, now_ms, created)
        released = 0
        if plan.wamid_docs:
            # Index first, then look for parked statuses: the processor parks first, then looks
            # at the index (see processor.py), so one of the two sees the other's write.
            await self._store.index_wamids(plan.wamid_docs)
            released = await self._release(plan.refs)
        await self._store.write_messages(plan.writes)
        for message_id, after in plan.after.items():
            self._remember(message_id, after, generation)
        for outcome, count in plan.created.items():
            metrics.MESSAGES_CREATED.labels(outcome=outcome).inc(count)
        for accepted_ms in plan.delivered_accepted_ms:
            # The pipeline's whole latency: the client's 202 to the delivery being stored.
            metrics.ACCEPT_TO_DELIVERED.observe(max(0.0, (now_ms - accepted_ms) / 1000))
        log.info(
            "message_states_applied",
            events=len(events),
            messages=len(known),
            read=len(to_read),
            changed=plan.changed,
            unchanged=plan.unchanged,
            created=plan.created.get("created", 0),
            completed=plan.created.get("completed", 0),
            released_parked=released,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _remember(self, message_id: str, after: Known, generation: int) -> None:
        if generation != self._generation:
            return  # partitions moved while this was being written: don't trust it
        self._known[message_id] = pack_known(after)
        self._known.move_to_end(message_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    async def _release(self, refs: dict[str, core.MessageRef]) -> int:
        """Publish the statuses parked while their wamids were unknown, then delete them."""
        released: list[Outgoing] = []
        parked_ids: list[str] = []
        for parked in await self._store.parked_for_wamids(list(refs)):
            parked_ids.append(str(parked["_id"]))
            ref = refs.get(str(parked.get("wamid")))
            try:
                status = core.status_from_parked(parked)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError):
                log.warning("parked_status_unreadable", outcome="dropped")
                continue
            event = core.status_changed_from_webhook(status, ref) if ref is not None else None
            if event is not None:
                # Published, not applied here: billing must see it too. It comes back to us.
                released.append((STATUS_CHANGED, event))
        await self._publisher.publish_all(released)
        if parked_ids:
            await self._store.delete_parked_many(parked_ids)
        return len(released)
