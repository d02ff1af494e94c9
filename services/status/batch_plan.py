"""The state writer's batch, planned without I/O: a batch of send-requested and status-changed
events, and what is known of their messages before it -> the wamids to index, one write per
message, and what to remember.

Each message's events are applied in the batch's order (its partition's offset order), exactly as
one event after the other would: a request creates the document, or completes the minimal one a
status event read before it made; a status event converges the state. The result is one write
per message: `$set` of what changed, `$setOnInsert` of the document it creates when none is
stored (without the fields `$set` already writes). Nothing is read that the state writer already
knows: it is the only writer of its accounts' messages.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.status import core
from shared.message_docs import REQUEST_FIELDS, message_document
from shared.messages import MetaError, Pricing, SendRequested, StatusChanged

Doc = dict[str, Any]
StateEvent = SendRequested | StatusChanged
# The document fields the state writer reads and remembers (see repository.load_messages).
KEPT_FIELDS = ("account_id", "recipient_region", "created_at", "type")


@dataclass(frozen=True)
class Known:
    """A message before the batch: its state and its kept fields (doc None: none stored)."""

    state: core.MessageState
    doc: Doc | None


# What the state writer remembers of a message, packed into msgpack: ~0.3 KB of bytes instead
# of ~2 KB of objects (a dataclass per history entry, pricing and error structs, a dict, a
# datetime). 20,000 remembered messages held ~40 MB as objects.
_PACKER = msgspec.msgpack.Encoder()
_UNPACKER = msgspec.msgpack.Decoder()


def pack_known(known: Known) -> bytes | Known:
    """`known` as the state writer remembers it: packed, or `known` itself when a stored field
    is of a type msgpack does not take (never expected: the kept fields are strings and a
    time, which is kept as epoch ms, the only way it is read: `core.epoch_ms`)."""
    rows = [
        (
            e.status,
            e.at,
            e.source,
            e.implied,
            None if e.pricing is None else _pricing_row(e.pricing),
            None if e.error is None else (e.error.code, e.error.title, e.error.details),
            e.reason,
        )
        for e in known.state.history
    ]
    doc = known.doc
    kept = (
        None
        if doc is None
        else {k: core.epoch_ms(v) if k == "created_at" else v for k, v in doc.items()}
    )
    try:
        return _PACKER.encode((known.state.wamid, rows, kept))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return known


def unpack_known(entry: bytes | Known) -> Known:
    """The `Known` that `pack_known` packed."""
    if isinstance(entry, Known):
        return entry
    wamid, rows, kept = _UNPACKER.decode(entry)
    history = tuple(
        core.HistoryEntry(
            status=status,
            at=at,
            source=source,
            implied=implied,
            pricing=None
            if pricing is None
            else Pricing(
                billable=pricing[0],
                pricing_model=pricing[1],
                type=pricing[2],
                category=pricing[3],
            ),
            error=None
            if error is None
            else MetaError(code=error[0], title=error[1], details=error[2]),
            reason=reason,
        )
        for status, at, source, implied, pricing, error, reason in rows
    )
    return Known(core.MessageState(history=history, wamid=wamid), kept)


def _pricing_row(pricing: Pricing) -> tuple[bool, str, str, str]:
    return (pricing.billable, pricing.pricing_model, pricing.type, pricing.category)


@dataclass(frozen=True)
class MessageWrite:
    """One message's write: upsert by id, `$set` these, `$setOnInsert` those."""

    message_id: str
    set_fields: Doc
    set_on_insert: Doc


@dataclass
class BatchPlan:
    wamid_docs: list[Doc] = field(default_factory=list)  # to index (the first writer wins)
    refs: dict[str, core.MessageRef] = field(default_factory=dict)  # new wamid -> message
    writes: list[MessageWrite] = field(default_factory=list)
    after: dict[str, Known] = field(default_factory=dict)  # to remember once written
    created: dict[str, int] = field(default_factory=dict)  # outcome -> requests
    changed: int = 0
    unchanged: int = 0
    # the accepted_at (ms) of messages this batch newly delivered (the pipeline's latency)
    delivered_accepted_ms: list[int] = field(default_factory=list)


@dataclass
class _Working:
    state: core.MessageState
    doc: Doc | None
    stored: bool
    just_created: bool = False  # its request's insert is done: that request is applied
    insert: Doc = field(default_factory=dict)
    completion: Doc = field(default_factory=dict)
    changed: bool = False


def plan_batch(
    events: Sequence[StateEvent],
    known: Mapping[str, Known],
    now_ms: int,
    created: Collection[str] = (),
) -> BatchPlan:
    """`known` has every message of `events` (from memory, else read: doc None when absent).
    `created`: messages whose document the batch's first event, their request, just inserted
    (their `known` is that document)."""
    plan = BatchPlan()
    work: dict[str, _Working] = {}
    for event in events:
        w = work.get(event.message_id)
        if w is None:
            before = known[event.message_id]
            w = work[event.message_id] = _Working(
                before.state, before.doc, before.doc is not None, event.message_id in created
            )
        if isinstance(event, SendRequested):
            _request(w, event, plan)
        else:
            _status(w, event, plan)
    for message_id, w in work.items():
        set_fields = dict(w.completion)
        if w.changed:
            set_fields.update(core.state_fields(w.state, now_ms))
        on_insert = (
            {}
            if w.stored
            else {k: v for k, v in w.insert.items() if k != "_id" and k not in set_fields}
        )
        if set_fields or on_insert:
            plan.writes.append(MessageWrite(message_id, set_fields, on_insert))
        if w.doc is not None:
            plan.after[message_id] = Known(
                w.state, {k: w.doc[k] for k in KEPT_FIELDS if k in w.doc}
            )
    return plan


