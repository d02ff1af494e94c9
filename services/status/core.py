"""status's pure decisions: webhook checks, splitting Meta's batches, resolving statuses to our
messages, converging a message's state, and the sweeper's verdicts.

No await, no clock, no I/O: `now` and everything read from the database come in as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec

from services.status import envelope as meta
from shared.errors import InvalidRequest, PermanentError
from shared.messages import (
    InboundReceived,
    MessageStatus,
    MetaError,
    Pricing,
    StatusChanged,
    TemplateStatusChanged,
    ThroughputChanged,
)

WHATSAPP_OBJECT = "whatsapp_business_account"

# --- webhook intake ---------------------------------------------------------------------------

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def signature_is_valid(body: bytes, header: str | None, app_secret: bytes) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>` must be HMAC-SHA256 of the exact bytes received."""
    if not header:
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(app_secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def handshake_challenge(params: Mapping[str, str], verify_token: str) -> str | None:
    """The challenge to echo when Meta's verification request is genuine, else None."""
    if params.get("hub.mode") != "subscribe":
        return None
    offered = params.get("hub.verify_token", "")
    if not hmac.compare_digest(offered.encode(), verify_token.encode()):
        return None
    return params.get("hub.challenge")


_head_decoder = msgspec.json.Decoder(meta.WebhookHead)


def accepted_waba_id(body: bytes) -> str:
    """The first entry's WABA id of a body we accept; InvalidRequest when it is not Meta's
    WhatsApp webhook JSON."""
    try:
        head = _head_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest("body is not a webhook JSON object", code="malformed_payload",
                             details={"reason": str(exc)[:200]}) from exc
    if head.object != WHATSAPP_OBJECT:
        raise InvalidRequest(f"object must be {WHATSAPP_OBJECT}", code="unexpected_object")
    return str(head.entry[0].id) if head.entry else ""


def webhook_event_id(waba_id: str, body: bytes) -> str:
    """Identical bodies (Meta's retries) get identical ids; the WABA prefix is the Kafka key."""
    return f"{waba_id}:{hashlib.sha256(body).hexdigest()}"


# --- splitting a webhook into what we act on --------------------------------------------------

@dataclass(frozen=True)
class WebhookStatus:
    """One item of `statuses[]`, with the routing data of its change."""

    wamid: str
    meta_status: str  # Meta's word: sent, delivered, read, failed, played, ...
    occurred_at: int
    waba_id: str
    phone_number_id: str
    callback_data: str | None
    pricing: Pricing | None
    error: MetaError | None
    raw: bytes  # the item as Meta sent it, kept when parked


@dataclass(frozen=True)
class InboundMessage:
    wamid: str
    waba_id: str
    phone_number_id: str
    sender: str  # the user's wa_id
    message_type: str
    sent_at: int
    content: dict[str, Any]


@dataclass(frozen=True)
class TemplateUpdate:
    waba_id: str
    template_id: str
    name: str
    language: str  # normalised to Meta's send form (en_US)
    event: str
    reason: str | None
    category: str | None
    occurred_at: int


@dataclass(frozen=True)
class ThroughputUpgrade:
    waba_id: str
    display_phone_number: str
    messaging_limit: str | None
    occurred_at: int


@dataclass
class WebhookPlan:
    statuses: list[WebhookStatus] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)
    template_updates: list[TemplateUpdate] = field(default_factory=list)
    throughput_upgrades: list[ThroughputUpgrade] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    malformed_items: int = 0


_envelope_decoder = msgspec.json.Decoder(meta.Envelope)
_entry_decoder = msgspec.json.Decoder(meta.Entry)
_change_decoder = msgspec.json.Decoder(meta.Change)
_messages_value_decoder = msgspec.json.Decoder(meta.MessagesValue)
_status_decoder = msgspec.json.Decoder(meta.StatusItem)
_inbound_decoder = msgspec.json.Decoder(meta.InboundItem)
_any_object_decoder = msgspec.json.Decoder(dict[str, Any])
_template_decoder = msgspec.json.Decoder(meta.TemplateStatusValue)
_quality_decoder = msgspec.json.Decoder(meta.PhoneNumberQualityValue)
_ITEM_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


