from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.errors import ServiceError
from shared.secrets import TokenKeys
from shared.settings import (
    DEVELOPMENT_PSEUDONYM_KEY,
    DEVELOPMENT_TOPUP_SIGNING_KEY,
    ServiceSettings,
    setting_name,
)


class AdminSettings(ServiceSettings):
    """The CLI reads the same unprefixed variables as the services (MONGODB_*, KAFKA_*,
    HALA_TOPIC_PREFIX; KAFKA_SASL_USERNAME is the admin principal, `hala-admin`, the only one
    allowed to write top-ups) plus the token keys, the top-up signing key (shared with
    billing), the erasure pseudonym key and who is operating.

    Most commands need none of the keys: the two keys are checked (shared/settings.py's rule)
    when a command needs one, and Kafka's credentials when a command uses Kafka."""

    model_config = SettingsConfigDict(
        env_prefix="HALA_ADMIN_", extra="ignore", populate_by_name=True
    )
    deferred_secrets = frozenset({"topup_signing_key", "pseudonym_key"})

    # Comma-separated Fernet keys, newest first (shared.secrets.TokenVault).
    token_keys: TokenKeys | None = Field(None, validation_alias="HALA_TOKEN_KEYS")
    graph_url: str = "http://127.0.0.1:8090"
    graph_version: str = "v24.0"
    # Who is operating, for the audit log and top-ups (default: the OS user).
    operator: str | None = Field(None, validation_alias="HALA_OPERATOR")
    # Set by sshd: where an operator working over SSH came from.
    ssh_connection: str | None = Field(None, validation_alias="SSH_CONNECTION")
    # Signs TopUpRequested (billing verifies it with the same key).
    topup_signing_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_TOPUP_SIGNING_KEY), validation_alias="HALA_TOPUP_SIGNING_KEY"
    )
    # Keyed hash an erased account's ledger is kept under (`hala accounts erase`).
    pseudonym_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_PSEUDONYM_KEY), validation_alias="HALA_PSEUDONYM_KEY"
    )

    def startup_problems(self) -> list[str]:
        # Most commands never touch Kafka: its credentials are checked when one does.
        return []

    @property
    def allow_loopback_http(self) -> bool:
        """`development` (make run, the tests) also accepts http to loopback as a webhook
        endpoint URL."""
        return self.development

    def topup_key(self) -> bytes:
        return self._key("topup_signing_key")

    def erasure_key(self) -> bytes:
        return self._key("pseudonym_key")

    def _key(self, name: str) -> bytes:
        try:
            return self.require_secret(name).get_secret_value().encode()
        except ValueError as exc:
            raise ServiceError(
                str(exc),
                code="missing_secret",
                details={"variable": setting_name(type(self), name)},
            ) from None
