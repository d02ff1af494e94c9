"""Every Kafka message of the platform, defined once: schema, topic, key, producers, consumers.

Topic names appear nowhere else in the code base: services import the `Topic` objects below.
Values are JSON (msgspec Structs: decoding and validating in one pass). Money is an integer
amount of `MONEY_MINOR_UNIT`; times are integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec

from shared.errors import PermanentError

# Credits are kept in millionths of the account currency: Meta's rates have four decimals
# (e.g. 0.0044 USD), so a cent-based unit would round every price.
MONEY_MINOR_UNIT = "micros"

# Every outbound type of Meta's Cloud API (services/ingest/schemas.py declares each one's shape).
MessageType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
    "template",
]
# Meta's pricing categories; "service" is every non-template message.
Category = Literal[
    "marketing", "utility", "authentication", "authentication_international", "service"
]
# Our message lifecycle. Order matters for convergence: see services/status/core.py.
MessageStatus = Literal[
    "accepted", "rejected", "approved", "sent", "delivered", "read", "failed", "expired", "unknown"
]


class Event(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """Base of every event: `event_id` is the idempotency key every consumer dedupes on."""

    event_id: str


# --- messages.send-requested.v1 -------------------------------------------------------------


class SendRequested(Event, kw_only=True, frozen=True):
    """A client's send request, accepted by ingest (202 given only after this is durable)."""

    message_id: str
    account_id: str
    portfolio_id: str
    waba_id: str
    phone_number_id: str
    recipient: str  # E.164 with '+'
    recipient_region: str  # ISO 3166 region of the recipient's number, for pricing
    message_type: MessageType
    # Meta's object for `message_type`, as Meta takes it (e.g. {"name": ..., "language": ...});
    # a list for `contacts`.
    content: dict[str, Any] | list[Any]
    category: Category
    accepted_at: int
    expires_at: int
    client_reference: str | None = None
    # The client's own biz_opaque_callback_data: kept and shown back to the client; on the wire
    # to Meta that field carries our message id.
    callback_data: str | None = None
    # context.message_id of a reply: a wamid, or one of the account's message ids (`msg_…`)
    # whose wamid the sender looks up just before sending.
    reply_to: str | None = None


# --- messages.send-approved.v1 --------------------------------------------------------------


class SendApproved(SendRequested, kw_only=True, frozen=True):
    """Credit is reserved: the sender may deliver this message to Meta."""

    reserved_amount: int
    rate_card_version: str


# --- messages.status-changed.v1 -------------------------------------------------------------


