"""The events a client system receives from us (signed webhooks, "Events for client systems"),
declared once: notify builds them, ingest's OpenAPI document is generated from them.

Wire shape (Standard Webhooks' recommended payload, plus the id and the account):

    {"id": "evt_…", "type": "message.delivered", "timestamp": "2026-12-06T10:00:00.000Z",
     "account_id": "acc_…", "data": {...}}

`id` is also the `webhook-id` header and stays the same on every retry and replay; `timestamp` is
when the event happened (not the attempt). Every `data` carries what the client needs without a
follow-up call, and nothing it must not see: no other account's data, no tokens.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

ClientEventType = Literal[
    "message.accepted",
    "message.sent",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.expired",
    "message.rejected",
    "message.received",
    "template.status_changed",
    "phone_number.quality_changed",
    "account.updated",
    "account.hold_changed",
    "balance.low",
    "balance.topped_up",
    "endpoint.test",
]

# The endpoint formats a client may choose: our events, or Meta's own webhook payloads.
EndpointFormat = Literal["standard", "meta"]


class MetaErrorData(Struct, kw_only=True):
    """Meta's error as Meta reported it (code, title, details)."""

    code: int
    title: str = ""
    details: str = ""


class PricingData(Struct, kw_only=True):
    """What Meta says it charges: category and type (regular, free_customer_service, ...)."""

    billable: bool
    category: str = ""
    type: str = ""
    pricing_model: str = ""


class MessageEventData(Struct, kw_only=True):
    """`message.accepted|sent|delivered|read|failed|expired|rejected`: one step of a message we
    send. `error` is Meta's (failed); `reason` is ours (expired, rejected, failed before Meta)."""

    message_id: str
    status: str
    phone_number_id: str
    to: str | None = None
    type: str | None = None
    wamid: str | None = None
    client_reference: str | None = None
    biz_opaque_callback_data: str | None = None
    error: MetaErrorData | None = None
    reason: str | None = None
    pricing: PricingData | None = None
    occurred_at: str  # ISO 8601


class MessageReceivedData(Struct, kw_only=True):
    """`message.received`: a user wrote to one of the account's numbers (as
    `/v1/conversations/{wa_id}/messages` shows it): `content` is Meta's object for `type`."""

    wamid: str
    phone_number_id: str
    wa_id: str
    contact_name: str | None = None
    type: str
    content: Any = None
    context_wamid: str | None = None
    media_id: str | None = None
    referral: Any = None
    sent_at: str  # ISO 8601
    window_expires_at: str | None = None


class TemplateStatusData(Struct, kw_only=True):
    """`template.status_changed`: Meta approved, rejected, paused, disabled... a template."""

    waba_id: str
    template_id: str
    name: str
    language: str
    status: str
    reason: str | None = None
    category: str | None = None


class PhoneNumberQualityData(Struct, kw_only=True):
    """`phone_number.quality_changed`: Meta changed a number's quality, tier or throughput."""

    phone_number_id: str
    display_phone_number: str | None = None
    event: str
    messaging_limit: str | None = None
    messages_per_second: int | None = None


class AccountUpdatedData(Struct, kw_only=True):
    """`account.updated`: Meta's account_update for one of the account's WABAs (a ban holds its
    numbers' sending until reinstated)."""

    waba_id: str
    event: str
    held: bool
    reasons: list[str] = []


class AccountHoldData(Struct, kw_only=True):
    """`account.hold_changed`: our fraud and spam rules held the account's sending (`held`,
    the `rule` that fired, why, and the figures it saw), or an operator released it. While held,
    sends are refused with 403 `account_held` and queued messages wait (those whose validity
    ends meanwhile expire)."""

    held: bool
    change: Literal["held", "released"]
    rules: list[str] = []
    rule: str | None = None
    reason: str = ""
    observed: dict[str, float] = {}
    occurred_at: str  # ISO 8601


class BalanceData(Struct, kw_only=True):
    """`balance.low` (available fell below the account's threshold) and `balance.topped_up`.
    Amounts are integer micros of `currency`."""

    available: int
    threshold: int | None = None
    amount: int | None = None  # the top-up's amount (balance.topped_up)
    currency: str
    unit: Literal["micros"] = "micros"


class EndpointTestData(Struct, kw_only=True):
    """`endpoint.test`: sent by `POST /v1/webhook-endpoints/{id}/test`."""

    endpoint_id: str
    message: str = "This is a test event from Hala Whatsup."


EVENT_DATA: dict[str, type[Struct]] = {
    **{
        t: MessageEventData
        for t in (
            "message.accepted",
            "message.sent",
            "message.delivered",
            "message.read",
            "message.failed",
            "message.expired",
            "message.rejected",
        )
    },
    "message.received": MessageReceivedData,
    "template.status_changed": TemplateStatusData,
    "phone_number.quality_changed": PhoneNumberQualityData,
    "account.updated": AccountUpdatedData,
    "account.hold_changed": AccountHoldData,
    "balance.low": BalanceData,
    "balance.topped_up": BalanceData,
    "endpoint.test": EndpointTestData,
}


class ClientEvent(Struct, kw_only=True):
    """The body of one webhook delivery in the `standard` format."""

    id: str
    type: ClientEventType
    timestamp: str  # ISO 8601, when it happened
    account_id: str
    data: dict[str, Any]


def event_matches(patterns: list[str], event_type: str) -> bool:
    """An endpoint's `events` list: exact types, `<prefix>.*`, or `*` for everything."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