def _request(w: _Working, event: SendRequested, plan: BatchPlan) -> None:
    if w.just_created:
        w.just_created = False
        plan.created["created"] = plan.created.get("created", 0) + 1
        return
    doc = message_document(event)
    if w.doc is None:
        w.insert, w.doc, w.state = doc, doc, core.state_from_doc(doc)
        outcome = "created"
    elif w.doc.get("type") is None:
        # Made from a status event read before the request: add what the client asked for and
        # the `accepted` step.
        w.completion.update({k: doc[k] for k in REQUEST_FIELDS if k in doc})
        w.state = core.with_accepted(w.state, event.accepted_at)
        w.doc, w.changed = doc, True
        outcome = "completed"
    else:
        outcome = "exists"
    plan.created[outcome] = plan.created.get(outcome, 0) + 1


def _status(w: _Working, event: StatusChanged, plan: BatchPlan) -> None:
    if event.wamid and event.wamid != w.state.wamid and event.wamid not in plan.refs:
        # A wamid new to this message: index it (and release what was parked for it) before
        # the document records it, so that a document showing the wamid proves both done.
        region = event.recipient_region or str((w.doc or {}).get("recipient_region") or "")
        ref = core.MessageRef(event.message_id, event.account_id, region)
        plan.wamid_docs.append(core.wamid_index_doc(event.wamid, ref))
        plan.refs[event.wamid] = ref
    new_state = core.converge(w.state, event)
    if new_state is None:
        plan.unchanged += 1
        return
    accepted_ms = core.epoch_ms((w.doc or {}).get("created_at"))
    if w.doc is None:
        w.insert = core.minimal_message_fields(event)
        w.doc = w.insert
    if accepted_ms is not None and core.newly_delivered(w.state, new_state):
        plan.delivered_accepted_ms.append(accepted_ms)
    w.state, w.changed = new_state, True
    plan.changed += 1


# --- the webhook processor's writes ------------------------------------------------------------
# The processor handles a batch's records in order, and collects their writes: one command per
# collection at the end of the batch (before its events are published) gives the same documents
# as the records written one at a time.


def merge_update(first: Doc, then: Doc) -> Doc:
    """Two upserts of one document as one: `$max` keeps the larger, `$set` the later value,
    `$setOnInsert` the first (the document is created by the first of them)."""
    merged: Doc = {}
    for operator in ("$max", "$set", "$setOnInsert"):
        a, b = first.get(operator, {}), then.get(operator, {})
        if operator == "$max":
            values = {**a, **{k: max(v, a[k]) if k in a else v for k, v in b.items()}}
        elif operator == "$set":
            values = {**a, **b}
        else:
            values = {**b, **a}
        if values:
            merged[operator] = values
    return merged


@dataclass(frozen=True)
class TemplateWrite:
    """A template webhook's fields: set on the template (by `_id` when `minimal` is known, else
    by Meta's template id in the WABA) unless a later webhook of the same kind set them;
    `minimal` is the document created when none is stored."""

    doc_id: str
    template_id: str
    waba_id: str
    fields: Doc
    at_field: str
    at_ms: int
    minimal: Doc | None


@dataclass(frozen=True)
class TemplateOutcomes:
    created: int = 0
    applied: int = 0
    not_applied: int = 0  # a later webhook of the kind was stored, or no such template


@dataclass(frozen=True)
class LatestPlan:
    """Facts where the latest (`at`) wins: each fact's outcome as if written one at a time,
    and the one write per document that gives the same result."""

    saved: list[bool]
    inserts: list[Doc]
    updates: list[Doc]


def plan_latest(stored_at: Mapping[str, int], docs: Sequence[Doc]) -> LatestPlan:
    """`stored_at`: the `at` of the documents stored before the batch. A fact is saved when it
    is not older than the document as it stands when its turn comes (ties: the later fact
    wins); only the last saved fact of each document is written."""
    current: dict[str, int] = dict(stored_at)
    winners: dict[str, Doc] = {}
    saved: list[bool] = []
    for doc in docs:
        doc_id, at = str(doc["_id"]), doc["at"]
        ok = doc_id not in current or current[doc_id] <= at
        saved.append(ok)
        if ok:
            current[doc_id] = at
            winners[doc_id] = doc
    inserts = [d for i, d in winners.items() if i not in stored_at]
    updates = [d for i, d in winners.items() if i in stored_at]
    return LatestPlan(saved, inserts, updates)