class MetaError(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    code: int
    title: str = ""
    details: str = ""


class Pricing(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    billable: bool
    pricing_model: str = "PMP"
    type: str = "regular"
    category: str = ""


class StatusChanged(Event, kw_only=True, frozen=True):
    """One step in a message's life, from billing (rejected), sender (sent, failed, expired,
    unknown) or Meta's webhooks (sent, delivered, read, failed)."""

    message_id: str
    account_id: str
    status: MessageStatus
    occurred_at: int
    source: Literal["billing", "sender", "webhook"]
    phone_number_id: str = ""
    recipient_region: str = ""
    wamid: str | None = None
    error: MetaError | None = None
    pricing: Pricing | None = None
    reason: str | None = None  # our own machine-readable reason (e.g. insufficient_credit)


# --- webhooks.received.v1 -------------------------------------------------------------------


class WebhookReceived(Event, kw_only=True, frozen=True):
    """A webhook POST from Meta whose signature verified, kept byte for byte; a POST naming
    several WABAs gives one event per WABA, its entries byte for byte (see WEBHOOK_RECEIVED)."""

    received_at: int
    payload: msgspec.Raw


# --- messages.inbound-received.v1 -----------------------------------------------------------


class InboundReceived(Event, kw_only=True, frozen=True):
    """A WhatsApp user wrote to one of our numbers (any type Meta sends, `system` and
    `unsupported` included; never a message echo). The sender counts each against the number's
    throughput; a later client event (`message.received`) is built from the same fields, which
    mirror the `inbound_messages` document."""

    phone_number_id: str
    waba_id: str
    # The contact: Meta's `from` (digits), or the user's BSUID when `from` is empty.
    sender: str
    wamid: str
    message_type: str
    sent_at: int
    # Meta's object for `message_type` (e.g. {"body": ...} for text), as sent.
    content: dict[str, Any] = {}
    account_id: str | None = None  # None: the number is not registered with us
    contact_name: str | None = None
    user_id: str | None = None  # the user's BSUID (`from_user_id`), when Meta sends one
    context_wamid: str | None = None  # the message this one replies to or reacts to
    media_id: str | None = None  # image/video/audio/document/sticker
    referral: dict[str, Any] | None = None  # Click-to-WhatsApp ad the user came from
    opens_window: bool = True  # whether it opens the 24 h customer-service window
    window_expires_at: int | None = None  # sent_at + 24 h when it opens the window
    received_at: int | None = None


# --- templates.status-changed.v1 ------------------------------------------------------------


class TemplateStatusChanged(Event, kw_only=True, frozen=True):
    waba_id: str
    template_id: str
    name: str
    language: str
    status: str  # Meta's event: APPROVED, REJECTED, PAUSED, DISABLED, ...
    reason: str | None = None
    category: str | None = None
    occurred_at: int


# --- phone-numbers.throughput-changed.v1 ----------------------------------------------------


class ThroughputChanged(Event, kw_only=True, frozen=True):
    """A number's current pacing facts: its throughput and its portfolio's messaging limit.
    The topic is compacted by phone number, so every event carries both (the latest known of
    each), never only the one that changed."""

    phone_number_id: str
    waba_id: str
    messages_per_second: int
    messaging_limit: str | None = None  # TIER_250 ... TIER_UNLIMITED
    occurred_at: int


# --- phone-numbers.quality-changed.v1 ------------------------------------------------------


class NumberQualityChanged(Event, kw_only=True, frozen=True):
    """Meta's `phone_number_quality_update` for one of our numbers: a quality flag
    (FLAGGED/UNFLAGGED), a messaging tier change (UPGRADE/DOWNGRADE) or a throughput upgrade.
    Published by status for every such webhook of a registered number (ThroughputChanged only
    when the pacing changes); notify tells the client and emails the account."""

    phone_number_id: str
    waba_id: str
    account_id: str | None = None
    display_phone_number: str = ""
    event: str  # Meta's event: FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE, THROUGHPUT_UPGRADE, ...
    messaging_limit: str | None = None  # Meta's current_limit, when it says
    messages_per_second: int | None = None  # set by a throughput upgrade
    occurred_at: int


# --- wabas.status-changed.v1 ----------------------------------------------------------------


class WabaStatusChanged(Event, kw_only=True, frozen=True):
    """Meta's word on whether a WABA may send: `held` while it is banned (DISABLED_UPDATE with
    DISABLE), deleted, or removed from / uninstalled by our app; released by REINSTATE or by the
    partner being added again. The topic is compacted by WABA: the latest event is the state."""

    waba_id: str
    held: bool
    reasons: list[str] = []  # why it is held: banned, deleted, partner_removed, app_uninstalled
    event: str = ""  # Meta's account_update event that changed it
    occurred_at: int


# --- billing.topup-requested.v1 -------------------------------------------------------------


class TopUpRequested(Event, kw_only=True, frozen=True):
    """An operator added prepaid credit; billing is the only writer of balances.

    `operator` is who asked (`hala`'s operator identity: HALA_OPERATOR or the OS user, @ host).
    `signature` is HMAC-SHA256, hex, over the canonical fields (`top_up_signed_fields`) under
    HALA_TOPUP_SIGNING_KEY, which only the admin tool and billing hold: billing dead-letters a
    top-up whose signature does not verify, and moves no money for it, so that whoever can
    write to the topic still cannot mint credit."""

    account_id: str
    amount: int
    requested_at: int
    note: str = ""
    operator: str = ""
    signature: str = ""


def top_up_signed_fields(event: TopUpRequested) -> bytes:
    """The bytes a top-up's signature covers: every field but the signature, in a fixed order,
    as a JSON array (unambiguous whatever the note contains)."""
    return _encoder.encode(
        [
            event.event_id,
            event.account_id,
            event.amount,
            event.requested_at,
            event.note,
            event.operator,
        ]
    )


def top_up_signature(event: TopUpRequested, key: bytes) -> str:
    if not key:
        raise ValueError("a top-up is signed with a key")
    return hmac.new(key, top_up_signed_fields(event), hashlib.sha256).hexdigest()


def sign_top_up(event: TopUpRequested, key: bytes) -> TopUpRequested:
    return msgspec.structs.replace(event, signature=top_up_signature(event, key))


def top_up_signature_valid(event: TopUpRequested, key: bytes) -> bool:
    return bool(key) and hmac.compare_digest(event.signature, top_up_signature(event, key))


# --- billing.low-balance-alerted.v1 ---------------------------------------------------------


class LowBalanceAlerted(Event, kw_only=True, frozen=True):
    account_id: str
    available: int
    threshold: int
    occurred_at: int


# --- billing.balance-topped-up.v1 ----------------------------------------------------------


class BalanceToppedUp(Event, kw_only=True, frozen=True):
    """Billing applied a top-up: `available` is the balance right after it."""

    account_id: str
    amount: int
    available: int
    currency: str
    note: str = ""
    occurred_at: int


# --- notify.requests.v1 ---------------------------------------------------------------------


class NotifyRequested(Event, kw_only=True, frozen=True):
    """A client asked (through ingest's API) for a test event or a replay to one endpoint.
    A replay names one event (`replay_event_id`) or a time range (`since`/`until`, ms)."""

    account_id: str
    endpoint_id: str
    kind: Literal["test", "replay"]
    replay_event_id: str | None = None
    since: int | None = None
    until: int | None = None
    requested_at: int


# --- suppressions.change-requested.v1 ------------------------------------------------------


class SuppressionChangeRequested(Event, kw_only=True, frozen=True):
    """A client (ingest's API) or an operator (`hala suppressions`) suppressed a contact of one
    of the account's numbers for marketing, or resubscribed them. status's processor, the only
    writer of the suppression list, applies it; keyed by WABA, so that it is applied in order
    with that WABA's webhooks (a user's STOP and START arrive there). The latest `requested_at`
    of any source wins."""

    account_id: str
    waba_id: str
    phone_number_id: str
    wa_id: str  # the contact, digits as Meta names them
    suppressed: bool
    source: Literal["api", "operator"]
    note: str = ""
    operator: str = ""  # who, for source operator
    requested_at: int


# --- accounts.hold-changed.v1 -------------------------------------------------------------

# The fraud and spam rules (services/guard/core.py) that may hold an account's sending.
HOLD_RULES = ("failure_rate", "meta_spam", "quality_red", "volume_spike", "new_recipients")


class AccountHoldChanged(Event, kw_only=True, frozen=True):
    """guard's word on whether an account may send: `held` while a rule's hold is on since the
    account's last release. Compacted by account, so every event carries the whole state
    (`rules` holding it now); `change` says what happened: a rule fired (`held`, `rule`,
    `reason` and the figures it saw in `observed`) or an operator released it (`released`,
    `operator`, `reason`). ingest refuses a held account's sends (403 account_held), the sender
    keeps its queued messages waiting, notify tells the client and mails the account."""

    account_id: str
    held: bool
    rules: list[str] = []
    change: Literal["held", "released"]
    rule: str | None = None
    reason: str = ""
    observed: dict[str, float] = {}
    operator: str = ""
    occurred_at: int


# --- accounts.release-requested.v1 --------------------------------------------------------


class AccountReleaseRequested(Event, kw_only=True, frozen=True):
    """An operator released an account's hold (`hala accounts release`); guard, the only writer
    of holds, applies it and publishes the account's new state."""

    account_id: str
    reason: str
    operator: str = ""
    requested_at: int


# --- the registry ----------------------------------------------------------------------------

S = TypeVar("S", bound=Event)

# How long the broker keeps each topic's records (`retention.ms`, set by shared.kafka's
# ensure_topics at creation and on every start for topics that exist). Topics that carry what
# a user wrote or what a client sends them (raw webhooks, send requests and approvals, inbound
# messages) keep it one week: long enough to outlast any consumer outage we would tolerate,
# short enough for the privacy policy's brief logs. Events without content keep two weeks,
# top-ups a month. Dead letters are kept a month: someone has to look at them, fix the cause
# and replay them. Compacted topics keep the latest record per key for good (that is their
# point) and have no time limit.
DAY_MS = 86_400_000
RAW_CONTENT_RETENTION_MS = 7 * DAY_MS
EVENT_RETENTION_MS = 14 * DAY_MS
MONEY_RETENTION_MS = 30 * DAY_MS
DLQ_RETENTION_MS = 30 * DAY_MS
# The largest record a topic takes unless it says otherwise: the broker's default
# (message.max.bytes, 1 MiB plus the batch overhead).
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# Meta's webhook payloads may reach 3 MB (status accepts 3 MiB): the raw-webhook topic, its
# dead letters (the same value plus error headers) and every producer take 4 MiB.
WEBHOOK_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Topic(Generic[S]):
    name: str
    schema: type[S]
    key: Callable[[S], str]  # what must stay ordered
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    examples: tuple[dict[str, Any], ...]
    partitions: int = 6
    compacted: bool = False
    # `retention.ms`: None only for a compacted topic (it keeps each key's latest record).
    retention_ms: int | None = EVENT_RETENTION_MS
    # `max.message.bytes`, when the broker's default is too small for the topic's records.
    max_message_bytes: int | None = None
    _decoder: msgspec.json.Decoder[S] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.schema))
        if self.compacted == (self.retention_ms is not None):
            raise ValueError(
                f"{self.name}: a compacted topic has no retention.ms, every other topic has one"
            )

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def configs(self) -> dict[str, str]:
        """The broker configuration the topic is created with and kept at."""
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs

    def dlq_configs(self) -> dict[str, str]:
        """Dead letters carry the original record plus error headers, for a month."""
        configs = {"cleanup.policy": "delete", "retention.ms": str(DLQ_RETENTION_MS)}
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs

    def decode(self, raw: bytes) -> S:
        return self._decoder.decode(raw)

    def decode_record(self, raw: bytes | None) -> S:
        """Decode a consumed record's value; one that can never decode is a PermanentError
        (the consumer loop dead-letters it) rather than a crash."""
        try:
            return self._decoder.decode(raw or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PermanentError(
                f"not a {self.schema.__name__} event: {exc}", code="malformed_event"
            ) from exc

    def encode(self, event: S) -> tuple[bytes, bytes]:
        """(key, value) bytes for the producer."""
        return self.key(event).encode(), _encoder.encode(event)


_encoder = msgspec.json.Encoder()

_SEND_REQUESTED_EXAMPLE: dict[str, Any] = {
    "event_id": "msg_01HZY3V9J6Q8W4T2",
    "message_id": "msg_01HZY3V9J6Q8W4T2",
    "account_id": "acc_demo",
    "portfolio_id": "900000000000001",
    "waba_id": "102290129340398",
    "phone_number_id": "106540352242922",
    "recipient": "+447911123456",
    "recipient_region": "GB",
    "message_type": "template",
    "content": {
        "name": "order_confirmation",
        "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
    },
    "category": "utility",
    "accepted_at": 1764000000000,
    "expires_at": 1764086400000,
    "client_reference": "order-1234",
}

# One example of every other type (Meta's shapes, as its documentation shows them); all are
# priced as `service` messages.
_WAMID_IN = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
_SERVICE_CONTENTS: tuple[tuple[str, Any], ...] = (
    ("text", {"body": "Your order shipped: https://example.com/t/1", "preview_url": True}),
    ("image", {"link": "https://example.com/p.jpg", "caption": "Your order"}),
    ("video", {"id": "1166846181421424", "caption": "How to assemble it"}),
    ("audio", {"id": "1013859600285441", "voice": True}),
    (
        "document",
        {
            "link": "https://example.com/invoice.pdf",
            "filename": "invoice.pdf",
            "caption": "Invoice A-1234",
        },
    ),
    ("sticker", {"id": "798882015472548"}),
    (
        "location",
        {
            "latitude": "37.44216",
            "longitude": "-122.16153",
            "name": "Philz Coffee",
            "address": "101 Forest Ave, Palo Alto, CA 94301",
        },
    ),
    (
        "contacts",
        [
            {
                "name": {"formatted_name": "Barbara J. Johnson", "first_name": "Barbara"},
                "phones": [{"phone": "+19175559999", "type": "Mobile", "wa_id": "19175559999"}],
            }
        ],
    ),
    (
        "interactive",
        {
            "type": "button",
            "body": {"text": "Change your appointment?"},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": "change", "title": "Change"}}]
            },
        },
    ),
    ("reaction", {"message_id": _WAMID_IN, "emoji": "\U0001f44d"}),
)
_SERVICE_EXAMPLES = tuple(
    {
        **_SEND_REQUESTED_EXAMPLE,
        "event_id": f"msg_{i}",
        "message_id": f"msg_{i}",
        "message_type": kind,
        "content": content,
        "category": "service",
        "client_reference": None,
        **({"reply_to": _WAMID_IN, "callback_data": "crm-7"} if kind == "text" else {}),
    }
    for i, (kind, content) in enumerate(_SERVICE_CONTENTS, start=2)
)