def plan_webhook(payload: bytes, received_at: int) -> WebhookPlan:
    """Everything a verified webhook asks us to do. Items that cannot be read are counted in
    `malformed_items` and skipped; only an unreadable envelope is an error."""
    try:
        envelope = _envelope_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PermanentError("webhook payload is not Meta's envelope",
                             code="malformed_webhook") from exc
    plan = WebhookPlan()
    for raw_entry in envelope.entry:
        try:
            entry = _entry_decoder.decode(raw_entry)
        except _ITEM_ERRORS:
            plan.malformed_items += 1
            continue
        waba_id = str(entry.id)
        entry_at = int(entry.time * 1000) if entry.time is not None else received_at
        for raw_change in entry.changes:
            try:
                change = _change_decoder.decode(raw_change)
                if not change.value:
                    raise ValueError("change without a value")
                _plan_change(plan, waba_id, entry_at, change.field, change.value)
            except _ITEM_ERRORS:
                plan.malformed_items += 1
    return plan


def _plan_change(plan: WebhookPlan, waba_id: str, entry_at: int, field_name: str,
                 value: msgspec.Raw) -> None:
    if field_name == "messages":
        messages_value = _messages_value_decoder.decode(value)
        phone_number_id = messages_value.metadata.phone_number_id if messages_value.metadata else ""
        for raw_status in messages_value.statuses:
            try:
                plan.statuses.append(parse_status_item(raw_status, waba_id, phone_number_id))
            except _ITEM_ERRORS:
                plan.malformed_items += 1
        for raw_message in messages_value.messages:
            try:
                plan.inbound.append(_parse_inbound(raw_message, waba_id, phone_number_id))
            except _ITEM_ERRORS:
                plan.malformed_items += 1
    elif field_name == "message_template_status_update":
        template = _template_decoder.decode(value)
        plan.template_updates.append(TemplateUpdate(
            waba_id=waba_id, template_id=str(template.message_template_id),
            name=template.message_template_name,
            language=normalise_language(template.message_template_language),
            event=template.event, reason=template.reason,
            category=template.message_template_category, occurred_at=entry_at))
    elif field_name == "phone_number_quality_update":
        quality = _quality_decoder.decode(value)
        if quality.event == "THROUGHPUT_UPGRADE":
            plan.throughput_upgrades.append(ThroughputUpgrade(
                waba_id=waba_id, display_phone_number=quality.display_phone_number,
                messaging_limit=quality.current_limit, occurred_at=entry_at))
        else:
            plan.ignored_fields.append(field_name)
    else:
        plan.ignored_fields.append(field_name)


def parse_status_item(raw: bytes, waba_id: str, phone_number_id: str) -> WebhookStatus:
    """One `statuses[]` item (also used to replay a parked one)."""
    item = _status_decoder.decode(raw)
    if not item.id:
        raise ValueError("status without a wamid")
    return WebhookStatus(
        wamid=item.id, meta_status=item.status, occurred_at=_epoch_ms(item.timestamp),
        waba_id=waba_id, phone_number_id=phone_number_id,
        callback_data=item.biz_opaque_callback_data,
        pricing=_pricing(item.pricing) if item.pricing is not None else None,
        error=_first_error(item.errors), raw=bytes(raw))


def _parse_inbound(raw: bytes, waba_id: str, phone_number_id: str) -> InboundMessage:
    item = _inbound_decoder.decode(raw)
    if not item.id or not item.sender:
        raise ValueError("inbound message without id or sender")
    content = _any_object_decoder.decode(raw).get(item.type)
    return InboundMessage(
        wamid=item.id, waba_id=waba_id, phone_number_id=phone_number_id, sender=item.sender,
        message_type=item.type, sent_at=_epoch_ms(item.timestamp),
        content=content if isinstance(content, dict) else {})


def _epoch_ms(timestamp: str | int) -> int:
    """Meta's timestamps are Unix seconds, usually as a string."""
    return int(timestamp) * 1000


