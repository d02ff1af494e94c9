"""notify's decisions, pure: no await, no clock, no I/O. Times (`now`, ms), random draws and
looked-up documents come in as arguments.

- which client event a platform event is (and its id, derived from the source, so a redelivered
  record, a duplicate webhook or a replay is the same event with the same `webhook-id`);
- which endpoints receive it;
- the Standard Webhooks headers of one attempt (and Meta's `X-Hub-Signature-256`);
- what an attempt's answer means, when the next attempt is due, and what it says about the
  endpoint's health (410 or three days without a success disable it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import msgspec

from shared.client_events import (
    AccountHoldData,
    AccountUpdatedData,
    BalanceData,
    ClientEvent,
    ClientEventType,
    EndpointTestData,
    MessageEventData,
    MessageReceivedData,
    MetaErrorData,
    PhoneNumberQualityData,
    PricingData,
    TemplateStatusData,
    event_matches,
)
from shared.ids import derived_id
from shared.messages import (
    AccountHoldChanged,
    BalanceToppedUp,
    InboundReceived,
    LowBalanceAlerted,
    NotifyRequested,
    NumberQualityChanged,
    SendRequested,
    StatusChanged,
    TemplateStatusChanged,
    WabaStatusChanged,
)

STANDARD: Final = "standard"
META: Final = "meta"
Format = Literal["standard", "meta"]

# Seconds to wait after each failed attempt (Standard Webhooks' example schedule: immediately,
# then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h): ten attempts over ~75.6 hours,
# beyond the three days after which a failing endpoint is disabled.
DEFAULT_RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)
# A Retry-After beyond this is read as this (a receiver must not park an event for weeks).
MAX_RETRY_AFTER_SECONDS = 86_400.0

# Our statuses that are client events (approved and unknown are internal steps).
# A message status clients hear of, and the event that tells them.
_STATUS_EVENTS: dict[str, ClientEventType] = {
    "sent": "message.sent",
    "delivered": "message.delivered",
    "read": "message.read",
    "failed": "message.failed",
    "expired": "message.expired",
    "rejected": "message.rejected",
}
CLIENT_STATUSES = frozenset(_STATUS_EVENTS)

_ENCODER = msgspec.json.Encoder()


def iso(ms: int) -> str:
    """`2026-12-06T10:00:00.000Z`: Standard Webhooks' ISO 8601 event time."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def event_id(event_type: str, *parts: str) -> str:
    """The client event's id: the same source always gives the same id."""
    return derived_id("evt", event_type, *parts)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutEvent:
    """One event for an account's endpoints: its exact body is what every attempt sends."""

    id: str
    account_id: str
    type: str  # a client event type, or meta.<field>
    format: Format
    at: int  # ms, when it happened
    body: bytes
    message_id: str | None = None
    details: dict[str, Any] | None = None  # message.accepted: what later statuses repeat

    def document(self, source_at: int, now: int) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": self.id,
            "account_id": self.account_id,
            "type": self.type,
            "format": self.format,
            "at": self.at,
            "source_at": source_at,
            "created_at": now,
            "payload": self.body.decode(),
        }
        if self.message_id is not None:
            doc["message_id"] = self.message_id
        if self.details is not None:
            doc["details"] = self.details
        return doc