SEND_REQUESTED: Topic[SendRequested] = Topic(
    name="messages.send-requested.v1",
    schema=SendRequested,
    # billing is the single writer of an account's credit; status's state writer reads it with
    # status-changed (keyed alike) to create the message's document.
    key=lambda e: e.account_id,
    producers=("ingest",),
    # guard: the account's volume and recipients (fraud and spam rules)
    consumers=("billing", "status", "notify", "guard"),
    examples=(_SEND_REQUESTED_EXAMPLE, *_SERVICE_EXAMPLES),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # the client's message: recipient, content
)

SEND_APPROVED: Topic[SendApproved] = Topic(
    name="messages.send-approved.v1",
    schema=SendApproved,
    key=lambda e: e.phone_number_id,  # pacing is per business phone number
    producers=("billing",),
    consumers=("sender",),
    examples=(
        {**_SEND_REQUESTED_EXAMPLE, "reserved_amount": 24200, "rate_card_version": "2026-10-01"},
    ),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # the same content
)

STATUS_CHANGED: Topic[StatusChanged] = Topic(
    name="messages.status-changed.v1",
    schema=StatusChanged,
    key=lambda e: e.account_id,  # billing settles per account, in order
    producers=("billing", "sender", "status"),
    consumers=("billing", "status", "notify", "guard"),  # guard: failure rate, 131048
    examples=(
        {
            "event_id": "msg_01HZY3V9J6Q8W4T2:sent:sender",
            "message_id": "msg_01HZY3V9J6Q8W4T2",
            "account_id": "acc_demo",
            "status": "sent",
            "occurred_at": 1764000000500,
            "source": "sender",
            "phone_number_id": "106540352242922",
            "wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
        },
        {
            "event_id": "wamid.HBgL:delivered",
            "message_id": "msg_01HZY3V9J6Q8W4T2",
            "account_id": "acc_demo",
            "status": "delivered",
            "occurred_at": 1764000003000,
            "source": "webhook",
            "recipient_region": "GB",
            "wamid": "wamid.HBgL",
            "pricing": {
                "billable": True,
                "pricing_model": "PMP",
                "type": "regular",
                "category": "utility",
            },
        },
        {
            "event_id": "wamid.CCC:failed",
            "message_id": "msg_3",
            "account_id": "acc_demo",
            "status": "failed",
            "occurred_at": 1764000004000,
            "source": "webhook",
            "wamid": "wamid.CCC",
            "error": {
                "code": 131047,
                "title": "Re-engagement message",
                "details": "More than 24 hours have passed",
            },
        },
        {
            "event_id": "msg_4:rejected",
            "message_id": "msg_4",
            "account_id": "acc_demo",
            "status": "rejected",
            "occurred_at": 1764000000100,
            "source": "billing",
            "reason": "insufficient_credit",
        },
    ),
)

