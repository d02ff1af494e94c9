"""Meta's webhook shapes, as lenient msgspec Structs.

Lenient on purpose: unknown fields are ignored and enum-like strings (statuses, pricing
categories, template events, account events) stay plain strings, because Meta adds values
without notice. Lists of changes and items are kept as raw JSON and decoded one by one, so one
item we cannot read does not cost us the rest of the batch; optional sub-objects whose shape
does not matter to a decision (errors, context, contacts) are raw too, so a surprise inside them
costs only that detail.

Every field is optional unless an item means nothing without it (a status needs its wamid and
status, an inbound message its wamid and sender); `core.py` decides what is required.
"""

from __future__ import annotations

import msgspec

Number = int | float  # Meta documents integers and sometimes sends them as floats or strings
Raw = msgspec.Raw


def raw_default() -> msgspec.Raw:
    return msgspec.Raw()


class EntryHead(msgspec.Struct):
    id: str | int = ""


class WebhookHead(msgspec.Struct):
    """Just enough of a POST body to accept it: the object type and the entries."""

    object: str = ""
    entry: list[Raw] = []


class Entry(msgspec.Struct):
    id: str | int = ""
    time: Number | None = None  # seconds; present on entries with non-`messages` fields
    changes: list[Raw] = []


class Envelope(msgspec.Struct):
    object: str = ""
    entry: list[Raw] = []


class Change(msgspec.Struct):
    field: str = ""
    value: Raw = msgspec.field(default_factory=raw_default)  # empty when absent


class Metadata(msgspec.Struct):
    display_phone_number: str = ""
    phone_number_id: str = ""


class MessagesValue(msgspec.Struct):
    """`value` of a `messages`, `smb_message_echoes` or `user_preferences` change."""

    metadata: Metadata | None = None
    statuses: list[Raw] = []
    messages: list[Raw] = []
    message_echoes: list[Raw] = []
    contacts: list[Raw] = []
    errors: list[Raw] = []
    user_preferences: list[Raw] = []


# --- statuses ---------------------------------------------------------------------------------


class MetaPricing(msgspec.Struct):
    billable: bool | None = None  # deprecated by Meta in favour of `type`
    pricing_model: str = ""
    type: str = ""
    category: str = ""


class MetaErrorData(msgspec.Struct):
    details: str = ""


class MetaErrorItem(msgspec.Struct):
    code: int | str = 0
    title: str = ""
    message: str = ""
    error_data: MetaErrorData | None = None


class StatusItem(msgspec.Struct):
    """One `statuses[]` item. Group (`recipient_type`, `recipient_participant_id`) and BSUID
    (`recipient_user_id`, ...) fields, `conversation` and `recipient_identity_key_hash` are
    accepted and not needed."""

    id: str
    status: str
    timestamp: str | int
    recipient_id: str = ""
    biz_opaque_callback_data: str | None = None
    pricing: MetaPricing | None = None
    errors: list[Raw] = []


# --- inbound messages and echoes --------------------------------------------------------------


class InboundItem(msgspec.Struct):
    """One `messages[]` (or `message_echoes[]`) item; the type's own object is read from the
    raw item by name (`item[type]`), whatever its shape."""

    sender: str = msgspec.field(name="from", default="")  # "" possible in the BSUID era
    from_user_id: str = ""
    to: str = ""  # echoes: the user the business wrote to
    to_user_id: str = ""
    id: str = ""
    timestamp: str | int = ""
    type: str = "unknown"
    context: Raw = msgspec.field(default_factory=raw_default)
    referral: Raw = msgspec.field(default_factory=raw_default)
    group_id: str = ""


class InboundContext(msgspec.Struct):
    id: str = ""
    message_id: str = ""  # reactions name their target here, in the type's object


class ContactProfile(msgspec.Struct):
    name: str = ""


class Contact(msgspec.Struct):
    profile: ContactProfile | None = None
    wa_id: str = ""
    user_id: str = ""


class UserPreference(msgspec.Struct):
    wa_id: str = ""
    user_id: str = ""
    category: str = ""
    value: str = ""
    detail: str = ""
    timestamp: str | int = ""


# --- templates --------------------------------------------------------------------------------


class TemplateValue(msgspec.Struct):
    """Every `message_template_*` and `template_category_update` value: the template's
    identity plus whichever of the kinds' own fields are present."""

    message_template_id: int | str = ""
    message_template_name: str = ""
    message_template_language: str = ""
    # status update
    event: str | None = None
    reason: str | None = None
    message_template_category: str | None = None
    # quality update (Meta's own example labels it message_template_status_update)
    new_quality_score: str | None = None
    previous_quality_score: str | None = None
    # category update: impending (correct_category + timestamp) or completed (previous)
    new_category: str | None = None
    previous_category: str | None = None
    correct_category: str | None = None
    category_update_timestamp: Number | None = None


# --- phone numbers and accounts ---------------------------------------------------------------


class PhoneNumberValue(msgspec.Struct):
    """`phone_number_quality_update` and `phone_number_name_update` (both keyed by display
    number)."""

    display_phone_number: str | int = ""
    event: str = ""
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | int | None = None
    decision: str | None = None
    requested_verified_name: str | None = None
    rejection_reason: str | None = None


class WabaInfo(msgspec.Struct):
    waba_id: str | int = ""


class BanInfo(msgspec.Struct):
    waba_ban_state: str = ""
    waba_ban_date: str = ""


class AccountUpdateValue(msgspec.Struct):
    event: str = ""
    waba_info: Raw = msgspec.field(default_factory=raw_default)
    ban_info: Raw = msgspec.field(default_factory=raw_default)


class BusinessCapabilityValue(msgspec.Struct):
    max_daily_conversations_per_business: str | int | None = None
    max_daily_conversation_per_phone: str | int | None = None


class EventValue(msgspec.Struct):
    """Fields with an `event`/`decision` and little else we act on (account_review_update,
    account_alerts, security, flows, partner_solutions, ...)."""

    event: str = ""
    decision: str = ""
    display_phone_number: str | int = ""
    entity_type: str = ""