def _standard(
    event_type: ClientEventType,
    source: tuple[str, ...],
    account_id: str,
    at: int,
    data: msgspec.Struct,
    message_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> OutEvent:
    """Our own event format; its id is derived from its type and `source`, the ids of what
    caused it, so that a redelivered source gives the same event."""
    eid = event_id(event_type, *source)
    body = _ENCODER.encode(
        ClientEvent(
            id=eid,
            type=event_type,
            timestamp=iso(at),
            account_id=account_id,
            data=msgspec.to_builtins(data),
        )
    )
    return OutEvent(eid, account_id, event_type, STANDARD, at, body, message_id, details)


@dataclass(frozen=True)
class MessageDetails:
    """What a message's status events repeat from its request."""

    phone_number_id: str = ""
    to: str | None = None
    type: str | None = None
    client_reference: str | None = None
    callback_data: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "phone_number_id": self.phone_number_id,
            "to": self.to,
            "type": self.type,
            "client_reference": self.client_reference,
            "callback_data": self.callback_data,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MessageDetails:
        return cls(
            phone_number_id=str(doc.get("phone_number_id") or ""),
            to=doc.get("to"),
            type=doc.get("type"),
            client_reference=doc.get("client_reference"),
            callback_data=doc.get("callback_data"),
        )

    @classmethod
    def from_message_doc(cls, doc: Mapping[str, Any]) -> MessageDetails:
        """From status's `messages` document (whose recipient is `recipient`)."""
        return cls(
            phone_number_id=str(doc.get("phone_number_id") or ""),
            to=doc.get("recipient"),
            type=doc.get("type"),
            client_reference=doc.get("client_reference"),
            callback_data=doc.get("callback_data"),
        )

    @property
    def complete(self) -> bool:
        """Whether it came from the request (a status-first document has no type)."""
        return self.type is not None


def accepted_event(request: SendRequested) -> OutEvent:
    details = MessageDetails(
        request.phone_number_id,
        request.recipient,
        request.message_type,
        request.client_reference,
        request.callback_data,
    )
    data = MessageEventData(
        message_id=request.message_id,
        status="accepted",
        phone_number_id=request.phone_number_id,
        to=request.recipient,
        type=request.message_type,
        client_reference=request.client_reference,
        biz_opaque_callback_data=request.callback_data,
        occurred_at=iso(request.accepted_at),
    )
    return _standard(
        "message.accepted",
        (request.message_id,),
        request.account_id,
        request.accepted_at,
        data,
        request.message_id,
        details.as_dict(),
    )


def accepted_event_id(message_id: str) -> str:
    return event_id("message.accepted", message_id)


def status_event(event: StatusChanged, details: MessageDetails | None) -> OutEvent | None:
    """One client event per message and status: Meta's duplicates and our own redeliveries map
    to the same id, whatever their source."""
    event_type = _STATUS_EVENTS.get(event.status)
    if event_type is None:
        return None
    details = details or MessageDetails()
    error = (
        MetaErrorData(code=event.error.code, title=event.error.title, details=event.error.details)
        if event.error is not None
        else None
    )
    pricing = (
        PricingData(
            billable=event.pricing.billable,
            category=event.pricing.category,
            type=event.pricing.type,
            pricing_model=event.pricing.pricing_model,
        )
        if event.pricing is not None
        else None
    )
    data = MessageEventData(
        message_id=event.message_id,
        status=event.status,
        phone_number_id=event.phone_number_id or details.phone_number_id,
        to=details.to,
        type=details.type,
        wamid=event.wamid,
        client_reference=details.client_reference,
        biz_opaque_callback_data=details.callback_data,
        error=error,
        reason=event.reason,
        pricing=pricing,
        occurred_at=iso(event.occurred_at),
    )
    return _standard(
        event_type,
        (event.message_id,),
        event.account_id,
        event.occurred_at,
        data,
        event.message_id,
    )


def received_event(event: InboundReceived) -> OutEvent | None:
    if event.account_id is None:
        return None  # a number nobody registered: no account to tell
    data = MessageReceivedData(
        wamid=event.wamid,
        phone_number_id=event.phone_number_id,
        wa_id=event.sender,
        contact_name=event.contact_name,
        type=event.message_type,
        content=event.content,
        context_wamid=event.context_wamid,
        media_id=event.media_id,
        referral=event.referral,
        sent_at=iso(event.sent_at),
        window_expires_at=(
            iso(event.window_expires_at) if event.window_expires_at is not None else None
        ),
    )
    return _standard(
        "message.received",
        (event.wamid,),
        event.account_id,
        event.sent_at,
        data,
    )


def template_event(event: TemplateStatusChanged, account_id: str) -> OutEvent:
    data = TemplateStatusData(
        waba_id=event.waba_id,
        template_id=event.template_id,
        name=event.name,
        language=event.language,
        status=event.status,
        reason=event.reason,
        category=event.category,
    )
    return _standard(
        "template.status_changed",
        (account_id, event.event_id),
        account_id,
        event.occurred_at,
        data,
    )


def quality_event(event: NumberQualityChanged, account_id: str) -> OutEvent:
    data = PhoneNumberQualityData(
        phone_number_id=event.phone_number_id,
        display_phone_number=event.display_phone_number or None,
        event=event.event,
        messaging_limit=event.messaging_limit,
        messages_per_second=event.messages_per_second,
    )
    return _standard(
        "phone_number.quality_changed",
        (account_id, event.event_id),
        account_id,
        event.occurred_at,
        data,
    )


def account_event(event: WabaStatusChanged, account_id: str) -> OutEvent:
    data = AccountUpdatedData(
        waba_id=event.waba_id, event=event.event, held=event.held, reasons=list(event.reasons)
    )
    return _standard(
        "account.updated",
        (account_id, event.event_id),
        account_id,
        event.occurred_at,
        data,
    )


def hold_event(event: AccountHoldChanged) -> OutEvent:
    """`account.hold_changed`: our fraud and spam rules held the account, or an operator
    released it."""
    data = AccountHoldData(
        held=event.held,
        change=event.change,
        rules=list(event.rules),
        rule=event.rule,
        reason=event.reason,
        observed=dict(event.observed),
        occurred_at=iso(event.occurred_at),
    )
    return _standard(
        "account.hold_changed",
        (event.event_id,),
        event.account_id,
        event.occurred_at,
        data,
    )


def low_balance_event(event: LowBalanceAlerted, currency: str) -> OutEvent:
    data = BalanceData(available=event.available, threshold=event.threshold, currency=currency)
    return _standard(
        "balance.low",
        (event.event_id,),
        event.account_id,
        event.occurred_at,
        data,
    )


def topped_up_event(event: BalanceToppedUp) -> OutEvent:
    data = BalanceData(available=event.available, amount=event.amount, currency=event.currency)
    return _standard(
        "balance.topped_up",
        (event.event_id,),
        event.account_id,
        event.occurred_at,
        data,
    )


def endpoint_test_event(request: NotifyRequested, endpoint_format: str) -> OutEvent:
    """`endpoint.test`: for a `meta` endpoint, a Meta-shaped envelope (its handler must accept
    it too) whose one change names our test; for a standard one, our event."""
    eid = event_id("endpoint.test", request.event_id)
    data = EndpointTestData(endpoint_id=request.endpoint_id)
    if endpoint_format == META:
        body = _ENCODER.encode(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "0",
                        "changes": [
                            {
                                "field": "hala_endpoint_test",
                                "value": {
                                    "event_id": eid,
                                    "endpoint_id": request.endpoint_id,
                                    "message": data.message,
                                    "timestamp": iso(request.requested_at),
                                },
                            }
                        ],
                    }
                ],
            }
        )
        return OutEvent(eid, request.account_id, "endpoint.test", META, request.requested_at, body)
    return _standard(
        "endpoint.test", (request.event_id,), request.account_id, request.requested_at, data
    )