def epoch_ms(value: object) -> int | None:
    """A stored time as epoch ms: ingest writes BSON dates, minimal documents epoch ms."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def newly_delivered(before: MessageState, after: MessageState) -> bool:
    """Whether this step is the first evidence of delivery (delivered, or read implying it)."""
    reached = {"delivered", "read"}
    return after.status in reached and before.status not in reached


def _pricing(pricing: meta.MetaPricing) -> Pricing:
    # `billable` is being deprecated in favour of `type`: derive whichever is missing.
    pricing_type = pricing.type or ("regular" if pricing.billable else "free_customer_service")
    billable = pricing.billable if pricing.billable is not None else pricing_type == "regular"
    # Meta's text spells authentication-international with a hyphen; our categories use '_'.
    return Pricing(billable=billable, pricing_model=pricing.pricing_model or "PMP",
                   type=pricing_type, category=pricing.category.replace("-", "_"))


def _first_error(errors: list[meta.MetaErrorItem]) -> MetaError | None:
    if not errors:
        return None
    first = errors[0]
    try:
        code = int(first.code)
    except ValueError:
        code = 0
    details = first.error_data.details if first.error_data else ""
    return MetaError(code=code, title=first.title or first.message, details=details)


def normalise_language(language: str) -> str:
    """Template webhooks say `en-US`; sends and our templates use `en_US`."""
    return language.replace("-", "_")


# --- statuses: from Meta's word to our event --------------------------------------------------

# `played` (first play of a voice message) only ever follows `read` and carries neither pricing
# nor a new lifecycle step, so it is counted and not published.
_MESSAGE_STATUS_OF_META: dict[str, MessageStatus] = {
    "sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed",
}
COUNTED_META_STATUSES = frozenset({"sent", "delivered", "read", "failed", "played"})


def message_status_of(meta_status: str) -> MessageStatus | None:
    """Our status for Meta's, or None when the status is not one we publish."""
    return _MESSAGE_STATUS_OF_META.get(meta_status)


def status_metric_label(meta_status: str) -> str:
    return meta_status if meta_status in COUNTED_META_STATUSES else "other"


@dataclass(frozen=True)
class MessageRef:
    """Which of our messages a wamid belongs to."""

    message_id: str
    account_id: str
    recipient_region: str = ""


def message_ref_from_doc(doc: Mapping[str, Any] | None) -> MessageRef | None:
    """A `messages` (or `wamid_index`) document as a reference; None when it is not usable."""
    if not doc or not doc.get("account_id"):
        return None
    message_id = doc.get("message_id") or doc.get("_id")
    if not isinstance(message_id, str):
        return None
    return MessageRef(message_id=message_id, account_id=str(doc["account_id"]),
                      recipient_region=str(doc.get("recipient_region") or ""))


def callback_message_id(status: WebhookStatus) -> str | None:
    """Our message id from `biz_opaque_callback_data`, when it looks like one of ours (another
    app subscribed to the same WABA may put anything there)."""
    data = status.callback_data
    return data if data and data.startswith("msg_") else None


def resolve_status(by_wamid: MessageRef | None,
                   by_callback: MessageRef | None) -> MessageRef | None:
    """The wamid index is authoritative; the callback data covers the time before the sender's
    `sent` is recorded; with neither, the status is parked (None)."""
    return by_wamid or by_callback


def status_changed_from_webhook(status: WebhookStatus, ref: MessageRef) -> StatusChanged | None:
    """The event for a resolved status item; None for statuses we do not publish."""
    our_status = message_status_of(status.meta_status)
    if our_status is None:
        return None
    return StatusChanged(
        event_id=f"{status.wamid}:{status.meta_status}", message_id=ref.message_id,
        account_id=ref.account_id, status=our_status, occurred_at=status.occurred_at,
        source="webhook", phone_number_id=status.phone_number_id,
        recipient_region=ref.recipient_region, wamid=status.wamid, error=status.error,
        pricing=status.pricing)


def parked_status_id(status: WebhookStatus) -> str:
    return f"{status.wamid}:{status.meta_status}"


def parked_status_doc(status: WebhookStatus, now_ms: int) -> dict[str, Any]:
    """A status whose wamid is not known yet, kept as Meta sent it (as text: Meta's keys are
    not guaranteed to be storable field names)."""
    return {"_id": parked_status_id(status), "wamid": status.wamid, "status": status.meta_status,
            "raw": status.raw.decode(), "waba_id": status.waba_id,
            "phone_number_id": status.phone_number_id, "parked_at": now_ms}


