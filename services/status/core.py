"""status's pure decisions: webhook checks, splitting Meta's batches, resolving statuses to our
messages, converging a message's state, and the sweeper's verdicts.

No await, no clock, no I/O: `now` and everything read from the database come in as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container, Iterable, Mapping
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
    NumberQualityChanged,
    Pricing,
    StatusChanged,
    TemplateStatusChanged,
    ThroughputChanged,
    WabaStatusChanged,
)
from shared.pseudonyms import keyed_hash

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
_entry_head_decoder = msgspec.json.Decoder(meta.EntryHead)
_envelope_encoder = msgspec.json.Encoder()


def _accepted_head(body: bytes) -> meta.WebhookHead:
    """The envelope of a body we accept; InvalidRequest when it is not Meta's WhatsApp webhook
    JSON. Only the envelope is checked here: entries we cannot read are the processor's to
    count, and must not cost their siblings a 400 (Meta would retry the whole body for a week)."""
    try:
        head = _head_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest(
            "body is not a webhook JSON object",
            code="malformed_payload",
            details={"reason": str(exc)[:200]},
        ) from exc
    if head.object != WHATSAPP_OBJECT:
        raise InvalidRequest(f"object must be {WHATSAPP_OBJECT}", code="unexpected_object")
    return head


def _entry_waba_id(raw_entry: msgspec.Raw) -> str | None:
    """An entry's WABA id (`""` when it has none), or None when the entry is not readable."""
    try:
        return str(_entry_head_decoder.decode(raw_entry).id)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def webhook_event_id(waba_id: str, body: bytes) -> str:
    """Identical bodies (Meta's retries) get identical ids; the WABA prefix is the Kafka key."""
    return f"{waba_id}:{hashlib.sha256(body).hexdigest()}"


@dataclass(frozen=True)
class WabaRecord:
    """One webhooks.received record of a POST: the entries of one WABA, as Meta wrote them."""

    waba_id: str
    event_id: str
    payload: bytes


def split_by_waba(body: bytes) -> list[WabaRecord]:
    """A verified POST as one record per WABA its entries name, so that each WABA's webhooks
    travel on that WABA's key (Meta, and our simulator, may put several WABAs of one app into
    one POST; keyed by the first, the others would wait behind that WABA's backlog).

    - One WABA (the common case): one record, the body's own bytes, `webhook_event_id`.
    - Several: one record per WABA in the order each first appears, its entries in the body's
      order, each entry's bytes exactly as Meta sent them inside `{"object": ..., "entry": [...]}`
      (the envelope has no other member). An entry we cannot read (not an object, an id that is
      neither string nor number) rides with the first readable entry's WABA, as it did when the
      whole body did; an entry without an id is the WABA `""`.
    - Event ids are `<waba>:<sha256 of the whole POST>`: a retry of the same POST gives the same
      ids (consumers' writes and events are idempotent on Meta's ids), records of one POST differ
      by their WABA and share the POST's digest, and two different POSTs never share one.

    Raises InvalidRequest as `_accepted_head` does."""
    head = _accepted_head(body)
    wabas = [_entry_waba_id(raw) for raw in head.entry]
    first = next((w for w in wabas if w is not None), "")
    if all(w is None or w == first for w in wabas):
        return [WabaRecord(first, webhook_event_id(first, body), body)]
    groups: dict[str, list[msgspec.Raw]] = {}
    for raw, waba in zip(head.entry, wabas, strict=True):
        groups.setdefault(first if waba is None else waba, []).append(raw)
    digest = hashlib.sha256(body).hexdigest()
    return [
        WabaRecord(
            waba,
            f"{waba}:{digest}",
            _envelope_encoder.encode({"object": head.object, "entry": entries}),
        )
        for waba, entries in groups.items()
    ]


# --- splitting a webhook into what we act on --------------------------------------------------
#
# Every field Meta documents is either planned into an action below or counted as ignored (the
# table in README.md). Each change and each item is read on its own: one we cannot read is
# counted in `malformed_items` and costs nothing else. Values that reach the database are bounded
# here (times, codes), so no shape Meta (or anyone with the app secret) sends can make a write
# fail.

DAY_MS = 86_400_000
WINDOW_MS = DAY_MS  # the customer-service window: 24 h from the user's last message
_MAX_EPOCH_SECONDS = 100_000_000_000  # year 5138: anything later is not a time
_INT64 = 2**63 - 1


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
    recipient_id: str = ""  # the contact, as Meta names them


# Inbound types that do not open the customer-service window (reference §7: only what the
# user wrote does; system notices, reactions and what we cannot read are on the safe side).
NON_WINDOW_TYPES = frozenset(
    {"system", "reaction", "unsupported", "unknown", "edit", "revoke", "errors"}
)
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})
INBOUND, ECHO = "inbound", "echo"


@dataclass(frozen=True)
class InboundMessage:
    """A user's message (`messages[]`), or one the business sent from the WhatsApp Business
    app (`smb_message_echoes`, direction `echo`)."""

    wamid: str
    waba_id: str
    phone_number_id: str
    wa_id: str  # the contact: the user's number, or their BSUID when Meta gives no number
    direction: str  # inbound | echo
    message_type: str
    sent_at: int
    content: dict[str, Any]  # Meta's object for the type ({} when absent or not an object)
    raw: str  # the whole item as JSON text (Meta's keys are not always storable field names)
    user_id: str | None = None
    contact_name: str | None = None
    context_wamid: str | None = None
    media_id: str | None = None
    referral: dict[str, Any] | None = None
    group_id: str | None = None

    @property
    def opens_window(self) -> bool:
        return self.direction == INBOUND and self.message_type not in NON_WINDOW_TYPES

    @property
    def window_expires_at(self) -> int | None:
        return self.sent_at + WINDOW_MS if self.opens_window else None


@dataclass(frozen=True)
class TemplateUpdate:
    """Any of the four template fields: `kind` is status, quality, category or components."""

    kind: str
    waba_id: str
    template_id: str
    name: str
    language: str  # normalised to Meta's send form (en_US)
    occurred_at: int
    event: str = ""  # status: APPROVED, REJECTED, PAUSED, ...
    reason: str | None = None
    category: str | None = None  # status: the template's category; category: the new one
    quality: str | None = None
    previous: str | None = None  # quality or category before the change
    pending_category: str | None = None  # category: an announced change (correct_category)
    effective_at: int | None = None  # category: when the announced change takes effect


@dataclass(frozen=True)
class NumberUpdate:
    """`phone_number_quality_update` or `phone_number_name_update`: Meta names the number by
    its display number."""

    field: str
    waba_id: str
    display_phone_number: str
    event: str
    occurred_at: int
    messaging_limit: str | None = None  # quality: the portfolio's messaging tier now
    throughput_upgrade: bool = False
    name_decision: str | None = None
    requested_name: str | None = None
    name_rejection_reason: str | None = None


