from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.pipeline import BatchPolicy
from shared.settings import DEVELOPMENT_TOPUP_SIGNING_KEY, ServiceSettings


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)

    # billing serves only the ops endpoints.
    ops_port: int = 9183
    # faust's app id, prefixed like the topics, is billing's consumer group: it starts with
    # `billing`, as the group ACL of billing's principal requires (shared/kafka_access.py).
    faust_app_id: str = "billing"
    # memory:// replays the changelog at start; billing keeps no faust tables, so it is free.
    faust_store: str = "memory://"
    # faust creates `<app id>-data` here even without tables (default: the working directory).
    faust_datadir: str = ".run/billing"
    # The low-balance threshold of an account that has none of its own
    # (`accounts.low_balance_threshold`), in micros of the account currency.
    low_balance_threshold: int = 1_000_000
    # How long an account's own threshold is used before it is read again: a change by
    # `hala accounts update --low-balance-threshold` applies within this time.
    threshold_refresh_s: float = 30.0
    # The most messages an account may have in flight (reserved, not yet charged or released)
    # unless it has its own cap (`hala accounts update --max-in-flight`, read with the
    # threshold, so it applies within threshold_refresh_s). A send beyond it is rejected,
    # reason too_many_in_flight. 0: no cap.
    max_in_flight: int = Field(50_000, ge=0)
    # How often the reconciler compares the ledger with the balances. A pass reads the entries
    # written since the last one and the last reconcile_settle_margin_s of entries with one
    # query (handed out in pages of reconcile_page_size), not the whole ledger (reconcile.py).
    reconcile_interval_s: float = 120.0
    # At most this share of the time in passes: after a pass of d seconds the next one waits
    # until d / duty after its start (on FerretDB a pass scans the ledger, ~1 min at 100,000
    # messages on a busy machine; MongoDB's index keeps passes short, so the interval rules).
    reconcile_max_duty: float = Field(0.25, gt=0, le=1)
    reconcile_page_size: int = Field(1000, gt=0)
    reconcile_settle_margin_s: float = Field(300.0, gt=0)
    # Transient failures (database, broker) are retried in place, forever, with this backoff.
    retry_first_delay_s: float = 0.2
    retry_max_delay_s: float = 10.0
    # faust's defaults prefetch 4096 records per stream and commit every 10 000 acks or 2.8 s.
    # A small buffer keeps the redelivery after a crash and the drain on a rebalance short,
    # and frequent commits keep the replay window small.
    stream_buffer_maxsize: int = 64
    # Fairness between accounts (app.py FairIntake). Back-pressure is per partition: a
    # partition with `pause_at_records` events read and not yet acked is paused in faust's
    # consumer and resumed once down to `resume_at_records`, so a campaign's partition does
    # not hold the stream (and another account's records behind it) once it is full; each
    # batch is taken round-robin by account among the events read. A partition holds at most
    # its budget, one fetch (`fetch_partition_bytes`) and faust's stream buffer.
    pause_at_records: int = Field(512, ge=1)
    resume_at_records: int = Field(128, ge=0)
    # The bytes fetched per partition: faust hands the agent a whole poll (all that was
    # fetched, interleaved by partition) before it polls again, so another account's record
    # fetched later waits for that poll: at most this many bytes of each busy partition (~400
    # records of ~600 bytes; aiokafka's default 1 MiB held it behind thousands).
    fetch_partition_bytes: int = Field(256 * 1024, ge=1024)
    # How long a fetch waits on the broker for idle partitions (faust hard-codes 1,500 ms:
    # faust_consumer.py sets it). aiokafka has one fetch in flight per broker, so a partition
    # resumed while that long poll is in flight waits for it. `bench billing --quick`,
    # 2026-12-06, one run each: 2,620 events/s at 100 ms, 1,328 at 1,500 ms (main: 1,373).
    # The price: an idle billing sends ~10 fetch requests/s instead of ~0.7.
    fetch_max_wait_ms: int = Field(100, ge=0, le=30_000)
    commit_every: int = 100
    commit_interval_s: float = 1.0
    # How often overdue reservations are looked for, and how old one must be to be released
    # (default: Meta's 30-day TTL + 7 days of webhook retries, core.RESERVATION_HORIZON_MS).
    sweep_interval_s: float = 3600.0
    sweep_page_size: int = Field(500, gt=0)  # reserve entries read per step
    reservation_horizon_s: float = 37 * 86_400.0
    # Records applied together at most; a batch is what is buffered, plus, while faust's stream
    # buffer holds more records read for the agent, what arrives within `batch_linger_ms` of its
    # first record (nothing more read, or 0: never waited for).
    batch_max_records: int = 128
    batch_linger_ms: float = Field(5.0, ge=0)
    # Reserve entries kept in memory for their settlements (ledger entries never change).
    reservation_cache_size: int = 10_000
    # Balances held in memory while this process owns the account's partitions (~1 kB each):
    # an account's next batch decides without reading its document.
    balance_cache_size: int = 10_000
    # faust waits 60 s by default before a dead member's partitions move: after a kill -9 the
    # restarted worker would stall that long. Heartbeats come from faust's consumer thread, so
    # a slow event does not make a live worker look dead.
    session_timeout_s: float = 10.0
    # Top-ups are applied only when signed with this key (the admin tool holds it too). The
    # default is the development value (refused outside development: shared/settings.py).
    topup_signing_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_TOPUP_SIGNING_KEY), validation_alias="HALA_TOPUP_SIGNING_KEY"
    )

    @model_validator(mode="after")
    def _marks_in_order(self) -> "BillingSettings":
        self.partition_budget()  # raises for a resume mark not below the pause mark
        return self

    def partition_budget(self) -> BatchPolicy:
        """The pause and resume marks, checked as the shared pipeline's (resume below pause)."""
        return BatchPolicy(pause_at=self.pause_at_records, resume_at=self.resume_at_records)

    def topup_key_bytes(self) -> bytes:
        return self.topup_signing_key.get_secret_value().encode()