def status_from_parked(doc: Mapping[str, Any]) -> WebhookStatus:
    return parse_status_item(str(doc["raw"]).encode(), str(doc.get("waba_id", "")),
                             str(doc.get("phone_number_id", "")))


# --- inbound messages, templates, throughput --------------------------------------------------

def conversation_id(phone_number_id: str, sender: str) -> str:
    return f"{phone_number_id}:{sender}"


def inbound_received(message: InboundMessage) -> InboundReceived:
    return InboundReceived(
        event_id=message.wamid, phone_number_id=message.phone_number_id,
        waba_id=message.waba_id, sender=message.sender, wamid=message.wamid,
        message_type=message.message_type, sent_at=message.sent_at, content=message.content)


KNOWN_TEMPLATE_EVENTS = frozenset({
    "APPROVED", "ARCHIVED", "DELETED", "DISABLED", "FLAGGED", "IN_APPEAL", "LIMIT_EXCEEDED",
    "LOCKED", "PAUSED", "PENDING", "REINSTATED", "PENDING_DELETION", "REJECTED"})


def template_event_label(event: str) -> str:
    return event if event in KNOWN_TEMPLATE_EVENTS else "other"


def template_status_changed(update: TemplateUpdate) -> TemplateStatusChanged:
    return TemplateStatusChanged(
        event_id=f"{update.template_id}:{update.event}:{update.occurred_at // 1000}",
        waba_id=update.waba_id, template_id=update.template_id, name=update.name,
        language=update.language, status=update.event, reason=update.reason,
        category=update.category, occurred_at=update.occurred_at)


UPGRADED_MESSAGES_PER_SECOND = 1000  # Meta's only documented upgrade: 80 -> 1,000 mps


def display_number_variants(display_phone_number: str) -> list[str]:
    """Meta sends digits only; our records may hold E.164 with '+'."""
    digits = "".join(ch for ch in display_phone_number if ch.isdigit())
    return [digits, f"+{digits}"] if digits else []


def throughput_changed(upgrade: ThroughputUpgrade, phone_number_id: str,
                       waba_id: str) -> ThroughputChanged:
    return ThroughputChanged(
        event_id=f"{phone_number_id}:THROUGHPUT_UPGRADE:{upgrade.occurred_at // 1000}",
        phone_number_id=phone_number_id, waba_id=waba_id or upgrade.waba_id,
        messages_per_second=UPGRADED_MESSAGES_PER_SECOND,
        messaging_limit=upgrade.messaging_limit, occurred_at=upgrade.occurred_at)


KNOWN_FIELDS = frozenset({
    "account_alerts", "account_review_update", "account_update", "automatic_events",
    "business_capability_update", "history", "message_template_components_update",
    "message_template_quality_update", "message_template_status_update", "messages",
    "partner_solutions", "payment_configuration_update", "phone_number_name_update",
    "phone_number_quality_update", "security", "smb_app_state_sync", "smb_message_echoes",
    "template_category_update", "user_preferences"})


def field_metric_label(field_name: str) -> str:
    return field_name if field_name in KNOWN_FIELDS else "other"


# --- converging a message's state -------------------------------------------------------------

# The status a message shows is the first of these that its history contains: delivery evidence
# beats any failure, a failure beats any earlier positive step, and positives only move forward.
# Being a function of the *set* of statuses seen, the result cannot depend on arrival order.
STATUS_PRECEDENCE: tuple[MessageStatus, ...] = (
    "read", "delivered", "failed", "expired", "rejected", "sent", "unknown", "approved",
    "accepted")
TERMINAL_FAILURES = frozenset({"failed", "expired", "rejected"})
_POSITIVE_BY_RANK = ("read", "delivered", "sent")  # the steps that may carry Meta's pricing


@dataclass(frozen=True)
class HistoryEntry:
    status: str
    at: int
    source: str
    implied: bool = False  # `delivered` inferred from a `read` (Meta may skip delivered)
    pricing: Pricing | None = None
    error: MetaError | None = None
    reason: str | None = None


