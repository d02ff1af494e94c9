"""structlog JSON logs (orjson-rendered bytes), one line per event with a fixed snake_case name.

Never log message bodies, phone numbers, tokens or API keys: the processors below drop keys whose
names say they hold such data, as a safety net behind careful call sites.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

_REDACTED_KEYS = frozenset(
    {
        "token",
        "access_token",
        "api_key",
        "authorization",
        "body",
        "text",
        "recipient",
        "to",
        "phone",
        "password",
        "secret",
    }
)


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in _REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    numeric_level = logging.getLevelName(level.upper())
    logging.basicConfig(level=numeric_level, stream=sys.stderr, format="%(message)s")

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        # A constant field, not a context variable: merging context variables copies the
        # whole context on every line (a line per request in ingest).
        event_dict["service"] = service
        return event_dict

    structlog.configure(
        processors=[
            add_service,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.BytesLoggerFactory(file=sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
