"""billing's metrics. Labels come from closed sets: registry topic names, outcomes, reasons."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RESERVATIONS = Counter("billing_reservations_total", "Credit reservations made for a send.")
REJECTIONS = Counter("billing_rejections_total", "Sends refused by billing, by reason.", ["reason"])
CHARGES = Counter("billing_charges_total", "Messages charged on Meta's billable delivery.")
CHARGED_MICROS = Counter(
    "billing_charged_micros_total", "Micros of account currency charged for delivered messages."
)
REFUNDS = Counter(
    "billing_refunds_total", "Reservations released (failed, expired, rejected or free messages)."
)
TOPUPS = Counter(
    "billing_topups_total", "Top-ups applied (each announced once as BalanceToppedUp)."
)
LOW_BALANCE_ALERTS = Counter(
    "billing_low_balance_alerts_total",
    "Accounts whose available credit fell below their threshold.",
)
EVENTS = Counter(
    "billing_events_total", "Input events billing finished with, by outcome.", ["topic", "outcome"]
)
EVENT_DURATION = Histogram(
    "billing_event_duration_seconds",
    "Time to apply the batch an input event was applied in (one event when alone), retries "
    "included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
LEDGER_DRIFT = Gauge(
    "billing_ledger_drift_micros",
    "Absolute difference between the ledger and the balances at the last reconciliation, "
    "summed over accounts. Anything but zero is a bug.",
)
BATCH_SIZE = Histogram(
    "billing_batch_size_records",
    "Input records applied together: what was already buffered, up to the cap.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BATCH_FALLBACKS = Counter(
    "billing_batch_fallbacks_total",
    "Batches applied one record at a time instead (a redelivery, a duplicate, an undecodable "
    "record, a failure), by reason.",
    ["reason"],
)
RESERVATIONS_EXPIRED = Counter(
    "billing_reservations_expired_total",
    "Reservations without a final status past Meta's TTL and webhook retries, expired by the "
    "sweeper (billing's agent then releases them).",
)
