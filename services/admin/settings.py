from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.secrets import TokenKeys
from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    """The CLI reads the same unprefixed variables as the services (MONGODB_*, KAFKA_*,
    HALA_TOPIC_PREFIX; KAFKA_SASL_USERNAME is the admin principal, `hala-admin`, the only one
    allowed to write top-ups) plus the token keys."""

    model_config = SettingsConfigDict(env_prefix="HALA_ADMIN_", extra="ignore",
                                      populate_by_name=True)

    # Comma-separated Fernet keys, newest first (shared.secrets.TokenVault).
    token_keys: TokenKeys | None = Field(None, validation_alias="HALA_TOKEN_KEYS")
    graph_url: str = "http://127.0.0.1:8090"
    graph_version: str = "v24.0"

    def startup_problems(self) -> list[str]:
        # Most commands never touch Kafka: its credentials are checked when one does.
        return []