@dataclass(frozen=True)
class MessageState:
    """What the state writer keeps of a message: one history entry per status, and the wamid.
    Status, error and pricing shown on the document are derived from them."""

    history: tuple[HistoryEntry, ...] = ()
    wamid: str | None = None

    def entry(self, status: str) -> HistoryEntry | None:
        return next((e for e in self.history if e.status == status), None)

    @property
    def status(self) -> MessageStatus:
        seen = {e.status for e in self.history}
        return next((s for s in STATUS_PRECEDENCE if s in seen), "accepted")

    @property
    def status_at(self) -> int | None:
        entry = self.entry(self.status)
        return entry.at if entry else None

    @property
    def error(self) -> MetaError | None:
        entry = self.entry(self.status)
        return entry.error if entry and self.status in TERMINAL_FAILURES else None

    @property
    def reason(self) -> str | None:
        entry = self.entry(self.status)
        return entry.reason if entry and self.status in TERMINAL_FAILURES else None

    @property
    def pricing(self) -> Pricing | None:
        """Meta's pricing from the furthest step that carried it (delivered/read over sent)."""
        for status in _POSITIVE_BY_RANK:
            entry = self.entry(status)
            if entry is not None and entry.pricing is not None:
                return entry.pricing
        return None


_RANK = {status: index for index, status in enumerate(reversed(STATUS_PRECEDENCE))}