@dataclass(frozen=True)
class AccountUpdate:
    """An `account_update`, routed by `waba_info.waba_id` when present (entry.id may be a
    business portfolio for PARTNER_* events)."""

    waba_id: str
    event: str
    occurred_at: int
    ban_state: str | None = None


@dataclass(frozen=True)
class WabaFact:
    """A WABA-level fact we keep without acting on it (review decision, alert, security event,
    capability change). `messaging_limit` is set for capability changes that carry one."""

    waba_id: str
    field: str
    event: str
    occurred_at: int
    messaging_limit: str | None = None


@dataclass(frozen=True)
class UserPreference:
    phone_number_id: str
    waba_id: str
    wa_id: str
    user_id: str | None
    category: str
    value: str  # stop | resume | signup | ...
    detail: str
    at: int


@dataclass(frozen=True)
class WebhookError:
    """A value-level `errors[]` item (a problem of the app, account or number, not of one
    message)."""

    code: int
    title: str
    phone_number_id: str


@dataclass
class WebhookPlan:
    statuses: list[WebhookStatus] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)  # with echoes
    template_updates: list[TemplateUpdate] = field(default_factory=list)
    number_updates: list[NumberUpdate] = field(default_factory=list)
    account_updates: list[AccountUpdate] = field(default_factory=list)
    waba_facts: list[WabaFact] = field(default_factory=list)
    user_preferences: list[UserPreference] = field(default_factory=list)
    value_errors: list[WebhookError] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    malformed_items: int = 0

    @property
    def echoes(self) -> list[InboundMessage]:
        return [m for m in self.inbound if m.direction == ECHO]

    def counts(self) -> dict[str, int]:
        """How many of each kind, for logs and tests."""
        return {
            "statuses": len(self.statuses),
            "inbound": sum(1 for m in self.inbound if m.direction == INBOUND),
            "echoes": len(self.echoes),
            "template_updates": len(self.template_updates),
            "number_updates": len(self.number_updates),
            "account_updates": len(self.account_updates),
            "waba_facts": len(self.waba_facts),
            "user_preferences": len(self.user_preferences),
            "value_errors": len(self.value_errors),
            "ignored": len(self.ignored_fields),
            "malformed": self.malformed_items,
        }


_envelope_decoder = msgspec.json.Decoder(meta.Envelope)
_entry_decoder = msgspec.json.Decoder(meta.Entry)
_change_decoder = msgspec.json.Decoder(meta.Change)
_messages_value_decoder = msgspec.json.Decoder(meta.MessagesValue)
_status_decoder = msgspec.json.Decoder(meta.StatusItem)
_error_decoder = msgspec.json.Decoder(meta.MetaErrorItem)
_inbound_decoder = msgspec.json.Decoder(meta.InboundItem)
_context_decoder = msgspec.json.Decoder(meta.InboundContext)
_contact_decoder = msgspec.json.Decoder(meta.Contact)
_preference_decoder = msgspec.json.Decoder(meta.UserPreference)
_any_object_decoder = msgspec.json.Decoder(dict[str, Any])
_template_decoder = msgspec.json.Decoder(meta.TemplateValue)
_number_decoder = msgspec.json.Decoder(meta.PhoneNumberValue)
_account_decoder = msgspec.json.Decoder(meta.AccountUpdateValue)
_waba_info_decoder = msgspec.json.Decoder(meta.WabaInfo)
_ban_info_decoder = msgspec.json.Decoder(meta.BanInfo)
_capability_decoder = msgspec.json.Decoder(meta.BusinessCapabilityValue)
_event_decoder = msgspec.json.Decoder(meta.EventValue)
_ITEM_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


def plan_webhook(payload: bytes, received_at: int) -> WebhookPlan:
    """Everything a verified webhook asks us to do. Items that cannot be read are counted in
    `malformed_items` and skipped; only a body that is not a JSON object is an error."""
    try:
        envelope = _envelope_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PermanentError(
            "webhook payload is not Meta's envelope", code="malformed_webhook"
        ) from exc
    plan = WebhookPlan()
    for raw_entry in envelope.entry:
        try:
            entry = _entry_decoder.decode(raw_entry)
        except _ITEM_ERRORS:
            plan.malformed_items += 1
            continue
        waba_id = str(entry.id)
        entry_at = _entry_time_ms(entry.time, received_at)
        for raw_change in entry.changes:
            try:
                change = _change_decoder.decode(raw_change)
                if not change.value:
                    raise ValueError("change without a value")
                _plan_change(plan, waba_id, entry_at, received_at, change.field, change.value)
            except _ITEM_ERRORS:
                plan.malformed_items += 1
    return plan


_TEMPLATE_FIELDS = {
    "message_template_status_update": "status",
    "message_template_quality_update": "quality",
    "template_category_update": "category",
    "message_template_components_update": "components",
}
# WABA-level fields we keep the latest word of (number_states `waba:<id>`), no action taken.
_WABA_FACT_FIELDS = frozenset(
    {"account_review_update", "account_alerts", "security", "business_capability_update"}
)


def _plan_change(
    plan: WebhookPlan,
    waba_id: str,
    entry_at: int,
    received_at: int,
    field_name: str,
    value: msgspec.Raw,
) -> None:
    if field_name in ("messages", "smb_message_echoes", "user_preferences"):
        _plan_messages_value(plan, waba_id, received_at, field_name, value)
    elif field_name in _TEMPLATE_FIELDS:
        update = _template_update(_TEMPLATE_FIELDS[field_name], waba_id, entry_at, value)
        if update is None:
            plan.ignored_fields.append(field_name)
        else:
            plan.template_updates.append(update)
    elif field_name in ("phone_number_quality_update", "phone_number_name_update"):
        plan.number_updates.append(_number_update(field_name, waba_id, entry_at, value))
    elif field_name == "account_update":
        plan.account_updates.append(_account_update(waba_id, entry_at, value))
    elif field_name in _WABA_FACT_FIELDS:
        plan.waba_facts.append(_waba_fact(field_name, waba_id, entry_at, value))
    else:
        plan.ignored_fields.append(field_name)


