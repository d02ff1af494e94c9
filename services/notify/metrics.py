"""notify's metrics, declared in one place. Label values come from closed sets only (event
types, outcomes, reasons, alert kinds): never an account, endpoint, URL or event id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "notify_events_total",
    "Client events built from platform events, by type (client event types; meta for Meta's "
    "payloads) and outcome (stored: some endpoint may receive it; no_endpoint: the account has "
    "none of its format; duplicate: stored before).",
    ["type", "outcome"],
)
ATTEMPTS = Counter(
    "notify_attempts_total",
    "Delivery attempts, by outcome (delivered, http_error, throttled, gone, timeout, "
    "connection_error, blocked).",
    ["outcome"],
)
DELIVERIES = Counter(
    "notify_deliveries_total",
    "Deliveries finished, by outcome (delivered; failed: retries exhausted or 410; cancelled: "
    "endpoint deleted or disabled).",
    ["outcome"],
)
ATTEMPT_DURATION = Histogram(
    "notify_attempt_duration_seconds",
    "Time one delivery attempt took (connect, send, first bytes of the answer).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENT_LAG = Histogram(
    "notify_event_lag_seconds",
    "From the source event's record in Kafka to its first delivery attempt starting.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ENDPOINTS_DISABLED = Counter(
    "notify_endpoints_disabled_total",
    "Endpoints notify disabled, by reason (gone: answered 410; failing: no success for the "
    "disable period).",
    ["reason"],
)
IN_FLIGHT = Gauge(
    "notify_attempts_in_flight",
    "Delivery attempts waiting for their endpoint's answer now.",
)
QUEUED = Gauge(
    "notify_deliveries_queued",
    "Deliveries held in memory, waiting for a free slot of their endpoint.",
)
REQUESTS = Counter(
    "notify_requests_total",
    "Client requests from ingest (test, replay), by outcome (done, unknown_endpoint, "
    "unknown_event).",
    ["kind", "outcome"],
)
EMAILS = Counter(
    "notify_emails_total",
    "Alert emails, by kind (balance_low, template_status, number_quality, endpoint_disabled, "
    "account_hold) "
    "and outcome (sent, failed: given up, retried: a transient failure, no_recipient).",
    ["kind", "outcome"],
)
SWEPT = Counter(
    "notify_swept_total",
    "Events, deliveries and attempts deleted past retention.",
)
