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