def _plan_messages_value(
    plan: WebhookPlan, waba_id: str, received_at: int, field_name: str, value: msgspec.Raw
) -> None:
    messages_value = _messages_value_decoder.decode(value)
    metadata = messages_value.metadata
    phone_number_id = metadata.phone_number_id if metadata else ""
    contacts = _contact_names(messages_value.contacts)
    for raw_status in messages_value.statuses:
        try:
            plan.statuses.append(parse_status_item(raw_status, waba_id, phone_number_id))
        except _ITEM_ERRORS:
            plan.malformed_items += 1
    for direction, items in (
        (INBOUND, messages_value.messages),
        (ECHO, messages_value.message_echoes),
    ):
        for raw_message in items:
            try:
                plan.inbound.append(
                    parse_inbound_item(raw_message, waba_id, phone_number_id, direction, contacts)
                )
            except _ITEM_ERRORS:
                plan.malformed_items += 1
    for raw_preference in messages_value.user_preferences:
        try:
            plan.user_preferences.append(_user_preference(raw_preference, waba_id, phone_number_id))
        except _ITEM_ERRORS:
            plan.malformed_items += 1
    for raw_error in messages_value.errors:
        try:
            error = _error_decoder.decode(raw_error)
        except _ITEM_ERRORS:
            plan.malformed_items += 1
            continue
        plan.value_errors.append(
            WebhookError(
                code=_error_code(error.code),
                title=error.title or error.message,
                phone_number_id=phone_number_id,
            )
        )
    if field_name == "user_preferences" and not messages_value.user_preferences:
        plan.ignored_fields.append(field_name)


def parse_status_item(raw: bytes, waba_id: str, phone_number_id: str) -> WebhookStatus:
    """One `statuses[]` item (also used to replay a parked one)."""
    item = _status_decoder.decode(raw)
    if not item.id:
        raise ValueError("status without a wamid")
    errors: list[meta.MetaErrorItem] = []
    for raw_error in item.errors:
        try:
            errors.append(_error_decoder.decode(raw_error))
        except _ITEM_ERRORS:
            continue  # an error we cannot read costs its details, not the status
    return WebhookStatus(
        wamid=item.id,
        meta_status=item.status,
        occurred_at=_epoch_ms(item.timestamp),
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        callback_data=item.biz_opaque_callback_data,
        pricing=_pricing(item.pricing) if item.pricing is not None else None,
        error=_first_error(errors),
        raw=bytes(raw),
        recipient_id=item.recipient_id,
    )


def parse_inbound_item(
    raw: bytes,
    waba_id: str,
    phone_number_id: str,
    direction: str,
    contact_names: Mapping[str, str] | None = None,
) -> InboundMessage:
    """One `messages[]` item (direction inbound) or `message_echoes[]` item (echo)."""
    item = _inbound_decoder.decode(raw)
    if direction == ECHO:
        user_id = item.to_user_id or None
        wa_id = item.to or item.to_user_id
    else:
        user_id = item.from_user_id or None
        wa_id = item.sender or item.from_user_id
    if not item.id or not wa_id:
        raise ValueError("message without an id or a contact")
    whole = _any_object_decoder.decode(raw)
    content = whole.get(item.type)
    content = content if isinstance(content, dict) else {}
    referral = whole.get("referral")
    names = contact_names or {}
    return InboundMessage(
        wamid=item.id,
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        wa_id=wa_id,
        direction=direction,
        message_type=item.type,
        sent_at=_epoch_ms(item.timestamp),
        content=content,
        raw=bytes(raw).decode(),
        user_id=user_id,
        contact_name=(
            names.get(wa_id) or (names.get(user_id) if user_id else None) or names.get("")
        ),
        context_wamid=_context_wamid(item, content),
        media_id=_media_id(item.type, whole),
        referral=referral if isinstance(referral, dict) and referral else None,
        group_id=item.group_id or None,
    )


def _context_wamid(item: meta.InboundItem, content: Mapping[str, Any]) -> str | None:
    """The message this one answers: `context.id` (a reply, a button tap), or the message a
    reaction is about."""
    if item.context:
        try:
            context = _context_decoder.decode(item.context)
        except _ITEM_ERRORS:
            context = None
        if context is not None and context.id:
            return context.id
    target = content.get("message_id") if item.type == "reaction" else None
    return target if isinstance(target, str) and target else None


def _media_id(message_type: str, whole: Mapping[str, Any]) -> str | None:
    media = whole.get(message_type) if message_type in MEDIA_TYPES else None
    media_id = media.get("id") if isinstance(media, dict) else None
    return media_id if isinstance(media_id, str) and media_id else None


def _contact_names(raw_contacts: list[msgspec.Raw]) -> dict[str, str]:
    """Profile names by wa_id and by BSUID; under "" too when there is exactly one contact
    (Meta's `from` and `wa_id` may differ, e.g. Brazil's ninth digit)."""
    names: dict[str, str] = {}
    found: list[str] = []
    for raw in raw_contacts:
        try:
            contact = _contact_decoder.decode(raw)
        except _ITEM_ERRORS:
            continue
        name = contact.profile.name if contact.profile else ""
        if not name:
            continue
        found.append(name)
        for key in (contact.wa_id, contact.user_id):
            if key:
                names[key] = name
    if len(found) == 1:
        names[""] = found[0]
    return names


def _user_preference(raw: bytes, waba_id: str, phone_number_id: str) -> UserPreference:
    item = _preference_decoder.decode(raw)
    wa_id = item.wa_id or item.user_id
    if not wa_id or not item.category or not item.value:
        raise ValueError("preference without a user, category or value")
    return UserPreference(
        phone_number_id=phone_number_id,
        waba_id=waba_id,
        wa_id=wa_id,
        user_id=item.user_id or None,
        category=item.category,
        value=item.value,
        detail=item.detail,
        at=_epoch_ms(item.timestamp),
    )


def _template_update(
    kind: str, waba_id: str, entry_at: int, value: msgspec.Raw
) -> TemplateUpdate | None:
    template = _template_decoder.decode(value)
    # Meta's own quality-update example is labelled message_template_status_update: a status
    # update with a quality score and no event is a quality update.
    if kind == "status" and template.event is None and template.new_quality_score is not None:
        kind = "quality"
    name, template_id = template.message_template_name, str(template.message_template_id)
    if not name and not template_id:
        return None
    common: dict[str, Any] = {
        "kind": kind,
        "waba_id": waba_id,
        "template_id": template_id,
        "name": name,
        "language": normalise_language(template.message_template_language),
        "occurred_at": entry_at,
    }
    if kind == "status":
        if not template.event:
            return None  # a status update that names no status: nothing to apply
        return TemplateUpdate(
            **common,
            event=template.event,
            reason=template.reason,
            category=template.message_template_category,
        )
    if kind == "quality":
        return TemplateUpdate(
            **common, quality=template.new_quality_score, previous=template.previous_quality_score
        )
    if kind == "category":
        if template.previous_category is not None:  # the change is done
            return TemplateUpdate(
                **common, category=template.new_category, previous=template.previous_category
            )
        effective = template.category_update_timestamp
        return TemplateUpdate(
            **common,
            pending_category=template.correct_category,
            effective_at=_entry_time_ms(effective, entry_at) if effective is not None else None,
        )
    return TemplateUpdate(**common)  # components: the stored shape must be synced again


