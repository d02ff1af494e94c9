"""guard's metrics, declared in one place. Labels from closed sets only (record kinds, rules,
outcomes): never an account id."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECORDS = Counter(
    "guard_records_total",
    "Records read, by kind (send_requested, status_changed, quality_changed, "
    "release_requested) and outcome (applied, replayed: applied before a restart, skipped: "
    "nothing for the rules, e.g. an unregistered number).",
    ["kind", "outcome"],
)
HOLDS = Counter(
    "guard_holds_total",
    "Accounts held, by the rule that fired (failure_rate, meta_spam, quality_red, "
    "volume_spike, new_recipients).",
    ["rule"],
)
RELEASES = Counter(
    "guard_releases_total",
    "Operator releases applied.",
)
NEW_RECIPIENTS = Counter(
    "guard_new_recipients_total",
    "Sends to a recipient the account had never sent to (as far as guard remembers).",
)
BATCH_DURATION = Histogram(
    "guard_batch_duration_seconds",
    "One batch of records: apply, evaluate, write holds and states, publish.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RECIPIENTS_SWEPT = Counter(
    "guard_recipients_swept_total",
    "Remembered recipients deleted after GUARD_RECIPIENT_MEMORY_DAYS.",
)