# --- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretEntry:
    encrypted: str
    created_at: int
    expires_at: int | None


@dataclass(frozen=True)
class Endpoint:
    """A client's endpoint as ingest stored it (secrets still encrypted)."""

    id: str
    account_id: str
    url: str
    events: tuple[str, ...]
    format: str
    enabled: bool
    enabled_at: int
    secrets: tuple[SecretEntry, ...]
    deleted: bool = False
    created_at: int = 0


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return 0


def endpoint_from_doc(doc: Mapping[str, Any]) -> Endpoint:
    secrets = []
    for entry in doc.get("secrets") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("encrypted"), str):
            expires = entry.get("expires_at")
            secrets.append(
                SecretEntry(
                    entry["encrypted"],
                    _ms(entry.get("created_at")),
                    _ms(expires) if expires is not None else None,
                )
            )
    events = doc.get("events") or []
    return Endpoint(
        id=str(doc["_id"]),
        account_id=str(doc.get("account_id") or ""),
        url=str(doc.get("url") or ""),
        events=tuple(e for e in events if isinstance(e, str)),
        format=META if doc.get("format") == META else STANDARD,
        enabled=bool(doc.get("enabled", True)),
        enabled_at=_ms(doc.get("enabled_at")),
        secrets=tuple(secrets),
        deleted=doc.get("deleted_at") is not None,
        created_at=_ms(doc.get("created_at")),
    )


def live_secrets(endpoint: Endpoint, now: int) -> list[SecretEntry]:
    """The secrets that sign now, newest first: the current one, and a rotated-out one until
    its expiry."""
    live = [s for s in endpoint.secrets if s.expires_at is None or s.expires_at > now]
    return sorted(live, key=lambda s: (s.expires_at is None, s.created_at), reverse=True)