# Meta's tier names by the integer some webhooks carry instead (business_capability_update
# shows `2000`; -1 means unlimited).
_TIER_BY_COUNT = {
    50: "TIER_50",
    250: "TIER_250",
    1000: "TIER_1K",
    2000: "TIER_2K",
    10000: "TIER_10K",
    100000: "TIER_100K",
    -1: "TIER_UNLIMITED",
}


def messaging_tier(value: str | int | None) -> str | None:
    """A messaging limit as Meta's tier name; None when absent or not a tier."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _TIER_BY_COUNT.get(value)
    text = value.strip().upper()
    if text.lstrip("-").isdigit() and len(text) < 10:
        return _TIER_BY_COUNT.get(int(text))
    return text if text.startswith("TIER_") and len(text) <= 32 else None


def _number_update(
    field_name: str, waba_id: str, entry_at: int, value: msgspec.Raw
) -> NumberUpdate:
    number = _number_decoder.decode(value)
    display = str(number.display_phone_number)
    if field_name == "phone_number_name_update":
        return NumberUpdate(
            field=field_name,
            waba_id=waba_id,
            display_phone_number=display,
            event=number.decision or "",
            occurred_at=entry_at,
            name_decision=number.decision,
            requested_name=number.requested_verified_name,
            name_rejection_reason=number.rejection_reason,
        )
    # `max_daily_conversations_per_business` replaces `current_limit` (removed Feb 2026).
    limit = messaging_tier(number.max_daily_conversations_per_business) or messaging_tier(
        number.current_limit
    )
    return NumberUpdate(
        field=field_name,
        waba_id=waba_id,
        display_phone_number=display,
        event=number.event,
        occurred_at=entry_at,
        messaging_limit=limit,
        throughput_upgrade=number.event == "THROUGHPUT_UPGRADE",
    )


def _account_update(waba_id: str, entry_at: int, value: msgspec.Raw) -> AccountUpdate:
    account = _account_decoder.decode(value)
    routed = waba_id
    if account.waba_info:
        try:
            info = _waba_info_decoder.decode(account.waba_info)
            routed = str(info.waba_id) or waba_id
        except _ITEM_ERRORS:
            pass
    ban_state: str | None = None
    if account.ban_info:
        try:
            ban_state = _ban_info_decoder.decode(account.ban_info).waba_ban_state or None
        except _ITEM_ERRORS:
            pass
    return AccountUpdate(
        waba_id=routed, event=account.event, occurred_at=entry_at, ban_state=ban_state
    )


def _waba_fact(field_name: str, waba_id: str, entry_at: int, value: msgspec.Raw) -> WabaFact:
    if field_name == "business_capability_update":
        capability = _capability_decoder.decode(value)
        limit = messaging_tier(capability.max_daily_conversations_per_business)
        return WabaFact(
            waba_id=waba_id,
            field=field_name,
            event=limit or "",
            occurred_at=entry_at,
            messaging_limit=limit,
        )
    fact = _event_decoder.decode(value)
    event = fact.event or fact.decision
    if field_name == "account_alerts":
        alert = _any_object_decoder.decode(value).get("alert_info")
        alert_type = alert.get("alert_type") if isinstance(alert, dict) else None
        event = alert_type if isinstance(alert_type, str) else event
    return WabaFact(waba_id=waba_id, field=field_name, event=event[:200], occurred_at=entry_at)


def _entry_time_ms(seconds: int | float | None, default: int) -> int:
    if seconds is None or not 0 <= seconds <= _MAX_EPOCH_SECONDS:
        return default
    return int(seconds * 1000)


def _epoch_ms(timestamp: str | int) -> int:
    """Meta's timestamps are Unix seconds, usually as a string. ValueError when it is not one
    (the item is then malformed)."""
    seconds = int(timestamp)
    if not 0 <= seconds <= _MAX_EPOCH_SECONDS:
        raise ValueError("timestamp out of range")
    return seconds * 1000


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
    return Pricing(
        billable=billable,
        pricing_model=pricing.pricing_model or "PMP",
        type=pricing_type,
        category=pricing.category.replace("-", "_"),
    )


def _error_code(code: int | str) -> int:
    try:
        value = int(code)
    except ValueError:
        return 0
    return value if -_INT64 <= value <= _INT64 else 0


def _first_error(errors: list[meta.MetaErrorItem]) -> MetaError | None:
    if not errors:
        return None
    first = errors[0]
    details = first.error_data.details if first.error_data else ""
    return MetaError(
        code=_error_code(first.code), title=first.title or first.message, details=details
    )


def normalise_language(language: str) -> str:
    """Template webhooks say `en-US`; sends and our templates use `en_US`."""
    return language.replace("-", "_")


# --- statuses: from Meta's word to our event --------------------------------------------------

# `played` (first play of a voice message) only ever follows `read` and carries neither pricing
# nor a new lifecycle step, so it is counted and not published.
_MESSAGE_STATUS_OF_META: dict[str, MessageStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
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
    return MessageRef(
        message_id=message_id,
        account_id=str(doc["account_id"]),
        recipient_region=str(doc.get("recipient_region") or ""),
    )


def callback_message_id(status: WebhookStatus) -> str | None:
    """Our message id from `biz_opaque_callback_data`, when it looks like one of ours (another
    app subscribed to the same WABA may put anything there)."""
    data = status.callback_data
    return data if data and data.startswith("msg_") else None


@dataclass(frozen=True)
class CallbackMessage:
    """One of our messages as its callback data finds it: the reference, and the wamid its
    document carries ("" until the state writer stored the sender's `sent`)."""

    ref: MessageRef
    wamid: str = ""


def callback_message_from_doc(doc: Mapping[str, Any] | None) -> CallbackMessage | None:
    """A `messages` document read by callback data; None when it is not usable."""
    ref = message_ref_from_doc(doc)
    if ref is None or doc is None:
        return None
    wamid = doc.get("wamid")
    return CallbackMessage(ref, wamid if isinstance(wamid, str) else "")


def callback_ids_to_read(
    statuses: Iterable[WebhookStatus], known_wamids: Container[str]
) -> list[str]:
    """The message ids, once each and in order, a batch reads by callback data: those of the
    statuses we publish whose wamid is not known (neither remembered nor indexed)."""
    wanted: dict[str, None] = {}
    for status in statuses:
        if status.wamid in known_wamids or message_status_of(status.meta_status) is None:
            continue
        message_id = callback_message_id(status)
        if message_id is not None:
            wanted[message_id] = None
    return list(wanted)


def wamid_confirmed(status: WebhookStatus, found: CallbackMessage) -> bool:
    """Whether a message found by callback data may be remembered under the status's wamid:
    only when its document already carries that wamid (the one the state writer indexes for
    it). Before the sender's `sent` is stored the document has none, and the callback data
    alone (which another app on the WABA could also set) is no proof of the wamid."""
    return bool(found.wamid) and found.wamid == status.wamid


def resolve_status(
    by_wamid: MessageRef | None, by_callback: MessageRef | None
) -> MessageRef | None:
    """The wamid index is authoritative; the callback data covers the time before the sender's
    `sent` is recorded; with neither, the status is parked (None)."""
    return by_wamid or by_callback


def status_changed_from_webhook(status: WebhookStatus, ref: MessageRef) -> StatusChanged | None:
    """The event for a resolved status item; None for statuses we do not publish."""
    our_status = message_status_of(status.meta_status)
    if our_status is None:
        return None
    return StatusChanged(
        event_id=f"{status.wamid}:{status.meta_status}",
        message_id=ref.message_id,
        account_id=ref.account_id,
        status=our_status,
        occurred_at=status.occurred_at,
        source="webhook",
        phone_number_id=status.phone_number_id,
        recipient_region=ref.recipient_region,
        wamid=status.wamid,
        error=status.error,
        pricing=status.pricing,
    )


def parked_status_id(status: WebhookStatus) -> str:
    return f"{status.wamid}:{status.meta_status}"


def parked_status_doc(status: WebhookStatus, now_ms: int) -> dict[str, Any]:
    """A status whose wamid is not known yet, kept as Meta sent it (as text: Meta's keys are
    not guaranteed to be storable field names)."""
    return {
        "_id": parked_status_id(status),
        "wamid": status.wamid,
        "status": status.meta_status,
        "raw": status.raw.decode(),
        "waba_id": status.waba_id,
        "phone_number_id": status.phone_number_id,
        "parked_at": now_ms,
    }


def status_from_parked(doc: Mapping[str, Any]) -> WebhookStatus:
    return parse_status_item(
        str(doc["raw"]).encode(), str(doc.get("waba_id", "")), str(doc.get("phone_number_id", ""))
    )


# --- inbound messages and conversations -------------------------------------------------------


def conversation_id(phone_number_id: str, wa_id: str) -> str:
    return f"{phone_number_id}:{wa_id}"


def inbound_doc(
    message: InboundMessage, account_id: str | None, received_at: int
) -> dict[str, Any]:
    """The `inbound_messages` document (shape in shared/collections.py)."""
    doc: dict[str, Any] = {
        "_id": message.wamid,
        "account_id": account_id,
        "waba_id": message.waba_id,
        "phone_number_id": message.phone_number_id,
        "wa_id": message.wa_id,
        "direction": message.direction,
        "type": message.message_type,
        "content": message.raw,
        "sent_at": message.sent_at,
        "received_at": received_at,
        "opens_window": message.opens_window,
    }
    optional = {
        "media_id": message.media_id,
        "context_wamid": message.context_wamid,
        "contact_name": message.contact_name,
        "user_id": message.user_id,
        "group_id": message.group_id,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    if message.referral is not None:
        doc["referral"] = True  # the referral itself is in `content` (Meta's item)
    return doc


def conversation_update(
    message: InboundMessage, account_id: str | None, now_ms: int
) -> dict[str, Any]:
    """The upsert of the conversation a message belongs to: times only move forward ($max),
    so a late or replayed webhook never rewinds the window."""
    latest: dict[str, Any] = {"last_message_at": message.sent_at}
    if message.opens_window:
        latest["last_inbound_at"] = message.sent_at
        latest["window_expires_at"] = message.sent_at + WINDOW_MS
    fields: dict[str, Any] = {
        "account_id": account_id,
        "waba_id": message.waba_id,
        "updated_at": now_ms,
    }
    if message.contact_name:
        fields["contact_name"] = message.contact_name
    if message.user_id:
        fields["user_id"] = message.user_id
    return {
        "$max": latest,
        "$set": fields,
        "$setOnInsert": {"phone_number_id": message.phone_number_id, "wa_id": message.wa_id},
    }


def inbound_received(
    message: InboundMessage, account_id: str | None, received_at: int
) -> InboundReceived:
    return InboundReceived(
        event_id=message.wamid,
        phone_number_id=message.phone_number_id,
        waba_id=message.waba_id,
        sender=message.wa_id,
        wamid=message.wamid,
        message_type=message.message_type,
        sent_at=message.sent_at,
        content=message.content,
        account_id=account_id,
        contact_name=message.contact_name,
        user_id=message.user_id,
        context_wamid=message.context_wamid,
        media_id=message.media_id,
        referral=message.referral,
        opens_window=message.opens_window,
        window_expires_at=message.window_expires_at,
        received_at=received_at,
    )


KNOWN_INBOUND_TYPES = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "reaction",
        "order",
        "system",
        "unsupported",
        "unknown",
        "request_welcome",
        "edit",
        "revoke",
        "errors",
        "media_placeholder",
    }
)


