"""`format: "meta"` endpoints: Meta's own webhook payloads, split per account and rewritten so
that a Cloud API webhook handler written for Meta works unchanged. Pure.

- One forwarded POST per item: Meta's handlers (pywa's among them) read `entry[0].changes[0]`
  and its first message or status only, so a batch of Meta's becomes one envelope per change,
  and a `messages` change one envelope per message (with its contact) or per status. The
  envelope keeps Meta's `object`, `entry[].id`, `field`, `messaging_product` and `metadata`.
- A status's `id` is the id the client got from its send (our message id, which Meta echoes in
  `biz_opaque_callback_data`; else the wamid index), and its `biz_opaque_callback_data` is the
  client's own value, or absent. A status of a message sent elsewhere is left as Meta sent it.
- An inbound message keeps Meta's wamid; its `context.id` (and a reaction's `message_id`) that
  names one of the account's messages becomes that message's id, the one the client knows.
- The body's bytes are fixed here; the event id derives from them, so Meta's duplicate of an
  item is the same event and a retry is byte-identical.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.notify.core import META, OutEvent, event_id

OUR_MESSAGE_PREFIX = "msg_"
_MAX_PIECES = 5000  # Meta sends at most 1,000 updates a POST: room for every split of them


@dataclass(frozen=True)
class Piece:
    """One item of a Meta webhook, in its own envelope."""

    waba_id: str
    field: str
    phone_number_id: str | None
    envelope: dict[str, Any]
    kind: str  # status | message | change
    # wamids this piece names that may be the account's messages (statuses, contexts)
    wamids: tuple[str, ...] = ()
    callback: str | None = None  # a status's biz_opaque_callback_data

    @property
    def value(self) -> dict[str, Any]:
        value: dict[str, Any] = self.envelope["entry"][0]["changes"][0]["value"]
        return value


def _envelope(obj: str, waba_id: str, field_name: str, value: Any) -> dict[str, Any]:
    return {
        "object": obj,
        "entry": [{"id": waba_id, "changes": [{"field": field_name, "value": value}]}],
    }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def split(payload: bytes) -> list[Piece]:
    """Every item of a verified Meta webhook, each in its own envelope. What cannot be read is
    left out (status's processor counts it); nothing here raises on Meta's shapes."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(doc, dict):
        return []
    raw_object = doc.get("object")
    obj = raw_object if isinstance(raw_object, str) else "whatsapp_business_account"
    pieces: list[Piece] = []
    for entry in doc.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        waba_id = str(entry.get("id") or "")
        for change in entry.get("changes") or []:
            if not isinstance(change, dict) or not isinstance(change.get("field"), str):
                continue
            pieces.extend(_split_change(obj, waba_id, change["field"], change.get("value")))
            if len(pieces) >= _MAX_PIECES:
                return pieces[:_MAX_PIECES]
    return pieces


def _split_change(obj: str, waba_id: str, field_name: str, value: Any) -> list[Piece]:
    if field_name != "messages" or not isinstance(value, dict):
        return [
            Piece(waba_id, field_name, None, _envelope(obj, waba_id, field_name, value), "change")
        ]
    raw_metadata = value.get("metadata")
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    number = _str(metadata.get("phone_number_id"))
    common = {
        k: v for k, v in value.items() if k not in ("messages", "statuses", "contacts", "errors")
    }
    pieces: list[Piece] = []
    contacts = [c for c in value.get("contacts") or [] if isinstance(c, dict)]
    for message in value.get("messages") or []:
        if not isinstance(message, dict):
            continue
        sender = message.get("from")
        own = [c for c in contacts if c.get("wa_id") == sender] or contacts[:1]
        item = {**common, **({"contacts": own} if own else {}), "messages": [message]}
        pieces.append(
            Piece(
                waba_id,
                field_name,
                number,
                _envelope(obj, waba_id, field_name, item),
                "message",
                wamids=tuple(w for w in (_context_wamid(message),) if w),
            )
        )
    for status in value.get("statuses") or []:
        if not isinstance(status, dict):
            continue
        # 2026 on, Meta may put the recipient's contact (with its BSUID) beside statuses too
        recipient = status.get("recipient_id")
        own = [c for c in contacts if c.get("wa_id") == recipient] or contacts[:1]
        item = {**common, **({"contacts": own} if own else {}), "statuses": [status]}
        pieces.append(
            Piece(
                waba_id,
                field_name,
                number,
                _envelope(obj, waba_id, field_name, item),
                "status",
                wamids=tuple(w for w in (_str(status.get("id")),) if w),
                callback=_str(status.get("biz_opaque_callback_data")),
            )
        )
    if not pieces and (value.get("errors") or not (value.get("messages") or value.get("statuses"))):
        pieces.append(
            Piece(waba_id, field_name, number, _envelope(obj, waba_id, field_name, value), "change")
        )
    return pieces


def _context_wamid(message: Mapping[str, Any]) -> str | None:
    context = message.get("context")
    if isinstance(context, dict) and _str(context.get("id")):
        return str(context["id"])
    reaction = message.get("reaction")
    if isinstance(reaction, dict) and _str(reaction.get("message_id")):
        return str(reaction["message_id"])
    return None


@dataclass(frozen=True)
class KnownMessage:
    """One of the account's messages, as the client knows it."""

    message_id: str
    callback_data: str | None = None


@dataclass
class Lookups:
    """What the shell found for a piece: wamid -> the account's message."""

    by_wamid: dict[str, KnownMessage] = field(default_factory=dict)
    by_id: dict[str, KnownMessage] = field(default_factory=dict)


def our_message_id(piece: Piece) -> str | None:
    """The message id a status carries in its callback data (every send of ours sets it)."""
    if piece.callback and piece.callback.startswith(OUR_MESSAGE_PREFIX):
        return piece.callback
    return None


def rewrite(piece: Piece, lookups: Lookups) -> dict[str, Any]:
    """The envelope the client receives (the piece itself is left unchanged)."""
    if piece.kind == "status":
        return _rewrite_status(piece, lookups)
    if piece.kind == "message" and piece.wamids:
        known = lookups.by_wamid.get(piece.wamids[0])
        if known is not None:
            envelope = copy.deepcopy(piece.envelope)
            message = envelope["entry"][0]["changes"][0]["value"]["messages"][0]
            if isinstance(message.get("context"), dict) and message["context"].get("id"):
                message["context"]["id"] = known.message_id
            elif isinstance(message.get("reaction"), dict):
                message["reaction"]["message_id"] = known.message_id
            return envelope
    return piece.envelope


def _rewrite_status(piece: Piece, lookups: Lookups) -> dict[str, Any]:
    ours = our_message_id(piece)
    known = lookups.by_id.get(ours) if ours else None
    if known is None and piece.wamids:
        known = lookups.by_wamid.get(piece.wamids[0])
    if known is None and ours is not None:
        known = KnownMessage(ours)  # ours, not stored (yet): the id is still the client's
    if known is None:
        return piece.envelope  # a message sent elsewhere: as Meta sent it
    envelope = copy.deepcopy(piece.envelope)
    status = envelope["entry"][0]["changes"][0]["value"]["statuses"][0]
    status["id"] = known.message_id
    if known.callback_data is not None:
        status["biz_opaque_callback_data"] = known.callback_data
    else:
        status.pop("biz_opaque_callback_data", None)
    return envelope


def to_event(piece: Piece, envelope: dict[str, Any], account_id: str, at: int) -> OutEvent:
    body = orjson.dumps(envelope)
    digest = hashlib.sha256(body).hexdigest()
    return OutEvent(
        event_id(f"meta.{piece.field}", account_id, digest),
        account_id,
        f"meta.{piece.field}",
        META,
        at,
        body,
    )