WEBHOOK_RECEIVED: Topic[WebhookReceived] = Topic(
    name="webhooks.received.v1",
    schema=WebhookReceived,
    # Meta's entry id is the WABA: one WABA's webhooks stay in order relative to each other.
    # A POST naming several WABAs is one record per WABA (status's `core.split_by_waba`): that
    # WABA's entries, Meta's bytes, in {"object", "entry"}; event id `<waba>:<sha256 of the
    # POST>`, so one tenant's webhooks never wait on another's partition.
    key=lambda e: e.event_id.split(":", 1)[0],
    producers=("status",),
    consumers=("status", "notify"),  # notify forwards Meta's payloads to `meta` endpoints
    examples=(
        {
            "event_id": "102290129340398:7f3a9c",
            "received_at": 1764000003000,
            "payload": {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "102290129340398",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": "15550783881",
                                        "phone_number_id": "106540352242922",
                                    },
                                    "statuses": [
                                        {
                                            "id": "wamid.HBgL",
                                            "status": "delivered",
                                            "timestamp": "1764000003",
                                            "recipient_id": "447911123456",
                                            "pricing": {
                                                "billable": True,
                                                "pricing_model": "PMP",
                                                "type": "regular",
                                                "category": "utility",
                                            },
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            },
        },
    ),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # what users wrote, as Meta sent it
    max_message_bytes=WEBHOOK_MAX_MESSAGE_BYTES,
)

INBOUND_RECEIVED: Topic[InboundReceived] = Topic(
    name="messages.inbound-received.v1",
    schema=InboundReceived,
    key=lambda e: e.phone_number_id,
    producers=("status",),
    # Meta counts inbound messages against the number's throughput; notify: message.received
    consumers=("sender", "notify"),
    examples=(
        {
            "event_id": "wamid.IN1",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "sender": "16505551234",
            "wamid": "wamid.IN1",
            "message_type": "text",
            "sent_at": 1764000000000,
            "content": {"body": "Does it come in another color?"},
        },
        {
            "event_id": "wamid.IN2",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "sender": "16505551234",
            "wamid": "wamid.IN2",
            "message_type": "image",
            "sent_at": 1764000005000,
            "content": {
                "caption": "this one",
                "mime_type": "image/jpeg",
                "sha256": "SfInY0gG...=",
                "id": "1003383421387256",
            },
            "account_id": "acc_demo",
            "contact_name": "Sheena Nelson",
            "user_id": "US.13491208655302741918",
            "context_wamid": "wamid.OUT1",
            "media_id": "1003383421387256",
            "referral": {
                "source_type": "ad",
                "source_id": "120226305854810726",
                "source_url": "https://fb.me/3cr4Wqqkv",
                "ctwa_clid": "Aff-n8ZT",
            },
            "opens_window": True,
            "window_expires_at": 1764086405000,
            "received_at": 1764000005300,
        },
        {
            "event_id": "wamid.IN3",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "sender": "16505551234",
            "wamid": "wamid.IN3",
            "message_type": "reaction",
            "sent_at": 1764000009000,
            "content": {"message_id": "wamid.OUT1", "emoji": "\U0001f44d"},
            "account_id": "acc_demo",
            "context_wamid": "wamid.OUT1",
            "opens_window": False,
        },
    ),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # what a user wrote
)

TEMPLATE_STATUS_CHANGED: Topic[TemplateStatusChanged] = Topic(
    name="templates.status-changed.v1",
    schema=TemplateStatusChanged,
    key=lambda e: e.waba_id,
    producers=("status",),
    consumers=("notify",),
    examples=(
        {
            "event_id": "1689556908129832:APPROVED:1751247548",
            "waba_id": "102290129340398",
            "template_id": "1689556908129832",
            "name": "order_confirmation",
            "language": "en_US",
            "status": "APPROVED",
            "reason": "NONE",
            "category": "UTILITY",
            "occurred_at": 1751247548000,
        },
    ),
)

THROUGHPUT_CHANGED: Topic[ThroughputChanged] = Topic(
    name="phone-numbers.throughput-changed.v1",
    schema=ThroughputChanged,
    key=lambda e: e.phone_number_id,
    producers=("status",),
    consumers=("sender",),
    examples=(
        {
            "event_id": "106540352242922:THROUGHPUT_UPGRADE:1748454394",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "messages_per_second": 1000,
            "messaging_limit": "TIER_UNLIMITED",
            "occurred_at": 1748454394000,
        },
        # A tier change keeps the number's current throughput.
        {
            "event_id": "106540352242922:FLAGGED:1748455000",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "messages_per_second": 80,
            "messaging_limit": "TIER_10K",
            "occurred_at": 1748455000000,
        },
    ),
    compacted=True,  # only the latest level per number matters
    retention_ms=None,
)

NUMBER_QUALITY_CHANGED: Topic[NumberQualityChanged] = Topic(
    name="phone-numbers.quality-changed.v1",
    schema=NumberQualityChanged,
    key=lambda e: e.phone_number_id,
    producers=("status",),
    consumers=("notify", "guard"),  # guard: a number flagged (quality RED) holds the account
    examples=(
        {
            "event_id": "106540352242922:FLAGGED:1748455000",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "account_id": "acc_demo",
            "display_phone_number": "15550783881",
            "event": "FLAGGED",
            "messaging_limit": "TIER_10K",
            "occurred_at": 1748455000000,
        },
        {
            "event_id": "106540352242922:THROUGHPUT_UPGRADE:1748454394",
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "event": "THROUGHPUT_UPGRADE",
            "messages_per_second": 1000,
            "occurred_at": 1748454394000,
        },
    ),
)

WABA_STATUS_CHANGED: Topic[WabaStatusChanged] = Topic(
    name="wabas.status-changed.v1",
    schema=WabaStatusChanged,
    key=lambda e: e.waba_id,
    producers=("status",),
    # a held WABA's numbers send nothing until it is released; notify: account.updated
    consumers=("sender", "notify"),
    examples=(
        {
            "event_id": "102290129340398:DISABLED_UPDATE:1743451903",
            "waba_id": "102290129340398",
            "held": True,
            "reasons": ["banned"],
            "event": "DISABLED_UPDATE",
            "occurred_at": 1743451903000,
        },
        {
            "event_id": "102290129340398:DISABLED_UPDATE:1743538303",
            "waba_id": "102290129340398",
            "held": False,
            "reasons": [],
            "event": "DISABLED_UPDATE",
            "occurred_at": 1743538303000,
        },
    ),
    compacted=True,  # the latest state per WABA is all a follower needs
    retention_ms=None,
)

TOPUP_REQUESTED: Topic[TopUpRequested] = Topic(
    name="billing.topup-requested.v1",
    schema=TopUpRequested,
    key=lambda e: e.account_id,
    producers=("admin",),
    consumers=("billing",),
    examples=(
        {
            "event_id": "topup_01HZY",
            "account_id": "acc_demo",
            "amount": 50_000_000,
            "requested_at": 1764000000000,
            "note": "initial credit",
            "operator": "ana@ops-1",
            # under the development key (shared.settings.DEVELOPMENT_TOPUP_SIGNING_KEY)
            "signature": "b7a889b6868d1064696d393d252a7597b1f16635254ef2ea7bc873ebdb367107",
        },
    ),
    retention_ms=MONEY_RETENTION_MS,
)

LOW_BALANCE_ALERTED: Topic[LowBalanceAlerted] = Topic(
    name="billing.low-balance-alerted.v1",
    schema=LowBalanceAlerted,
    key=lambda e: e.account_id,
    producers=("billing",),
    consumers=("notify",),
    examples=(
        {
            "event_id": "acc_demo:low:3",
            "account_id": "acc_demo",
            "available": 90_000,
            "threshold": 1_000_000,
            "occurred_at": 1764000000000,
        },
    ),
)

BALANCE_TOPPED_UP: Topic[BalanceToppedUp] = Topic(
    name="billing.balance-topped-up.v1",
    schema=BalanceToppedUp,
    key=lambda e: e.account_id,
    producers=("billing",),
    consumers=("notify",),
    examples=(
        {
            "event_id": "topup_01HZY:applied",
            "account_id": "acc_demo",
            "amount": 50_000_000,
            "available": 50_090_000,
            "currency": "USD",
            "note": "initial credit",
            "occurred_at": 1764000000000,
        },
    ),
)

NOTIFY_REQUESTED: Topic[NotifyRequested] = Topic(
    name="notify.requests.v1",
    schema=NotifyRequested,
    key=lambda e: e.account_id,
    producers=("ingest", "admin"),  # the client API and `hala webhooks test|replay`
    consumers=("notify",),
    examples=(
        {
            "event_id": "nreq_01HZY",
            "account_id": "acc_demo",
            "endpoint_id": "we_01HZY",
            "kind": "test",
            "requested_at": 1764000000000,
        },
        {
            "event_id": "nreq_01HZZ",
            "account_id": "acc_demo",
            "endpoint_id": "we_01HZY",
            "kind": "replay",
            "since": 1763990000000,
            "until": 1764000000000,
            "requested_at": 1764000000000,
        },
    ),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # a client's request, acted on at once
)

SUPPRESSION_CHANGE_REQUESTED: Topic[SuppressionChangeRequested] = Topic(
    name="suppressions.change-requested.v1",
    schema=SuppressionChangeRequested,
    # with the WABA's webhooks (webhooks.received.v1 is keyed by WABA too): status's processor
    # handles one WABA's records in order
    key=lambda e: e.waba_id,
    producers=("ingest", "admin"),
    consumers=("status",),
    examples=(
        {
            "event_id": "supr_01HZY",
            "account_id": "acc_demo",
            "waba_id": "102290129340398",
            "phone_number_id": "106540352242922",
            "wa_id": "447911123456",
            "suppressed": True,
            "source": "api",
            "note": "asked by phone",
            "requested_at": 1764000000000,
        },
        {
            "event_id": "supr_01HZZ",
            "account_id": "acc_demo",
            "waba_id": "102290129340398",
            "phone_number_id": "106540352242922",
            "wa_id": "447911123456",
            "suppressed": False,
            "source": "operator",
            "operator": "ana@ops-1",
            "requested_at": 1764000100000,
        },
    ),
    retention_ms=RAW_CONTENT_RETENTION_MS,  # a contact's number
)

ACCOUNT_HOLD_CHANGED: Topic[AccountHoldChanged] = Topic(
    name="accounts.hold-changed.v1",
    schema=AccountHoldChanged,
    key=lambda e: e.account_id,
    producers=("guard",),
    # the sender follows it from the beginning (it is compacted); notify: account.hold_changed
    consumers=("notify", "sender"),
    examples=(
        {
            "event_id": "hold_acc_demo_failure_rate_1764000000000",
            "account_id": "acc_demo",
            "held": True,
            "rules": ["failure_rate"],
            "change": "held",
            "rule": "failure_rate",
            "reason": "62% of the 80 messages finished in the last 15 minutes failed "
            "(threshold 50%)",
            "observed": {
                "failed": 50,
                "finished": 80,
                "rate": 0.625,
                "threshold": 0.5,
                "window_seconds": 900,
            },
            "occurred_at": 1764000000000,
        },
        {
            "event_id": "rel_01HZY",
            "account_id": "acc_demo",
            "held": False,
            "rules": [],
            "change": "released",
            "reason": "customer confirmed the list is opt-in",
            "operator": "ana@ops-1",
            "occurred_at": 1764000600000,
        },
    ),
    compacted=True,  # the latest state per account is all a follower needs
    retention_ms=None,
)

ACCOUNT_RELEASE_REQUESTED: Topic[AccountReleaseRequested] = Topic(
    name="accounts.release-requested.v1",
    schema=AccountReleaseRequested,
    key=lambda e: e.account_id,  # with the account's sends and statuses, in guard
    producers=("admin",),
    consumers=("guard",),
    examples=(
        {
            "event_id": "rel_01HZY",
            "account_id": "acc_demo",
            "reason": "customer confirmed the list is opt-in",
            "operator": "ana@ops-1",
            "requested_at": 1764000600000,
        },
    ),
    retention_ms=MONEY_RETENTION_MS,  # an operator's decision, kept like a top-up
)

ALL_TOPICS: tuple[Topic[Any], ...] = (
    SEND_REQUESTED,
    SEND_APPROVED,
    STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    INBOUND_RECEIVED,
    TEMPLATE_STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    NUMBER_QUALITY_CHANGED,
    WABA_STATUS_CHANGED,
    TOPUP_REQUESTED,
    LOW_BALANCE_ALERTED,
    BALANCE_TOPPED_UP,
    NOTIFY_REQUESTED,
    SUPPRESSION_CHANGE_REQUESTED,
    ACCOUNT_HOLD_CHANGED,
    ACCOUNT_RELEASE_REQUESTED,
)


def topics_read_by(service: str) -> tuple[Topic[Any], ...]:
    return tuple(t for t in ALL_TOPICS if service in t.consumers)