def inbound_type_label(message_type: str) -> str:
    return message_type if message_type in KNOWN_INBOUND_TYPES else "other"


# --- templates --------------------------------------------------------------------------------

KNOWN_TEMPLATE_EVENTS = frozenset(
    {
        "APPROVED",
        "ARCHIVED",
        "DELETED",
        "DISABLED",
        "FLAGGED",
        "IN_APPEAL",
        "LIMIT_EXCEEDED",
        "LOCKED",
        "PAUSED",
        "PENDING",
        "REINSTATED",
        "PENDING_DELETION",
        "REJECTED",
        "UNARCHIVED",
    }
)


def template_event_label(event: str) -> str:
    return event if event in KNOWN_TEMPLATE_EVENTS else "other"


def template_doc_id(waba_id: str, name: str, language: str) -> str:
    """The `templates` id the admin CLI's sync uses too."""
    return f"{waba_id}:{name}:{language}"


# Each kind writes its own fields and keeps its own clock, so a late webhook of one kind never
# undoes a later one of the same kind, and kinds never block each other.
TEMPLATE_EVENT_AT = {
    "status": "status_event_at",
    "quality": "quality_event_at",
    "category": "category_event_at",
    "components": "components_event_at",
}


def template_fields(update: TemplateUpdate) -> dict[str, Any]:
    """What a template webhook sets on the stored template."""
    at = update.occurred_at
    if update.kind == "status":
        fields: dict[str, Any] = {
            "status": update.event,
            "status_reason": update.reason,
            "status_event_at": at,
        }
        if update.category:
            fields["category"] = update.category.upper()
        return fields
    if update.kind == "quality":
        return {"quality_score": update.quality, "quality_event_at": at}
    if update.kind == "category":
        if update.category is not None:  # done: the category changed
            return {
                "category": update.category.upper(),
                "previous_category": update.previous,
                "pending_category": None,
                "category_event_at": at,
            }
        return {
            "pending_category": update.pending_category,
            "pending_category_at": update.effective_at,
            "category_event_at": at,
        }
    # components changed at Meta: the shape ingest checks parameters against is stale
    return {"needs_sync": True, "components_event_at": at}


