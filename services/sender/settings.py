from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.secrets import TokenKeys
from shared.settings import ServiceSettings

DEVELOPMENT_RECIPIENT_HASH_KEY = "dev-sender-recipient-hash-key"


class SenderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SENDER_", extra="ignore", populate_by_name=True)

    # The sender serves only the ops endpoints.
    ops_port: int = 9182
    meta_base_url: str = "http://127.0.0.1:8090"
    meta_graph_version: str = "v24.0"
    # A request Meta has not answered within this is ambiguous (it may have been delivered).
    meta_timeout_seconds: float = 10.0
    meta_connections_per_host: int = 100
    # Comma-separated Fernet keys that decrypt phone_numbers.access_token_encrypted (shared with
    # the admin CLI, hence unprefixed).
    token_keys: TokenKeys = Field(SecretStr(""), validation_alias="HALA_TOKEN_KEYS")

    max_in_flight: int = 2000
    # Requests to Meta not answered yet (storing the `sending` record, waiting for a number
    # token, at Meta); recording outcomes afterwards is bounded by max_queued instead. Per
    # number: its burst plus in_flight_seconds of its rate (80 mps: 60, 1,000 mps: 750), at
    # most max_in_flight_per_number.
    in_flight_seconds: float = 0.25
    max_in_flight_per_number: int = 1000
    # Fetching pauses only for the partitions that are behind: those holding more messages
    # ready to go than their numbers send in backlog_seconds (at least backlog_floor); it
    # resumes at half. All partitions together hold about max_queued at most: beyond it, each
    # keeps at most its share (core.FetchPolicy).
    max_queued: int = Field(20_000, gt=0)
    backlog_seconds: float = Field(2.0, gt=0)
    backlog_floor: int = Field(100, gt=0)
    commit_interval_seconds: float = 0.2
    # How long a fetch of the followers of the compacted topics (throughput, WABA status,
    # account holds: services/sender/followers.py) waits on the broker while they are quiet. A
    # record ends the wait at once, except one on a partition just read, which waits for the
    # fetch in flight: up to this. These topics change a few times a day; at aiokafka's 500 ms
    # the three sent 6 fetches/s doing nothing, 1.5 at 2 s (bench/README.md, h43).
    follower_fetch_max_wait_ms: int = Field(2000, ge=0, le=30_000)
    phone_number_refresh_seconds: float = 30.0
    tier_refresh_seconds: float = 60.0
    # `tier_usage` knows recipients by a keyed hash (HMAC-SHA256 under this key), never by
    # number; entries older than the tier's 24 h window (plus a margin) are deleted.
    # The default is the development value (refused outside development: shared/settings.py).
    recipient_hash_key: SecretStr = SecretStr(DEVELOPMENT_RECIPIENT_HASH_KEY)
    tier_usage_retention_hours: float = Field(25.0, ge=24.0)
    tier_usage_sweep_interval_seconds: float = Field(3600.0, gt=0)
    transient_max_attempts: int = 3
    hold_seconds: float = 300.0
    shutdown_grace_seconds: float = 15.0

    def recipient_hash_key_bytes(self) -> bytes:
        return self.recipient_hash_key.get_secret_value().encode()
