from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    """The CLI reads the same unprefixed variables as the services (MONGODB_URL,
    MONGODB_DATABASE, KAFKA_BOOTSTRAP_SERVERS, HALA_TOPIC_PREFIX) plus the token keys."""

    model_config = SettingsConfigDict(env_prefix="HALA_ADMIN_", extra="ignore",
                                      populate_by_name=True)

    # Comma-separated Fernet keys, newest first (shared.secrets.TokenVault).
    token_keys: SecretStr | None = Field(None, validation_alias="HALA_TOKEN_KEYS")
    # `development` (make run, the tests) also accepts http to loopback as a webhook endpoint URL.
    environment: str = Field("production", validation_alias="HALA_ENV")
    graph_url: str = "http://127.0.0.1:8090"
    graph_version: str = "v24.0"

    @property
    def allow_loopback_http(self) -> bool:
        return self.environment == "development"