def minimal_template_doc(update: TemplateUpdate) -> dict[str, Any]:
    """A template we never synced (created in WhatsApp Manager, say): what the webhook says,
    marked `shape_known: false` until the admin CLI's sync replaces it with Meta's full
    template."""
    return {
        "_id": template_doc_id(update.waba_id, update.name, update.language),
        "waba_id": update.waba_id,
        "template_id": update.template_id,
        "name": update.name,
        "language": update.language,
        "shape_known": False,
        "created_by": "status",
        **template_fields(update),
    }


def template_status_changed(update: TemplateUpdate) -> TemplateStatusChanged:
    return TemplateStatusChanged(
        event_id=f"{update.template_id}:{update.event}:{update.occurred_at // 1000}",
        waba_id=update.waba_id,
        template_id=update.template_id,
        name=update.name,
        language=update.language,
        status=update.event,
        reason=update.reason,
        category=update.category,
        occurred_at=update.occurred_at,
    )


# --- phone numbers: throughput, tier, name ----------------------------------------------------

UPGRADED_MESSAGES_PER_SECOND = 1000  # Meta's only documented upgrade: 80 -> 1,000 mps
DEFAULT_MESSAGES_PER_SECOND = 80


@dataclass(frozen=True)
class NumberRef:
    """A phone number registered with us (the admin CLI's `phone_numbers` document)."""

    phone_number_id: str
    account_id: str | None
    waba_id: str
    messages_per_second: int = DEFAULT_MESSAGES_PER_SECOND
    messaging_limit: str | None = None


def number_ref_from_doc(doc: Mapping[str, Any] | None) -> NumberRef | None:
    if not doc or not isinstance(doc.get("_id"), str):
        return None
    mps = _stored_int(doc, "throughput_mps")
    limit = doc.get("messaging_limit")
    return NumberRef(
        phone_number_id=doc["_id"],
        account_id=str(doc["account_id"]) if doc.get("account_id") else None,
        waba_id=str(doc.get("waba_id") or ""),
        messages_per_second=mps if mps > 0 else DEFAULT_MESSAGES_PER_SECOND,
        messaging_limit=limit if isinstance(limit, str) else None,
    )


def display_number_variants(display_phone_number: str) -> list[str]:
    """Meta sends digits only; our records may hold E.164 with '+'."""
    digits = "".join(ch for ch in display_phone_number if ch.isdigit())
    return [digits, f"+{digits}"] if digits else []


def waba_state_id(waba_id: str) -> str:
    """`number_states` keeps WABA-level facts under this id (numbers are keyed by their id)."""
    return f"waba:{waba_id}"


def _stored_int(doc: Mapping[str, Any], name: str) -> int:
    """An integer read back from the database as a plain int (the driver returns large ones as
    bson.Int64, which the event encoder does not know)."""
    value = doc.get(name)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Pacing:
    """A number's pacing facts as status knows them, each with the time Meta said so."""

    messages_per_second: int
    mps_at: int
    messaging_limit: str | None
    limit_at: int


def pacing_of(state: Mapping[str, Any] | None, number: NumberRef) -> Pacing:
    """What `number_states` knows, else the number's registered values."""
    state = state or {}
    mps, limit = _stored_int(state, "messages_per_second"), state.get("messaging_limit")
    return Pacing(
        messages_per_second=mps if mps > 0 else number.messages_per_second,
        mps_at=_stored_int(state, "mps_at"),
        messaging_limit=limit if isinstance(limit, str) else number.messaging_limit,
        limit_at=_stored_int(state, "limit_at"),
    )


def next_pacing(
    current: Pacing, messages_per_second: int | None, messaging_limit: str | None, at: int
) -> Pacing | None:
    """The pacing after Meta's word at `at`; None when it changes nothing (a stale or repeated
    webhook). Each fact only moves forward in time on its own."""
    mps, mps_at = current.messages_per_second, current.mps_at
    limit, limit_at = current.messaging_limit, current.limit_at
    if messages_per_second is not None and at >= mps_at:
        mps, mps_at = messages_per_second, at
    if messaging_limit is not None and at >= limit_at:
        limit, limit_at = messaging_limit, at
    after = Pacing(mps, mps_at, limit, limit_at)
    return None if after == current else after


def pacing_fields(pacing: Pacing) -> dict[str, Any]:
    return {
        "messages_per_second": pacing.messages_per_second,
        "mps_at": pacing.mps_at,
        "messaging_limit": pacing.messaging_limit,
        "limit_at": pacing.limit_at,
    }


def throughput_changed(number: NumberRef, pacing: Pacing, event: str, at: int) -> ThroughputChanged:
    """The number's whole current pacing (the topic is compacted by number: an event that
    carried only the tier would erase an earlier upgrade)."""
    return ThroughputChanged(
        event_id=f"{number.phone_number_id}:{event or 'update'}:{at // 1000}",
        phone_number_id=number.phone_number_id,
        waba_id=number.waba_id,
        messages_per_second=pacing.messages_per_second,
        messaging_limit=pacing.messaging_limit,
        occurred_at=max(pacing.mps_at, pacing.limit_at),
    )


def number_quality_changed(number: NumberRef, update: NumberUpdate) -> NumberQualityChanged:
    """A quality webhook of a registered number, as the event notify tells the client about
    (every one: a flag that changes no pacing matters to the business too). Its id derives
    from Meta's fields, so a repeated webhook is the same event."""
    event = update.event or "update"
    return NumberQualityChanged(
        event_id=f"{number.phone_number_id}:{event}:{update.occurred_at // 1000}",
        phone_number_id=number.phone_number_id,
        waba_id=number.waba_id,
        account_id=number.account_id,
        display_phone_number=update.display_phone_number,
        event=update.event,
        messaging_limit=update.messaging_limit,
        messages_per_second=UPGRADED_MESSAGES_PER_SECOND if update.throughput_upgrade else None,
        occurred_at=update.occurred_at,
    )


def number_update_fields(update: NumberUpdate) -> dict[str, Any]:
    """What a number webhook records in `number_states` besides pacing."""
    if update.field == "phone_number_name_update":
        return {
            "name_decision": update.name_decision,
            "requested_verified_name": update.requested_name,
            "name_rejection_reason": update.name_rejection_reason,
            "name_event_at": update.occurred_at,
        }
    return {"quality_event": update.event, "quality_event_at": update.occurred_at}


# --- WABAs: holds and facts -------------------------------------------------------------------

