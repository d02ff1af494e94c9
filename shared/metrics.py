"""Metrics every service exposes (the per-service ones live in each service's metrics.py).

Labels come from closed sets only: service, route templates, status classes, outcomes, topic and
partition numbers — never account ids, phone numbers or message ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.dead_letters import DEAD_LETTER_REASONS

CONSUMER_LAG = Gauge(
    "hala_consumer_lag_records",
    "Records between the group's committed offset and the partition's end offset.",
    ["service", "group", "topic", "partition"],
)
RECORDS_HANDLED = Counter(
    "hala_consumer_records_total",
    "Kafka records a consumer finished with, by outcome.",
    ["service", "outcome"],
)
BATCH_RECORDS = Histogram(
    "hala_consumer_batch_records",
    "Records per batch a consumer pipeline handed to its effect (shared/pipeline.py).",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
DEAD_LETTERS = Counter(  # reason: one of DEAD_LETTER_REASONS
    "hala_dead_letters_total",
    "Records sent to a dead-letter topic, by reason: permanent (the record can never succeed) "
    "or unexpected (its handling kept raising something else: a bug, a shape nobody foresaw).",
    ["service", "reason"],
)
__all__ = [
    "BATCH_RECORDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DEAD_LETTER_REASONS",
    "DEPENDENCY_UP",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "MONGODB_COMMANDS",
    "MONGODB_COMMAND_NAMES",
    "RECORDS_HANDLED",
]
HTTP_REQUESTS = Counter(
    "hala_http_requests_total",
    "HTTP requests served, by route template and status class.",
    ["service", "route", "status_class"],
)
HTTP_DURATION = Histogram(
    "hala_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DEPENDENCY_UP = Gauge(
    "hala_dependency_up",
    "1 when the last readiness probe of a dependency succeeded.",
    ["service", "dependency"],
)

# The commands the services send, and `other` for any name outside this closed set.
MONGODB_COMMAND_NAMES = (
    "insert",
    "update",
    "delete",
    "find",
    "getMore",
    "findAndModify",
    "aggregate",
    "count",
    "distinct",
    "createIndexes",
    "listIndexes",
    "listCollections",
    "killCursors",
    "ping",
    "endSessions",
    "drop",
    "dropDatabase",
    "other",
)
MONGODB_COMMANDS = Counter(  # command: one of MONGODB_COMMAND_NAMES
    "hala_mongodb_commands_total",
    "Commands sent to the database by this process (each one a round trip), by command name. "
    "The benchmark divides their sum by the messages handled: database operations per message.",
    ["command"],
)
