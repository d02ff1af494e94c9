from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.pricing import CURRENT_VERSION
from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    http_port: int = 8080
    # How long API-key, account, phone-number, template and balance lookups are cached in
    # memory. A revocation or suspension takes effect within this many seconds.
    cache_ttl_seconds: float = 5.0
    # The rate card used for the balance pre-check (billing prices with the same card).
    rate_card_version: str = CURRENT_VERSION
    # How long this process shows a message it accepted to GET /v1/messages/{id} while status
    # has not stored its document yet (it normally does within milliseconds).
    recent_ttl_seconds: float = 30.0

    # --- pass-through calls to Meta (mark-as-read, typing, the Media API) --------------------
    meta_base_url: str = "http://127.0.0.1:8090"
    meta_graph_version: str = "v24.0"
    meta_timeout_seconds: float = 30.0
    # Comma-separated Fernet keys that decrypt phone_numbers.access_token_encrypted (shared
    # with the admin CLI and the sender, hence unprefixed).
    token_keys: SecretStr = Field(SecretStr(""), validation_alias="HALA_TOKEN_KEYS")
    # Per phone number: pass-through calls per second and the burst above it. A call that
    # would wait longer than passthrough_max_wait_seconds for its turn is refused with 429.
    passthrough_rate_per_second: float = 10.0
    passthrough_burst: int = 20
    passthrough_max_wait_seconds: float = 1.0
    # Where clients reach this service, for the `url` of GET /{version}/{media-id}; empty:
    # the scheme and host the request came to.
    public_base_url: str = ""

    # --- webhook endpoints ---------------------------------------------------------------------
    # `development` (what `make run` and the tests set) also accepts plain http to loopback as
    # an endpoint URL, for local receivers; anything else accepts only public https URLs.
    environment: str = Field("production", validation_alias="HALA_ENV")

    @property
    def allow_loopback_http(self) -> bool:
        return self.environment == "development"

    # --- the customer-service window -------------------------------------------------------
    # A closed window is remembered only this long (the user may write any second); an open
    # one until it closes.
    window_closed_cache_seconds: float = 1.0