# account_update events that hold or release a WABA, as (hold, on?). A WABA is held while any
# of its holds is on; each hold moves only forward in time.
_HOLD_OF_EVENT: dict[str, tuple[str, bool]] = {
    "ACCOUNT_DELETED": ("deleted", True),
    "PARTNER_REMOVED": ("partner_removed", True),
    "PARTNER_ADDED": ("partner_removed", False),
    "PARTNER_APP_UNINSTALLED": ("app_uninstalled", True),
    "PARTNER_APP_INSTALLED": ("app_uninstalled", False),
}
_HOLD_OF_BAN_STATE = {"DISABLE": True, "REINSTATE": False}
HOLDS = ("banned", "deleted", "partner_removed", "app_uninstalled")


def hold_change(update: AccountUpdate) -> tuple[str, bool] | None:
    """Which hold this account_update turns on or off; None for every other event
    (SCHEDULE_FOR_DISABLE only warns)."""
    if update.event == "DISABLED_UPDATE":
        on = _HOLD_OF_BAN_STATE.get(update.ban_state or "")
        return None if on is None else ("banned", on)
    return _HOLD_OF_EVENT.get(update.event)


def held_reasons(holds: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name in HOLDS
        if isinstance(holds.get(name), Mapping) and holds[name].get("on") is True
    ]


def apply_hold(
    holds: Mapping[str, Any] | None, hold: str, on: bool, at: int
) -> dict[str, Any] | None:
    """The WABA's holds after this change; None when it is stale (an older webhook than the
    one that last set this hold) or changes nothing."""
    current = {
        name: {"on": value.get("on") is True, "at": _stored_int(value, "at")}
        for name, value in (holds or {}).items()
        if isinstance(value, Mapping)
    }
    known = current.get(hold)
    if known is not None and (known["at"] > at or known["on"] is on):
        return None
    current[hold] = {"on": on, "at": at}
    return current


def waba_status_changed(
    waba_id: str, holds: Mapping[str, Any], event: str, at: int
) -> WabaStatusChanged:
    reasons = held_reasons(holds)
    return WabaStatusChanged(
        event_id=f"{waba_id}:{event}:{at // 1000}",
        waba_id=waba_id,
        held=bool(reasons),
        reasons=reasons,
        event=event,
        occurred_at=at,
    )


def waba_fact_fields(fact: WabaFact) -> dict[str, Any]:
    fields: dict[str, Any] = {
        f"{fact.field}.event": fact.event,
        f"{fact.field}.at": fact.occurred_at,
    }
    if fact.messaging_limit is not None:
        fields["messaging_limit"] = fact.messaging_limit
    return fields


def account_event_fields(update: AccountUpdate) -> dict[str, Any]:
    return {
        "account_update.event": update.event[:200],
        "account_update.at": update.occurred_at,
        **({"ban_state": update.ban_state[:64]} if update.ban_state else {}),
    }


# --- user preferences -------------------------------------------------------------------------


def user_preference_doc(preference: UserPreference, account_id: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": f"{preference.phone_number_id}:{preference.wa_id}:{preference.category}",
        "account_id": account_id,
        "phone_number_id": preference.phone_number_id,
        "waba_id": preference.waba_id,
        "wa_id": preference.wa_id,
        "category": preference.category,
        "value": preference.value,
        "at": preference.at,
        "detail": preference.detail,
    }
    if preference.user_id:
        doc["user_id"] = preference.user_id
    return doc


# --- opt-out keywords ---------------------------------------------------------------------------

# What a user may type a keyword in: a text message, or the quick-reply button of a template
# (whose text is the button's label).
KEYWORD_TYPES = {"text": "body", "button": "text"}


def keyword_text(message: InboundMessage) -> str | None:
    """The text of a user's message that may be an opt-out or opt-in keyword; None for an
    echo, a message of another type, or one without text."""
    field_name = KEYWORD_TYPES.get(message.message_type)
    if message.direction != INBOUND or field_name is None:
        return None
    text = message.content.get(field_name)
    return text if isinstance(text, str) and text else None


MARKETING_PREFERENCE = "marketing_messages"
# Meta's "user has stopped receipt of marketing messages": a failed marketing template tells us
# of an opt-out we may not have heard of (made before the number came to us, or a lost
# user_preferences webhook).
MARKETING_STOPPED = 131050


def stopped_marketing(status: WebhookStatus) -> bool:
    return (
        status.meta_status == "failed"
        and status.error is not None
        and status.error.code == MARKETING_STOPPED
        and bool(status.recipient_id)
        and bool(status.phone_number_id)
    )


# Meta's user_preferences values that change the marketing suppression list.
PREFERENCE_SUPPRESSES = {"stop": True, "resume": False}


# --- what we count ----------------------------------------------------------------------------

KNOWN_FIELDS = frozenset(
    {
        "account_alerts",
        "account_review_update",
        "account_update",
        "automatic_events",
        "business_capability_update",
        "calls",
        "flows",
        "group_lifecycle_update",
        "group_participants_update",
        "group_settings_update",
        "history",
        "message_template_components_update",
        "message_template_quality_update",
        "message_template_status_update",
        "messages",
        "partner_solutions",
        "payment_configuration_update",
        "phone_number_name_update",
        "phone_number_quality_update",
        "security",
        "smb_app_state_sync",
        "smb_message_echoes",
        "template_category_update",
        "user_preferences",
    }
)


def field_metric_label(field_name: str) -> str:
    return field_name if field_name in KNOWN_FIELDS else "other"


KNOWN_ACCOUNT_EVENTS = frozenset(
    {
        "ACCOUNT_DELETED",
        "ACCOUNT_OFFBOARDED",
        "ACCOUNT_RECONNECTED",
        "ACCOUNT_RESTRICTION",
        "ACCOUNT_VIOLATION",
        "AD_ACCOUNT_LINKED",
        "AUTH_INTL_PRICE_ELIGIBILITY_UPDATE",
        "BUSINESS_PRIMARY_LOCATION_COUNTRY_UPDATE",
        "DISABLED_UPDATE",
        "MM_LITE_TERMS_SIGNED",
        "PARTNER_ADDED",
        "PARTNER_APP_INSTALLED",
        "PARTNER_APP_UNINSTALLED",
        "PARTNER_CLIENT_CERTIFICATION_NEEDED",
        "PARTNER_CLIENT_CERTIFICATION_STATUS_UPDATE",
        "PARTNER_REMOVED",
        "VERIFIED_ACCOUNT",
        "VOLUME_BASED_PRICING_TIER_UPDATE",
    }
)


def account_event_label(event: str) -> str:
    return event if event in KNOWN_ACCOUNT_EVENTS else "other"


# --- converging a message's state -------------------------------------------------------------