def _ordered(entries: Iterable[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    # Clock order, but `accepted` first: Meta's timestamps have one-second resolution, so a
    # webhook's `sent` can carry an earlier time than ingest's millisecond `accepted`.
    return tuple(sorted(entries, key=lambda e: (e.status != "accepted", e.at,
                                                _RANK.get(e.status, -1), e.status)))


def _merge(existing: HistoryEntry | None, incoming: HistoryEntry) -> HistoryEntry:
    """One entry per status. A reported step replaces an implied one; between two reports of the
    same step the earliest wins, and details missing from it are taken from the other."""
    if existing is None:
        return incoming
    if existing.implied != incoming.implied:
        return incoming if existing.implied else existing
    first, other = sorted((existing, incoming), key=lambda e: (e.at, e.source))
    return replace(first, pricing=first.pricing or other.pricing, error=first.error or other.error,
                   reason=first.reason or other.reason)


def converge(state: MessageState, event: StatusChanged) -> MessageState | None:
    """The message's state after `event`, or None when the event changes nothing (a duplicate)."""
    entries = {e.status: e for e in state.history}
    incoming = HistoryEntry(status=event.status, at=event.occurred_at, source=event.source,
                            pricing=event.pricing, error=event.error, reason=event.reason)
    entries[event.status] = _merge(entries.get(event.status), incoming)
    if event.status == "read":
        implied = HistoryEntry(status="delivered", at=event.occurred_at, source=event.source,
                               implied=True)
        entries["delivered"] = _merge(entries.get("delivered"), implied)
    new_state = MessageState(history=_ordered(entries.values()),
                             wamid=state.wamid or event.wamid)
    return None if new_state == state else new_state


def _struct_or_none(value: Any, kind: type[Any]) -> Any:
    if value is None:
        return None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return None


def state_from_doc(doc: Mapping[str, Any] | None) -> MessageState:
    """The state kept in a `messages` document (a missing document is a fresh message).
    History entries we cannot read are skipped rather than failing the message."""
    if not doc:
        return MessageState()
    entries: list[HistoryEntry] = []
    for raw in doc.get("history") or ():
        at = epoch_ms(raw.get("at")) if isinstance(raw, Mapping) else None
        if at is None or not isinstance(raw.get("status"), str):
            continue
        try:
            entries.append(HistoryEntry(
                status=raw["status"], at=at,
                source=str(raw.get("source") or ""), implied=bool(raw.get("implied", False)),
                pricing=_struct_or_none(raw.get("pricing"), Pricing),
                error=_struct_or_none(raw.get("error"), MetaError), reason=raw.get("reason")))
        except (TypeError, ValueError):
            continue
    wamid = doc.get("wamid")
    return MessageState(history=_ordered(entries), wamid=wamid if isinstance(wamid, str) else None)


def _entry_doc(entry: HistoryEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"status": entry.status, "at": entry.at, "source": entry.source}
    if entry.implied:
        doc["implied"] = True
    if entry.pricing is not None:
        doc["pricing"] = msgspec.to_builtins(entry.pricing)
    if entry.error is not None:
        doc["error"] = msgspec.to_builtins(entry.error)
    if entry.reason is not None:
        doc["reason"] = entry.reason
    return doc


def state_fields(state: MessageState, now_ms: int) -> dict[str, Any]:
    """The fields of a `messages` document the state writer owns."""
    return {
        "status": state.status,
        "status_at": state.status_at,
        "status_reason": state.reason,
        "history": [_entry_doc(e) for e in state.history],
        "wamid": state.wamid,
        "error": msgspec.to_builtins(state.error) if state.error else None,
        "pricing": msgspec.to_builtins(state.pricing) if state.pricing else None,
        "updated_at": now_ms,
    }


def minimal_message_fields(event: StatusChanged) -> dict[str, Any]:
    """For a message whose status event is read before (or without) its request: the request
    completes the document when it comes (see state_writer.py)."""
    return {"account_id": event.account_id, "recipient_region": event.recipient_region,
            "phone_number_id": event.phone_number_id, "created_at": event.occurred_at,
            "created_by": "status"}


def with_accepted(state: MessageState, accepted_at: int) -> MessageState:
    """The state with the request's own `accepted` step (a message whose status was read first)."""
    entries = {e.status: e for e in state.history}
    entries["accepted"] = _merge(entries.get("accepted"),
                                 HistoryEntry(status="accepted", at=accepted_at, source="ingest"))
    return MessageState(history=_ordered(entries.values()), wamid=state.wamid)


def wamid_index_doc(wamid: str, ref: MessageRef) -> dict[str, Any]:
    return {"_id": wamid, "message_id": ref.message_id, "account_id": ref.account_id,
            "recipient_region": ref.recipient_region}


# --- the sweeper ------------------------------------------------------------------------------

OUTCOME_UNKNOWN = "outcome_unknown"


def outcome_unknown_failure(ref: MessageRef, now_ms: int) -> StatusChanged:
    """A send stuck in `unknown` past the timeout is declared failed so that billing releases
    its reservation. Source `sender`: it concludes the sender's ambiguous attempt (no webhook
    said so); a later delivered/read still wins over it."""
    return StatusChanged(
        event_id=f"{ref.message_id}:failed:{OUTCOME_UNKNOWN}", message_id=ref.message_id,
        account_id=ref.account_id, status="failed", occurred_at=now_ms, source="sender",
        recipient_region=ref.recipient_region, reason=OUTCOME_UNKNOWN)


DAY_MS = 86_400_000


@dataclass(frozen=True)
class SweepCutoffs:
    unknown_before: int  # status_at before this: outcome unknown for too long
    parked_before: int  # parked_at before this: Meta stopped retrying long ago
    retained_before: int  # created_at / last_inbound_at before this: anonymise or delete


def sweep_cutoffs(now_ms: int, unknown_timeout_seconds: int, parked_retention_days: int,
                  message_retention_days: int) -> SweepCutoffs:
    return SweepCutoffs(unknown_before=now_ms - unknown_timeout_seconds * 1000,
                        parked_before=now_ms - parked_retention_days * DAY_MS,
                        retained_before=now_ms - message_retention_days * DAY_MS)


def recipient_hash(recipient: str, key: bytes) -> str:
    """A keyed hash: still lets support match a number they are given, but is not reversible by
    hashing every phone number."""
    return "hmac-sha256:" + hmac.new(key, recipient.encode(), hashlib.sha256).hexdigest()


ANONYMISED_FIELDS_REMOVED = ("content", "request")


def anonymised_fields(doc: Mapping[str, Any], key: bytes, now_ms: int) -> dict[str, Any]:
    """The update that strips a message past retention down to its billing facts."""
    recipient = doc.get("recipient")
    update: dict[str, Any] = {"$set": {"anonymised_at": now_ms},
                              "$unset": {name: "" for name in ANONYMISED_FIELDS_REMOVED}}
    if isinstance(recipient, str) and not recipient.startswith("hmac-sha256:"):
        update["$set"]["recipient"] = recipient_hash(recipient, key)
    return update
