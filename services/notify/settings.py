"""notify's settings (env prefix NOTIFY_). Defaults are production's, except the SMTP server,
which is the local sink `make run` starts. notify has no client port: it serves only the ops
endpoints (NOTIFY_OPS_HOST/NOTIFY_OPS_PORT, 9184). Its secrets (HALA_TOKEN_KEYS,
NOTIFY_SMTP_PASSWORD) follow shared/settings.py's rule, each also from `<NAME>_FILE`."""

from __future__ import annotations

import json
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.notify.core import DEFAULT_RETRY_SCHEDULE_SECONDS
from shared.secrets import TokenKeys
from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore", populate_by_name=True)

    # Only the ops endpoints (/healthz, /readyz, /metrics). Development mode (HALA_ENV, read
    # by ServiceSettings): plain http to loopback endpoints is allowed, and NOTIFY_TIME_SCALE
    # may compress the retry schedule.
    ops_port: int = 9184
    # Fernet keys that decrypt the endpoints' signing secrets (the same keys as the tokens').
    token_keys: TokenKeys = Field(SecretStr(""), validation_alias="HALA_TOKEN_KEYS")

    # Delivery: seconds after each failed attempt before the next (Standard Webhooks' example:
    # about 75 hours in all), each with +-jitter; then the delivery has failed.
    retry_schedule_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE_SECONDS)
    )
    retry_jitter: float = Field(0.2, ge=0, lt=1)
    # An endpoint with no success for this long is disabled and its owner emailed.
    disable_after_seconds: float = Field(3 * 86_400, gt=0)
    # Development only: schedule and disable rule run this many times faster (86400: a day a
    # second), so tests and demos see days of retries in seconds.
    time_scale: float = Field(1.0, gt=0)
    connect_timeout_seconds: float = Field(2.0, gt=0)
    total_timeout_seconds: float = Field(10.0, gt=0)
    max_response_bytes: int = Field(4096, gt=0)
    # Attempts in flight: per endpoint (a slow endpoint holds at most this many), and in all.
    per_endpoint_concurrency: int = Field(4, gt=0)
    max_in_flight: int = Field(128, gt=0)
    # Deliveries held in memory per endpoint; more wait in the database for the poller.
    per_endpoint_queue: int = Field(1000, gt=0)
    # How often the database is read for due retries (and deliveries nobody has in memory).
    poll_interval_seconds: float = Field(1.0, gt=0)
    # A new delivery is attempted from memory at once; the poller takes it only after this.
    first_attempt_grace_seconds: float = Field(30.0, gt=0)
    endpoint_cache_seconds: float = Field(2.0, gt=0)
    # A range replay re-delivers at most this many events.
    max_replay_events: int = Field(10_000, gt=0)
    # notify_events, deliveries and attempts older than this are deleted (message content in
    # events is personal data: the same retention as status's messages).
    retention_days: float = Field(30.0, gt=0)
    sweep_interval_seconds: float = Field(300.0, gt=0)

    # notify's consumer fetches. notify is on neither timed path (202 -> Meta, -> delivered
    # stored). With aiokafka's defaults (1 byte, 500 ms) it fetched whenever a record came, each
    # fetch naming its 66 partitions; at 64 KiB the broker holds a fetch for 250 ms (or 64 KiB):
    # ~4 fetches/s whatever the load. e2e at 30/s, quiet machine, alternated (bench/README.md,
    # "fetch cadence"): notify's fetches 3.21 -> 0.12 per message, its CPU 6.5 -> 0.7 ms; the
    # timed paths faster, not slower (the CPU given back); client events ~140 ms later (p99
    # 145 -> 285 ms at 24 msg/s; at worst ~2 x 250 ms, for a partition the last fetch read).
    fetch_min_bytes: int = Field(64 * 1024, ge=1)
    fetch_max_wait_ms: int = Field(250, ge=0, le=30_000)

    # Email alerts.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str = ""
    # Only with a username (a relay that wants a login); checked like every secret when given.
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "Hala Whatsup <alerts@hala.localhost>"
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    email_retry_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [10.0, 60.0, 300.0, 1800.0, 3600.0, 7200.0]
    )

    def consumer_options(self) -> dict[str, int]:
        """The fetch options of notify's consumer (shared.kafka.make_consumer overrides)."""
        return {
            "fetch_min_bytes": self.fetch_min_bytes,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }

    @field_validator("retry_schedule_seconds", "email_retry_seconds", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`NOTIFY_RETRY_SCHEDULE_SECONDS=5,300,1800` as well as a JSON list."""
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _smtp_login(self) -> Self:
        if self.smtp_username and self.smtp_password is None:
            raise ValueError(
                "NOTIFY_SMTP_USERNAME needs NOTIFY_SMTP_PASSWORD (or NOTIFY_SMTP_PASSWORD_FILE)"
            )
        return self

    @property
    def effective_time_scale(self) -> float:
        """The time scale in force: production always runs at 1."""
        return self.time_scale if self.development else 1.0
