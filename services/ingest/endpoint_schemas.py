"""The webhook endpoint API's bodies and answers, declared once as msgspec Structs: requests are
decoded (and validated) into them in one pass by services/ingest/endpoints.py, and the OpenAPI
document's schemas are generated from them (services/ingest/openapi.py). A unit test keeps each
answer the core builds equal to its declaration.

The rules beyond a type (which event types exist, which URLs are acceptable, rotation) are
shared with `hala webhooks` in shared/webhook_endpoints.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from shared.client_events import EndpointFormat
from shared.webhook_endpoints import MAX_DESCRIPTION_CHARS, MAX_EVENT_ID_CHARS, MAX_EVENT_PATTERNS
from shared.webhook_urls import MAX_URL_LENGTH

EndpointUrl = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description=(
            "Where events are POSTed: https, resolving to public addresses (in development also "
            "http to loopback)."
        ),
    ),
]
EventPattern = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        examples=["message.*"],
        description=(
            "An event type (e.g. `message.delivered`), every type under a prefix (`message.*`), "
            "or `*` for all of them."
        ),
    ),
]
EventPatterns = Annotated[list[EventPattern], Meta(min_length=1, max_length=MAX_EVENT_PATTERNS)]
Description = Annotated[str, Meta(max_length=MAX_DESCRIPTION_CHARS)]
ClientTime = Annotated[datetime, Meta(tz=True, description="ISO 8601 with a time zone.")]
EventId = Annotated[str, Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]


class _Body(Struct, forbid_unknown_fields=True):
    pass


class WebhookEndpointCreate(_Body, kw_only=True):
    """`POST /v1/webhook-endpoints`. `format: standard` delivers our events (Standard Webhooks
    signatures); `meta` forwards Meta's own webhook payloads for the account's numbers, signed
    with `X-Hub-Signature-256` under the endpoint's secret."""

    url: EndpointUrl
    events: EventPatterns
    format: EndpointFormat = "standard"
    description: Description | None = None


class WebhookEndpointUpdate(_Body, kw_only=True):
    """`PATCH /v1/webhook-endpoints/{id}`: the fields given change. `enabled: true` also
    re-enables an endpoint that was disabled after failing (or answering 410)."""

    url: EndpointUrl | UnsetType = UNSET
    events: EventPatterns | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET


class WebhookReplayRequest(_Body, kw_only=True):
    """`POST /v1/webhook-endpoints/{id}/replay`: one event again (`event_id`), or every event
    of the endpoint's types that happened in [`since`, `until`) (`until` defaults to now), each
    with its original id."""

    since: ClientTime | UnsetType = UNSET
    until: ClientTime | UnsetType = UNSET
    event_id: EventId | UnsetType = UNSET


# --- answers ----------------------------------------------------------------------------------


class _Answer(Struct, forbid_unknown_fields=True):
    pass


class EndpointSecretInfo(_Answer):
    """A secret that signs deliveries now (never its value): the current one has no
    `expires_at`; a rotated-out one signs until its `expires_at`."""

    id: str
    created_at: str
    expires_at: str | None


class EndpointHealth(_Answer):
    """The delivery side's verdict: `disabled` after a 410 or 3 days of failures (until the
    endpoint is enabled again), `failing_since` while deliveries fail."""

    disabled: bool
    disabled_reason: str | None
    disabled_at: str | None
    failing_since: str | None
    last_success_at: str | None


class WebhookEndpointView(_Answer):
    """An endpoint; `receiving` says whether events are delivered to it now (enabled, and not
    disabled for failing)."""

    id: Annotated[str, Meta(examples=["we_01jf8z3v9j6q8w4t2abcdefghj"])]
    url: str
    events: list[str]
    format: EndpointFormat
    description: str
    enabled: bool
    receiving: bool
    created_at: str
    updated_at: str
    secrets: list[EndpointSecretInfo]
    health: EndpointHealth


class WebhookEndpointWithSecret(_Answer):
    """The answer to a creation or a rotation: the endpoint and its new secret, shown this once
    (store it: it verifies `webhook-signature`, or `X-Hub-Signature-256` for `format: meta`)."""

    endpoint: WebhookEndpointView
    secret: Annotated[
        str,
        Meta(
            pattern=r"^whsec_[A-Za-z0-9+/]{43}=$",
            description="`whsec_` + base64 of 32 random bytes.",
        ),
    ]


class WebhookEndpointPage(_Answer):
    data: list[WebhookEndpointView]
    next_cursor: str | None


class DeliveryAttemptView(_Answer):
    """One delivery attempt: when, which event, what the endpoint answered and how fast.
    `http_status` is null when no answer came (timeout, connection refused, blocked address)."""

    id: str
    event_id: str | None
    event_type: str | None
    attempt: int | None
    attempted_at: str | None
    outcome: str | None
    http_status: int | None
    latency_ms: float | None
    error: str | None


class DeliveryAttemptPage(_Answer):
    data: list[DeliveryAttemptView]
    next_cursor: str | None


class NotifyRequestAccepted(_Answer):
    """A test event or a replay was queued (the delivery side sends it shortly): its
    attempts show in the endpoint's deliveries."""

    request_id: str
    endpoint_id: str
    kind: Literal["test", "replay"]
    requested_at: str
    event_id: str | UnsetType | None = UNSET
    since: str | UnsetType | None = UNSET
    until: str | UnsetType | None = UNSET
