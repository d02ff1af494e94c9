import math

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.ingest.rate_limits import Rate
from shared.pricing import CURRENT_VERSION
from shared.rdkafka_producer import LINGER_MS, POLL_INTERVAL_S
from shared.secrets import TokenKeys
from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    # The client API (HTTPS with INGEST_TLS_CERT_FILE / INGEST_TLS_KEY_FILE); the ops
    # endpoints on their own port.
    http_port: int = 8080
    ops_port: int = 9180
    # N processes serving the client port together (SO_REUSEPORT), started and supervised by a
    # parent that serves the ops port (services/ingest/processes.py). The parent sets the two
    # below for each child: bind the client port shared, and which child it is.
    processes: int = Field(1, ge=1, le=64)
    reuse_port: bool = False
    process_index: int = Field(0, ge=0)
    # A request answers 503 within a second while a dependency is down: each database
    # operation gets this long (not MONGODB_TIMEOUT_MS; PyMongo waits for a server in steps of
    # half a second, so 450 ms fails after ~0.5 s and 900 ms after ~1 s), and the broker this
    # long to acknowledge a send request (a broker known to be down refuses at once; see
    # shared/rdkafka_producer.py).
    mongodb_timeout_ms: int = Field(450, gt=0, validation_alias="INGEST_MONGODB_TIMEOUT_MS")
    kafka_ack_timeout_seconds: float = Field(0.9, gt=0)
    # The producer's linger (each 202 waits for it) and how often the loop asks librdkafka for
    # acknowledgements while records wait (shared/rdkafka_producer.py).
    kafka_linger_ms: float = Field(LINGER_MS, ge=0)
    kafka_poll_interval_ms: float = Field(POLL_INTERVAL_S * 1000, gt=0)
    # How long API-key, account, phone-number, template and balance lookups are cached in
    # memory. A revocation or suspension takes effect within this many seconds.
    cache_ttl_seconds: float = 5.0
    # The rate card used for the balance pre-check (billing prices with the same card).
    rate_card_version: str = CURRENT_VERSION
    # How long this process shows a message it accepted to GET /v1/messages/{id} while status
    # has not stored its document yet (it normally does within milliseconds).
    recent_ttl_seconds: float = 30.0
    # ... and at most this many bytes of them (the oldest go first): a campaign accepted at
    # hundreds a second otherwise keeps the last 30 s of its messages in memory.
    recent_max_bytes: int = Field(8 * 1024 * 1024, ge=0)

    # --- pass-through calls to Meta (mark-as-read, typing, the Media API) --------------------
    meta_base_url: str = "http://127.0.0.1:8090"
    meta_graph_version: str = "v24.0"
    meta_timeout_seconds: float = 30.0
    # Comma-separated Fernet keys that decrypt phone_numbers.access_token_encrypted (shared
    # with the admin CLI and the sender, hence unprefixed). Sends do not need them; without
    # them the pass-through calls answer 500.
    token_keys: TokenKeys | None = Field(None, validation_alias="HALA_TOKEN_KEYS")
    # Per phone number: pass-through calls per second and the burst above it. A call that
    # would wait longer than passthrough_max_wait_seconds for its turn is refused with 429.
    passthrough_rate_per_second: float = 10.0
    passthrough_burst: int = 20
    passthrough_max_wait_seconds: float = 1.0
    # Where clients reach this service, for the `url` of GET /{version}/{media-id}; empty:
    # the scheme and host the request came to.
    public_base_url: str = ""

    # --- request rate limits (rate_limits.py), per ingest process ------------------------------
    # Every account's, unless its document has its own (`hala accounts update --rate-limit`):
    # requests per second, and how many may come at once.
    rate_limit_per_second: float = Field(100.0, gt=0)
    rate_limit_burst: int = Field(200, ge=1)
    # An API key's own limit besides its account's, unless the key has its own (`hala keys
    # issue/update --rate-limit`). 0: keys have no limit of their own.
    key_rate_limit_per_second: float = Field(0.0, ge=0)
    key_rate_limit_burst: int = Field(0, ge=0)

    def account_rate_limit(self) -> Rate:
        return Rate(self.rate_limit_per_second, self.rate_limit_burst)

    def key_rate_limit(self) -> Rate | None:
        if self.key_rate_limit_per_second <= 0:
            return None
        return Rate(
            self.key_rate_limit_per_second,
            self.key_rate_limit_burst or max(1, math.ceil(self.key_rate_limit_per_second)),
        )

    # --- webhook endpoints ---------------------------------------------------------------------
    # `development` (what `make run` and the tests set) also accepts plain http to loopback as
    # an endpoint URL, for local receivers; anything else accepts only public https URLs.
    @property
    def allow_loopback_http(self) -> bool:
        return self.environment == "development"

    # --- retention -------------------------------------------------------------------------
    # Idempotency records (a copy of each keyed request) are deleted this long after the
    # request (at least the 24 h retry window), by a pass every interval.
    idempotency_retention_hours: float = Field(48.0, ge=24.0)
    idempotency_sweep_interval_seconds: float = Field(600.0, gt=0)
    idempotency_sweep_page_size: int = Field(500, gt=0)

    # --- the account's rules: holds, block list, marketing opt-outs -----------------------
    # How long a hold, a block or an opt-out is remembered per account and contact (answers
    # "none" included): a new one applies to sends within this many seconds of being stored.
    send_rules_cache_seconds: float = Field(2.0, ge=0)

    # --- the customer-service window -------------------------------------------------------
    # A closed window is remembered only this long (the user may write any second); an open
    # one until it closes.
    window_closed_cache_seconds: float = 1.0
