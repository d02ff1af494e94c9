"""status's settings (env prefix STATUS_). The secrets' defaults match the local simulator
(tools/metasim/default.yaml) so that `make run` works out of the box; outside development
(HALA_ENV) they are refused, and production sets its own (or `<NAME>_FILE`)."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class StatusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATUS_", extra="ignore", populate_by_name=True)

    # Meta's webhooks (HTTPS with STATUS_TLS_CERT_FILE / STATUS_TLS_KEY_FILE); the ops
    # endpoints on their own port.
    http_port: int = 8081
    ops_port: int = 9181
    # Meta signs every webhook POST with the app secret; the verify token answers the handshake.
    app_secret: SecretStr = SecretStr("metasim-app-secret-change-me")
    verify_token: SecretStr = SecretStr("metasim-verify-token")
    # Meta's documented maximum webhook payload.
    max_webhook_bytes: int = Field(3 * 1024 * 1024, gt=0)
    # Meta's receiver timeout is not documented (the simulator uses 5 s): give up earlier, answer
    # 503, and let Meta retry rather than be cut off mid-request.
    publish_timeout_seconds: float = Field(3.0, gt=0)
    # A send whose outcome stayed ambiguous this long is declared failed so billing releases it.
    unknown_timeout_seconds: int = Field(600, gt=0)
    # Meta retries webhooks for up to 7 days: a status for a wamid we never learnt is dropped after.
    parked_retention_days: int = Field(7, gt=0)
    # The privacy policy promises brief message logs: after this, recipient and content go.
    message_retention_days: int = Field(30, gt=0)
    # Keyed hash for anonymised recipients: a plain hash of a phone number is trivially reversed.
    recipient_hash_key: SecretStr = SecretStr("dev-recipient-hash-key-change-me")
    sweep_interval_seconds: float = Field(60.0, gt=0)
    # The sweeper's steps over the messages (stuck `unknown`, anonymisation, conversations):
    # each query scans the collection on FerretDB, so they run this often, not every pass.
    sweep_messages_interval_seconds: float = Field(600.0, gt=0)
    sweep_batch_size: int = Field(500, gt=0)
    # The two consumers' fetches and batches (services/status/workers.py: ConsumerTuning).
    # How long the broker holds a fetch with nothing new (aiokafka's default; a webhook alone on
    # its partition reached the processor 0.1 ms p50 after its 200 at 500 as at 50).
    fetch_max_wait_ms: int = Field(500, gt=0)
    # Each partition's fetched records are one buffer of this size until all of them are read
    # (aiokafka): at 1 MiB, 17 of them were alive at once in a campaign (17 MB), and the freed
    # ones left the heap fragmented (a consumer read 120,000 records: RSS +25 MB at 1 MiB, +7 MB
    # at 256 KiB).
    max_partition_fetch_bytes: int = Field(256 * 1024, gt=0)
    # The processor's batch and backpressure, in webhook records (a record is a POST: up to
    # Meta's batch of statuses, ~8 KB for 20 of them).
    processor_max_records: int = Field(100, gt=0)
    processor_pause_at: int = Field(200, gt=0)
    # The state writer's read-ahead: records (~2 KB each while they wait) read past the oldest
    # unwritten one of a partition, at which it is held back (resumed at three quarters). Its
    # batches are fair by account (workers.py), so another tenant's record within this many
    # behind a campaign's backlog on its partition is written in the next batch, not after
    # the backlog. 4,000: it is held for both topics' partitions of a campaign's account, and at
    # 10,000 status peaked at 151.3 MB in the 100,000 campaign (103.9 MB without a read-ahead).
    state_writer_pause_at: int = Field(4_000, gt=0)
    # glibc's allocator (shared/memory.py: AllocatorTuning; 0 leaves glibc's default). In a
    # 30,000-message campaign 20-30 MB of status's RSS was heap freed but kept by glibc.
    malloc_mmap_threshold_bytes: int = Field(128 * 1024, ge=0)
    malloc_arena_max: int = Field(2, ge=0)
    malloc_trim_interval_seconds: float = Field(10.0, ge=0)
