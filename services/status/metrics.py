"""status's metrics, declared in one place. Label values come from closed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS_RECEIVED = Counter(
    "status_webhooks_received_total",
    "Webhook POSTs received from Meta, before any check.",
)
WEBHOOKS_REJECTED = Counter(
    "status_webhooks_rejected_total",
    "Webhook POSTs refused, by reason (bad_signature, malformed, too_large, too_deep).",
    ["reason"],
)
WEBHOOKS_PUBLISHED = Counter(
    "status_webhooks_published_total",
    "Verified webhook POSTs written to Kafka (acks=all) before answering 200.",
)
WEBHOOK_RECORDS_PUBLISHED = Counter(
    "status_webhook_records_published_total",
    "webhooks.received records written for verified POSTs: one per WABA a POST names (more "
    "than status_webhooks_published_total when Meta batches several WABAs in one POST).",
)
WEBHOOK_PUBLISH_DURATION = Histogram(
    "status_webhook_publish_duration_seconds",
    "Time to get every record of a verified webhook acknowledged by Kafka.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
MESSAGES_CREATED = Counter(
    "status_messages_created_total",
    "Accepted requests read by the state writer, by outcome: created (the document), exists "
    "(a redelivery), completed (a document a status event had started).",
    ["outcome"],
)
STATUSES = Counter(
    "status_statuses_total",
    "Status items in webhooks, by Meta's status (sent, delivered, read, failed, played, other).",
    ["status"],
)
STATUSES_PARKED = Counter(
    "status_statuses_parked_total",
    "Status items parked because their wamid was not known yet.",
)
PARKED_STATUSES = Gauge(
    "status_parked_statuses",
    "Parked statuses waiting for their wamid (measured by the sweeper).",
)
INBOUND_MESSAGES = Counter(
    "status_inbound_messages_total",
    "Messages from WhatsApp users (kind inbound) and the business's own app-sent messages "
    "(kind echo), by Meta's type (known types, else other).",
    ["kind", "type"],
)
INBOUND_ANONYMISED = Counter(
    "status_inbound_messages_anonymised_total",
    "Inbound messages past retention whose content was removed and contact hashed.",
)
TEMPLATE_UPDATES = Counter(
    "status_template_updates_total",
    "Template webhooks, by kind (status, quality, category, components) and, for status, "
    "Meta's event (APPROVED, REJECTED, PAUSED, ..., other; none for other kinds).",
    ["kind", "event"],
)
NUMBER_UPDATES = Counter(
    "status_number_updates_total",
    "phone_number_quality_update and phone_number_name_update webhooks, by field.",
    ["field"],
)
ACCOUNT_UPDATES = Counter(
    "status_account_updates_total",
    "account_update webhooks, by Meta's event (known events, else other).",
    ["event"],
)
WABAS_HELD = Counter(
    "status_waba_status_changes_total",
    "WABA holds changed by account_update, by result (held: banned, deleted, removed; released).",
    ["result"],
)
WABA_FACTS = Counter(
    "status_waba_facts_total",
    "WABA-level webhooks kept in number_states without action (review, alerts, security, "
    "business capability), by field.",
    ["field"],
)
USER_PREFERENCES = Counter(
    "status_user_preferences_total",
    "Users' marketing preferences received, by kind (stop, resume, other).",
    ["kind"],
)
SUPPRESSIONS = Counter(
    "status_suppressions_total",
    "Changes to the marketing suppression list, by source (keyword, user_preferences, meta, "
    "api, operator) and outcome (suppressed, resubscribed, stale: an older fact than the "
    "stored one, ignored: the number is not registered or not the account's).",
    ["source", "outcome"],
)
WEBHOOK_ERRORS = Counter(
    "status_webhook_errors_total",
    "Value-level errors[] items Meta reported (problems of the app, account or number).",
)
CHANGES_IGNORED = Counter(
    "status_changes_ignored_total",
    "Webhook changes we do not act on, by field (known Meta field names or other).",
    ["field"],
)
ITEMS_MALFORMED = Counter(
    "status_items_malformed_total",
    "Single changes or items of a verified webhook that could not be parsed (the rest is used).",
)
PROCESSING_LAG = Histogram(
    "status_processing_lag_seconds",
    "From receiving a webhook to processing it (now - received_at).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
UNKNOWN_OUTCOMES_FAILED = Counter(
    "status_unknown_outcomes_failed_total",
    "Messages stuck in `unknown` that the sweeper declared failed (outcome_unknown).",
)
MESSAGES_ANONYMISED = Counter(
    "status_messages_anonymised_total",
    "Messages past retention whose recipient and content were removed.",
)

ACCEPT_TO_DELIVERED = Histogram(
    "status_accept_to_delivered_seconds",
    "From ingest accepting a message (202) to its delivery being stored.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
