"""What a dead letter is, pure (no I/O): its headers, their limits and the closed set of
reasons. `DeadLetters` in shared/kafka.py writes them (for shared/pipeline.py and the sender);
`hala dlq` reads them."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import PermanentError

# Why a record was dead-lettered (the `reason` label of hala_dead_letters_total): it can never
# succeed, or its handling kept raising something else (a bug, a shape nobody foresaw).
PERMANENT = "permanent"
UNEXPECTED = "unexpected"
DEAD_LETTER_REASONS = (PERMANENT, UNEXPECTED)

# Headers a dead letter carries besides the original record's own (`hala dlq replay` removes
# them again, and adds REPLAYED_FROM). Values are UTF-8 text.
DLQ_HEADERS = (
    "error_type",
    "error_reason",
    "error_detail",
    "error_traceback",
    "source_topic",
    "source_partition",
    "source_offset",
    "service",
    "attempts",
    "dead_lettered_at",
)
REPLAYED_FROM = "replayed_from"
ERROR_DETAIL_LIMIT = 1000
ERROR_TRACEBACK_LIMIT = 8 * 1024


@dataclass(frozen=True)
class Failure:
    """Why a record is dead-lettered: the error it ended with, after how many attempts."""

    error: BaseException
    attempts: int

    @property
    def reason(self) -> str:
        return failure_reason(self.error)


def failure_reason(error: BaseException) -> str:
    """`permanent` for a record that can never succeed, `unexpected` for anything else that
    was not a dependency failure (a bug, a shape nobody foresaw)."""
    return PERMANENT if isinstance(error, PermanentError) else UNEXPECTED


def _tail(text: str, limit: int) -> bytes:
    """`text` as UTF-8, cut to its last `limit` bytes (a traceback's end names the failure)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    marker = b"...(truncated)\n"
    return marker + data[len(data) - limit + len(marker) :].decode("utf-8", errors="ignore").encode(
        "utf-8"
    )


def _head(text: str, limit: int) -> bytes:
    return (
        text.encode("utf-8", errors="replace")[:limit]
        .decode("utf-8", errors="ignore")
        .encode("utf-8")
    )


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]] | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    failure: Failure,
    service: str,
    now_ms: int,
) -> list[tuple[str, bytes]]:
    """A dead letter's headers: the record's own (minus any earlier dead letter's), then why
    it failed and where it came from."""
    error = failure.error
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    kept = [(k, v) for k, v in (original or ()) if k not in DLQ_HEADERS]
    return kept + [
        ("error_type", type(error).__name__.encode()),
        ("error_reason", failure.reason.encode()),
        ("error_detail", _head(str(error), ERROR_DETAIL_LIMIT)),
        ("error_traceback", _tail(trace, ERROR_TRACEBACK_LIMIT)),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("service", service.encode()),
        ("attempts", str(failure.attempts).encode()),
        ("dead_lettered_at", str(now_ms).encode()),
    ]
