"""The sender's metrics. Labels come from closed sets only (outcomes, error classes, Meta's error
codes from our own table): never phone numbers, recipients or message ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# The service's name: its label in the shared metrics and its logs, its consumer group.
SERVICE = "sender"

META_REQUESTS = Counter(
    "sender_meta_requests_total",
    "Send requests made to Meta's Graph API, by outcome and error class.",
    ["outcome", "error_class"],  # outcome: accepted|rejected|unreachable|ambiguous
)
META_REQUEST_DURATION = Histogram(
    "sender_meta_request_duration_seconds",
    "Time from sending a request to Meta until its answer (or the failure).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PACING_WAIT = Histogram(
    "sender_pacing_wait_seconds",
    "Time between a message becoming eligible (recipient and tier permitting) and its send.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PAIR_RATE_PARKED = Counter(
    "sender_pair_rate_parked_total",
    "Messages that had to wait for their recipient's pair rate (a hot recipient).",
)
THROTTLE_ERRORS = Counter(
    "sender_throttle_errors_total",
    "Throttling errors Meta answered (must stay zero: pacing exists to avoid them).",
    ["code"],
)
MESSAGES_EXPIRED = Counter(
    "sender_messages_expired_total",
    "Messages not sent because their validity ran out first.",
)
OUTCOMES = Counter(
    "sender_outcomes_total",
    "Outcomes published, by status (sent, failed, expired, unknown) and whether it was replayed.",
    ["status", "replayed"],
)
MESSAGES_IN_FLIGHT = Gauge(
    "sender_messages_in_flight",
    "Messages taken off the queue and not finished yet (storing, waiting for a token, at Meta).",
)
MESSAGES_QUEUED = Gauge(
    "sender_messages_queued",
    "Messages held in memory waiting for their send time.",
)
NUMBERS_HELD = Gauge(
    "sender_numbers_held",
    "Phone numbers on which sending is held (token expired, account restricted, maintenance).",
)
ALERTS = Counter(
    "sender_alerts_total",
    "Operator alerts raised by the sender, by kind.",
    ["kind"],  # phone_number_held, waba_held
)
PARTITIONS_PAUSED = Gauge(
    "sender_partitions_paused",
    "Partitions of send-approved held back (left out of the polls) because they are behind "
    "(their numbers hold more than they send in SENDER_BACKLOG_SECONDS) or memory is full.",
)
OLDEST_WAITING = Gauge(
    "sender_oldest_waiting_message_age_seconds",
    "Age of the oldest message taken in and not finished yet (0 when there is none).",
)

ACCEPT_TO_META = Histogram(
    "sender_accept_to_meta_seconds",
    "From ingest accepting a message (202) to Meta accepting it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
INBOUND_COUNTED = Counter(
    "sender_inbound_counted_total",
    "Inbound messages to numbers this instance paces, each taking a token from the number's "
    "buckets (Meta counts them against the same throughput).",
)
UNEXPECTED_ERRORS = Counter(
    "sender_unexpected_errors_total",
    "Bugs met and survived, by kind: a message's handling (retried, then dead-lettered), a "
    "lane's dispatcher (restarted) or a followed topic's record (skipped).",
    ["kind"],  # delivery|dispatcher|follower
)