# The status a message shows is the first of these that its history contains: delivery evidence
# beats any failure, a failure beats any earlier positive step, and positives only move forward.
# Being a function of the *set* of statuses seen, the result cannot depend on arrival order.
STATUS_PRECEDENCE: tuple[MessageStatus, ...] = (
    "read",
    "delivered",
    "failed",
    "expired",
    "rejected",
    "sent",
    "unknown",
    "approved",
    "accepted",
)
TERMINAL_FAILURES = frozenset({"failed", "expired", "rejected"})
_POSITIVE_BY_RANK = ("read", "delivered", "sent")  # the steps that may carry Meta's pricing


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    status: str
    at: int
    source: str
    implied: bool = False  # `delivered` inferred from a `read` (Meta may skip delivered)
    pricing: Pricing | None = None
    error: MetaError | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
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


_RANK: dict[str, int] = {status: index for index, status in enumerate(reversed(STATUS_PRECEDENCE))}


def _ordered(entries: Iterable[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    # Clock order, but `accepted` first: Meta's timestamps have one-second resolution, so a
    # webhook's `sent` can carry an earlier time than ingest's millisecond `accepted`.
    return tuple(
        sorted(
            entries, key=lambda e: (e.status != "accepted", e.at, _RANK.get(e.status, -1), e.status)
        )
    )


def _merge(existing: HistoryEntry | None, incoming: HistoryEntry) -> HistoryEntry:
    """One entry per status. A reported step replaces an implied one; between two reports of the
    same step the earliest wins, and details missing from it are taken from the other."""
    if existing is None:
        return incoming
    if existing.implied != incoming.implied:
        return incoming if existing.implied else existing
    first, other = sorted((existing, incoming), key=lambda e: (e.at, e.source))
    return replace(
        first,
        pricing=first.pricing or other.pricing,
        error=first.error or other.error,
        reason=first.reason or other.reason,
    )


def converge(state: MessageState, event: StatusChanged) -> MessageState | None:
    """The message's state after `event`, or None when the event changes nothing (a duplicate)."""
    entries = {e.status: e for e in state.history}
    incoming = HistoryEntry(
        status=event.status,
        at=event.occurred_at,
        source=event.source,
        pricing=event.pricing,
        error=event.error,
        reason=event.reason,
    )
    entries[event.status] = _merge(entries.get(event.status), incoming)
    if event.status == "read":
        implied = HistoryEntry(
            status="delivered", at=event.occurred_at, source=event.source, implied=True
        )
        entries["delivered"] = _merge(entries.get("delivered"), implied)
    new_state = MessageState(history=_ordered(entries.values()), wamid=state.wamid or event.wamid)
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
            entries.append(
                HistoryEntry(
                    status=raw["status"],
                    at=at,
                    source=str(raw.get("source") or ""),
                    implied=bool(raw.get("implied", False)),
                    pricing=_struct_or_none(raw.get("pricing"), Pricing),
                    error=_struct_or_none(raw.get("error"), MetaError),
                    reason=raw.get("reason"),
                )
            )
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
    return {
        "account_id": event.account_id,
        "recipient_region": event.recipient_region,
        "phone_number_id": event.phone_number_id,
        "created_at": event.occurred_at,
        "created_by": "status",
    }


def with_accepted(state: MessageState, accepted_at: int) -> MessageState:
    """The state with the request's own `accepted` step (a message whose status was read first)."""
    entries = {e.status: e for e in state.history}
    entries["accepted"] = _merge(
        entries.get("accepted"), HistoryEntry(status="accepted", at=accepted_at, source="ingest")
    )
    return MessageState(history=_ordered(entries.values()), wamid=state.wamid)


def wamid_index_doc(wamid: str, ref: MessageRef) -> dict[str, Any]:
    return {
        "_id": wamid,
        "message_id": ref.message_id,
        "account_id": ref.account_id,
        "recipient_region": ref.recipient_region,
    }


# --- the sweeper ------------------------------------------------------------------------------

OUTCOME_UNKNOWN = "outcome_unknown"


def outcome_unknown_failure(ref: MessageRef, now_ms: int) -> StatusChanged:
    """A send stuck in `unknown` past the timeout is declared failed so that billing releases
    its reservation. Source `sender`: it concludes the sender's ambiguous attempt (no webhook
    said so); a later delivered/read still wins over it."""
    return StatusChanged(
        event_id=f"{ref.message_id}:failed:{OUTCOME_UNKNOWN}",
        message_id=ref.message_id,
        account_id=ref.account_id,
        status="failed",
        occurred_at=now_ms,
        source="sender",
        recipient_region=ref.recipient_region,
        reason=OUTCOME_UNKNOWN,
    )


@dataclass(frozen=True)
class SweepCutoffs:
    unknown_before: int  # status_at before this: outcome unknown for too long
    parked_before: int  # parked_at before this: Meta stopped retrying long ago
    retained_before: int  # created_at / last_inbound_at before this: anonymise or delete


def sweep_cutoffs(
    now_ms: int,
    unknown_timeout_seconds: int,
    parked_retention_days: int,
    message_retention_days: int,
) -> SweepCutoffs:
    return SweepCutoffs(
        unknown_before=now_ms - unknown_timeout_seconds * 1000,
        parked_before=now_ms - parked_retention_days * DAY_MS,
        retained_before=now_ms - message_retention_days * DAY_MS,
    )


def recipient_hash(recipient: str, key: bytes) -> str:
    """A keyed hash (shared.pseudonyms): still lets support match a number they are given, but
    is not reversible by hashing every phone number."""
    return keyed_hash(recipient, key)


ANONYMISED_FIELDS_REMOVED = ("content", "request")


def anonymised_fields(doc: Mapping[str, Any], key: bytes, now_ms: int) -> dict[str, Any]:
    """The update that strips a message past retention down to its billing facts."""
    recipient = doc.get("recipient")
    update: dict[str, Any] = {
        "$set": {"anonymised_at": now_ms},
        "$unset": {name: "" for name in ANONYMISED_FIELDS_REMOVED},
    }
    if isinstance(recipient, str) and not recipient.startswith("hmac-sha256:"):
        update["$set"]["recipient"] = recipient_hash(recipient, key)
    return update


INBOUND_FIELDS_REMOVED = ("content", "contact_name", "user_id")


def anonymised_inbound_fields(doc: Mapping[str, Any], key: bytes, now_ms: int) -> dict[str, Any]:
    """The update that strips an inbound message (or echo) past retention: its content and the
    contact's profile go, the contact's number stays only as the keyed hash. Kept: ids, type,
    direction and times (what counting and billing disputes need)."""
    wa_id = doc.get("wa_id")
    update: dict[str, Any] = {
        "$set": {"anonymised_at": now_ms},
        "$unset": {name: "" for name in INBOUND_FIELDS_REMOVED},
    }
    if isinstance(wa_id, str) and wa_id and not wa_id.startswith("hmac-sha256:"):
        update["$set"]["wa_id"] = recipient_hash(wa_id, key)
    return update
