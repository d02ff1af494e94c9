"""Meta's webhook shapes, as lenient msgspec Structs.

Lenient on purpose: unknown fields are ignored and enum-like strings (statuses, pricing
categories, template events) stay plain strings, because Meta adds values without notice. Lists
of changes and items are kept as raw JSON and decoded one by one, so one item we cannot read does
not cost us the rest of the batch.
"""

from __future__ import annotations

import msgspec


class EntryHead(msgspec.Struct):
    id: str | int = ""


class WebhookHead(msgspec.Struct):
    """Just enough of a POST body to accept it: the object type and the WABA ids."""

    object: str = ""
    entry: list[EntryHead] = []


class Entry(msgspec.Struct):
    id: str | int = ""
    time: int | float | None = None  # seconds; present on entries with non-`messages` fields
    changes: list[msgspec.Raw] = []


class Envelope(msgspec.Struct):
    object: str = ""
    entry: list[msgspec.Raw] = []


class Change(msgspec.Struct):
    field: str = ""
    value: msgspec.Raw = msgspec.Raw()  # empty when absent (msgspec has no `Raw | None`)


class Metadata(msgspec.Struct):
    display_phone_number: str = ""
    phone_number_id: str = ""


class MessagesValue(msgspec.Struct):
    """`value` of a `messages` change: statuses of what we sent, and what users wrote."""

    metadata: Metadata | None = None
    statuses: list[msgspec.Raw] = []
    messages: list[msgspec.Raw] = []


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
    id: str
    status: str
    timestamp: str | int
    recipient_id: str = ""
    biz_opaque_callback_data: str | None = None
    pricing: MetaPricing | None = None
    errors: list[MetaErrorItem] = []


class InboundItem(msgspec.Struct):
    sender: str = msgspec.field(name="from")
    id: str = ""
    timestamp: str | int = ""
    type: str = "unknown"


class TemplateStatusValue(msgspec.Struct):
    event: str = ""
    message_template_id: int | str = ""
    message_template_name: str = ""
    message_template_language: str = ""
    reason: str | None = None
    message_template_category: str | None = None


class PhoneNumberQualityValue(msgspec.Struct):
    display_phone_number: str = ""
    event: str = ""
    current_limit: str | None = None