@dataclass(frozen=True)
class Health:
    """notify's verdict on an endpoint (`endpoint_states`)."""

    failing_since: int | None = None
    last_success_at: int | None = None
    last_failure_at: int | None = None
    disabled_at: int | None = None
    disabled_reason: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Health:
        if not doc:
            return cls()
        return cls(
            failing_since=doc.get("failing_since"),
            last_success_at=doc.get("last_success_at"),
            last_failure_at=doc.get("last_failure_at"),
            disabled_at=doc.get("disabled_at"),
            disabled_reason=doc.get("disabled_reason"),
        )

    def fields(self) -> dict[str, Any]:
        return {
            "failing_since": self.failing_since,
            "last_success_at": self.last_success_at,
            "last_failure_at": self.last_failure_at,
            "disabled_at": self.disabled_at,
            "disabled_reason": self.disabled_reason,
        }


def disabled(endpoint: Endpoint, health: Health) -> bool:
    """Disabled by notify after the client last enabled it (re-enabling needs no write of
    ours)."""
    return health.disabled_at is not None and health.disabled_at >= endpoint.enabled_at


def receives(endpoint: Endpoint, health: Health) -> bool:
    return endpoint.enabled and not endpoint.deleted and not disabled(endpoint, health)


def wants(endpoint: Endpoint, health: Health, event: OutEvent, source_at: int) -> bool:
    """A live event goes to the account's endpoints of its format that receive now, existed
    when it happened (a new endpoint, or a notify reading old records, never sends history)
    and, for our format, subscribe to its type (Meta's payloads all go to `meta` endpoints)."""
    if endpoint.account_id != event.account_id or endpoint.format != event.format:
        return False
    if source_at < endpoint.created_at:
        return False
    if not receives(endpoint, health):
        return False
    return event.format == META or event_matches(list(endpoint.events), event.type)


def replay_selects(endpoint: Endpoint, event_type: str, event_format: str) -> bool:
    """Which stored events a range replay re-delivers: the endpoint's own format and types."""
    if endpoint.format != event_format or event_type == "endpoint.test":
        return False
    return event_format == META or event_matches(list(endpoint.events), event_type)


# --- deliveries ---------------------------------------------------------------------------------

DeliveryKind = Literal["live", "replay", "test"]


def delivery_id(endpoint_id: str, eid: str, request_id: str | None = None) -> str:
    return f"{endpoint_id}:{eid}" if request_id is None else f"{endpoint_id}:{eid}:{request_id}"


def delivery_doc(
    endpoint: Endpoint,
    event_id_: str,
    event_type: str,
    kind: DeliveryKind,
    source_at: int,
    now: int,
    grace_ms: int,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A new delivery: attempted at once from memory; the poller takes it only once `next_at`
    is past (the process died, or its queue was full)."""
    return {
        "_id": delivery_id(endpoint.id, event_id_, request_id),
        "endpoint_id": endpoint.id,
        "event_id": event_id_,
        "event_type": event_type,
        "account_id": endpoint.account_id,
        "kind": kind,
        "state": "pending",
        "attempts": 0,
        "next_at": now + grace_ms,
        "created_at": now,
        "source_at": source_at,
    }


# --- signing ------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (unpadded base64 accepted, as Standard
    Webhooks' libraries do)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a whsec_ base64 secret") from exc


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def hub_signature(secret: str, body: bytes) -> str:
    """Meta's `X-Hub-Signature-256`, keyed with the secret string as the client configures it
    as its handler's app secret (e.g. pywa's `app_secret`)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(
    msg_id: str, body: bytes, secrets: Sequence[str], endpoint_format: str, timestamp: int
) -> dict[str, str]:
    """One attempt's headers, signed at the attempt's time (receivers refuse old timestamps).
    Every live secret signs (rotation); Meta's header carries one signature: the newest
    secret's."""
    headers = {
        "content-type": "application/json",
        "user-agent": "HalaWhatsup-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id, timestamp, body) for s in secrets
        ),
    }
    if endpoint_format == META and secrets:
        headers["X-Hub-Signature-256"] = hub_signature(secrets[0], body)
    return headers


# --- attempts, retries, health ------------------------------------------------------------------

