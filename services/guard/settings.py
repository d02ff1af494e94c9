"""guard's settings (env prefix GUARD_): each rule's threshold, window and minimum (the defaults
of every account; `hala accounts update --guard-rule` overrides them per account), and how
long recipients are remembered. guard has no client port: it serves only the ops endpoints
(GUARD_OPS_HOST/GUARD_OPS_PORT, 9185). Its secret (GUARD_RECIPIENT_HASH_KEY) follows
shared/settings.py's rule: also from `<NAME>_FILE`, its development value refused elsewhere."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.guard.core import Rule, Rules
from shared.settings import ServiceSettings

DEVELOPMENT_RECIPIENT_HASH_KEY = "dev-guard-recipient-hash-key"


class GuardSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GUARD_", extra="ignore", populate_by_name=True)

    ops_port: int = 9185
    # `guard_recipients` knows recipients by a keyed hash (HMAC-SHA256 under this key), never by
    # number, and forgets them this long after first seen (one seen again later counts as new
    # once more).
    recipient_hash_key: SecretStr = SecretStr(DEVELOPMENT_RECIPIENT_HASH_KEY)
    recipient_memory_days: float = Field(90.0, gt=0)
    sweep_interval_seconds: float = Field(3600.0, gt=0)
    sweep_page_size: int = Field(500, gt=0)
    # An account's overrides (`accounts.guard_rules`) are read again after this.
    overrides_cache_seconds: float = Field(60.0, ge=0)
    max_batch: int = Field(1000, gt=0)
    # how long the first record of a batch waits for others (the pipeline's batch by time)
    max_batch_wait_seconds: float = Field(0.05, ge=0, le=5)
    # guard's consumer fetches. guard is on neither timed path (202 -> Meta, -> delivered
    # stored) and its rules look at windows of a minute or more; with aiokafka's defaults (1
    # byte, 500 ms) it fetched whenever a record came. notify's measured defaults (it reads the
    # same account-keyed topics, and more; bench/README.md, h43): a fetch every 250 ms or 64
    # KiB, a hold up to ~500 ms later.
    fetch_min_bytes: int = Field(64 * 1024, ge=1)
    fetch_max_wait_ms: int = Field(250, ge=0, le=30_000)

    # failure_rate: failed / finished (Meta's failures) over the window, once `minimum` finished
    failure_rate_threshold: float = Field(0.5, gt=0, le=1)
    failure_rate_window_seconds: int = Field(900, ge=60)
    failure_rate_minimum: int = Field(50, ge=1)
    # meta_spam: this many 131048 (spam rate limit) failures in the window
    meta_spam_threshold: float = Field(1, ge=1)
    meta_spam_window_seconds: int = Field(3600, ge=60)
    # quality_red: this many of the account's numbers flagged (RED) within the window
    quality_red_threshold: float = Field(1, ge=1)
    quality_red_window_seconds: int = Field(86_400, ge=60)
    # volume_spike: sends in the window above threshold x the 7-day average, once `minimum`
    volume_spike_threshold: float = Field(5.0, gt=1)
    volume_spike_window_seconds: int = Field(3600, ge=60)
    volume_spike_minimum: int = Field(500, ge=1)
    # new_recipients: this share of the window's sends to never-seen recipients, once `minimum`
    new_recipients_threshold: float = Field(0.9, gt=0, le=1)
    new_recipients_window_seconds: int = Field(3600, ge=60)
    new_recipients_minimum: int = Field(200, ge=1)

    def consumer_options(self) -> dict[str, int]:
        """The fetch options of guard's consumer (shared.kafka.make_consumer overrides)."""
        return {
            "fetch_min_bytes": self.fetch_min_bytes,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }

    def recipient_hash_key_bytes(self) -> bytes:
        return self.recipient_hash_key.get_secret_value().encode()

    def rules(self) -> Rules:
        return Rules(
            failure_rate=Rule(
                self.failure_rate_threshold,
                self.failure_rate_window_seconds,
                self.failure_rate_minimum,
            ),
            meta_spam=Rule(self.meta_spam_threshold, self.meta_spam_window_seconds),
            quality_red=Rule(self.quality_red_threshold, self.quality_red_window_seconds),
            volume_spike=Rule(
                self.volume_spike_threshold,
                self.volume_spike_window_seconds,
                self.volume_spike_minimum,
            ),
            new_recipients=Rule(
                self.new_recipients_threshold,
                self.new_recipients_window_seconds,
                self.new_recipients_minimum,
            ),
        )
