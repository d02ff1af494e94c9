"""ingest's own metrics. Requests by route and status class are counted by shared.http's
middleware (hala_http_requests_total{service="ingest"}); these add what only ingest knows."""

from prometheus_client import Counter, Histogram

PUBLISH_DURATION = Histogram(
    "ingest_publish_duration_seconds",
    "Time from handing SendRequested to the producer until the broker acknowledged it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PUBLISH_UNCONFIRMED = Counter(
    "ingest_publish_unconfirmed_total",
    "Send requests answered 503 whose event may have been written all the same (the broker did "
    "not confirm it in time): the answer carries the message id to look up.",
)
REJECTIONS = Counter(
    "ingest_rejections_total",
    "Send requests refused, by error code.",
    ["code"],
)
IDEMPOTENT_REPLAYS = Counter(
    "ingest_idempotent_replays_total",
    "Send requests answered with the response of an earlier request with the same key.",
)
MESSAGES_ACCEPTED = Counter(
    "ingest_messages_accepted_total",
    "New messages accepted (202) and published, by message type.",
    ["type"],
)
INSERT_DURATION = Histogram(
    "ingest_idempotency_insert_duration_seconds",
    "Time a request with an Idempotency-Key waits for its idempotency record to be stored by "
    "the group commit (waiting for the insert in flight, then its own).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
IDEMPOTENCY_RECORDS_DELETED = Counter(
    "ingest_idempotency_records_deleted_total",
    "Idempotency records deleted by the sweeper once past retention (48 h).",
)
INSERT_BATCH = Histogram(
    "ingest_idempotency_insert_batch_records",
    "Idempotency records per insert_many of the group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
)
PASSTHROUGH_CALLS = Counter(
    "ingest_passthrough_calls_total",
    "Calls passed through to Meta (read, typing, upload, media_url, download, delete_media): "
    "made, or refused by the number's pace.",
    ["kind", "outcome"],
)
ENDPOINT_CHANGES = Counter(
    "ingest_webhook_endpoint_changes_total",
    "Webhook endpoints created, updated, deleted or given a new secret through the API, by "
    "kind of change.",
    ["kind"],
)
NOTIFY_REQUESTS = Counter(
    "ingest_notify_requests_total",
    "Test events and replays requested through the webhook endpoint API (published).",
    ["kind"],
)
CONTACT_LIST_CHANGES = Counter(
    "ingest_contact_list_changes_total",
    "Changes to an account's lists through the API: suppressions requested (suppress, "
    "resubscribe), numbers blocked or unblocked, keyword lists replaced.",
    ["list", "action"],
)
RATE_LIMITED = Counter(
    "ingest_rate_limited_total",
    "Requests refused with 429 rate_limited because the account's or the API key's request "
    "rate was used up, by kind of limit (account, key).",
    ["kind"],
)
IN_FLIGHT_REFUSALS = Counter(
    "ingest_in_flight_refusals_total",
    "Send requests refused with 429 too_many_in_flight: the account has its maximum of "
    "messages accepted and not yet final.",
)