AttemptOutcome = Literal[
    "delivered", "http_error", "throttled", "gone", "timeout", "connection_error", "blocked"
]
ATTEMPT_OUTCOMES: tuple[str, ...] = (
    "delivered",
    "http_error",
    "throttled",
    "gone",
    "timeout",
    "connection_error",
    "blocked",
)


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: an HTTP status, or an error kind (timeout, connection_error,
    blocked) when no answer came."""

    status: int | None
    latency_s: float
    error_kind: str | None = None
    error: str | None = None
    retry_after: str | None = None  # the header's raw value
    response: str = ""


def outcome_of(result: AttemptResult) -> AttemptOutcome:
    if result.status is None:
        kind = result.error_kind or "connection_error"
        return kind if kind in ("timeout", "blocked") else "connection_error"  # type: ignore[return-value]
    if 200 <= result.status < 300:
        return "delivered"
    if result.status == 410:
        return "gone"
    if result.status in (429, 503):
        return "throttled"
    return "http_error"


def retry_after_seconds(value: str | None, now: int) -> float | None:
    """`Retry-After`: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now / 1000)


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    jitter: float,
    draw: float,
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None: the schedule is
    exhausted. `draw` in [0, 1) spreads the delay by +-jitter. A Retry-After (429/503) is
    honoured: never sooner than the receiver asked, nor than the schedule says."""
    index = attempts_made - 1
    if index < 0 or index >= len(schedule):
        return None
    delay = schedule[index] * (1 + jitter * (2 * draw - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return max(0.0, delay)


@dataclass(frozen=True)
class DeliveryUpdate:
    state: str  # pending | delivered | failed
    next_at: int | None
    outcome: AttemptOutcome


def after_attempt(
    attempts_made: int,
    result: AttemptResult,
    now: int,
    schedule: Sequence[float],
    jitter: float,
    draw: float,
    retry_after_scale: float = 1.0,
) -> DeliveryUpdate:
    """The delivery after its `attempts_made`-th attempt: delivered, due again, or failed."""
    outcome = outcome_of(result)
    if outcome == "delivered":
        return DeliveryUpdate("delivered", None, outcome)
    if outcome == "gone":
        return DeliveryUpdate("failed", None, outcome)
    retry_after = retry_after_seconds(result.retry_after, now) if outcome == "throttled" else None
    if retry_after is not None:
        retry_after /= retry_after_scale
    delay = retry_delay(attempts_made, schedule, jitter, draw, retry_after)
    if delay is None:
        return DeliveryUpdate("failed", None, outcome)
    return DeliveryUpdate("pending", now + round(delay * 1000), outcome)


HealthChange = Literal["recovered", "failing", "disabled"] | None


def health_after(
    health: Health, endpoint: Endpoint, outcome: AttemptOutcome, now: int, disable_after_ms: int
) -> tuple[Health, HealthChange]:
    """The endpoint's health after an attempt, and what changed (what to store and tell):
    a success clears the failure clock; 410 disables at once; failing for `disable_after_ms`
    without a success disables. The clock starts again when the client re-enables."""
    if disabled(endpoint, health):
        return health, None
    if outcome == "delivered":
        changed: HealthChange = "recovered" if health.failing_since is not None else None
        return replace(health, failing_since=None, last_success_at=now), changed
    since = health.failing_since
    if since is None or since < endpoint.enabled_at:
        since = now
    after = replace(health, failing_since=since, last_failure_at=now)
    if outcome == "gone":
        return replace(after, disabled_at=now, disabled_reason="gone"), "disabled"
    if now - since >= disable_after_ms:
        return replace(after, disabled_at=now, disabled_reason="failing"), "disabled"
    return after, ("failing" if since == now else None)


def attempt_doc(
    delivery: Mapping[str, Any],
    n: int,
    started_at: int,
    result: AttemptResult,
    outcome: AttemptOutcome,
    next_at: int | None,
) -> dict[str, Any]:
    return {
        "_id": f"{delivery['_id']}:{n}",
        "endpoint_id": delivery["endpoint_id"],
        "event_id": delivery["event_id"],
        "event_type": delivery.get("event_type"),
        "account_id": delivery.get("account_id"),
        "kind": delivery.get("kind", "live"),
        "attempt": n,
        "at": started_at,
        "http_status": result.status,
        "latency_ms": round(result.latency_s * 1000, 1),
        "outcome": outcome,
        "error": None if outcome == "delivered" else (result.error or outcome),
        "response": result.response[:1024],
        "next_at": next_at,
    }


def excerpt(raw: bytes, limit: int = 1024) -> str:
    return raw[:limit].decode("utf-8", errors="replace")


def scaled(seconds: Iterable[float], scale: float) -> tuple[float, ...]:
    return tuple(s / scale for s in seconds)
