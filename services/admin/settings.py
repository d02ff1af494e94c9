from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.errors import ServiceError
from shared.secret_defaults import (
    DEVELOPMENT_PSEUDONYM_KEY,
    DEVELOPMENT_TOPUP_SIGNING_KEY,
    resolve_secret,
)
from shared.secrets import TokenKeys
from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    """The CLI reads the same unprefixed variables as the services (MONGODB_*, KAFKA_*,
    HALA_TOPIC_PREFIX; KAFKA_SASL_USERNAME is the admin principal, `hala-admin`, the only one
    allowed to write top-ups) plus the token keys, the top-up signing key (shared with
    billing), the erasure pseudonym key and who is operating."""

    model_config = SettingsConfigDict(env_prefix="HALA_ADMIN_", extra="ignore",
                                      populate_by_name=True)

    # Comma-separated Fernet keys, newest first (shared.secrets.TokenVault).
    token_keys: TokenKeys | None = Field(None, validation_alias="HALA_TOKEN_KEYS")
    graph_url: str = "http://127.0.0.1:8090"
    graph_version: str = "v24.0"

    def startup_problems(self) -> list[str]:
        # Most commands never touch Kafka: its credentials are checked when one does.
        return []
    # Who is operating, for the audit log and top-ups (default: the OS user).
    operator: str | None = Field(None, validation_alias="HALA_OPERATOR")
    # Set by sshd: where an operator working over SSH came from.
    ssh_connection: str | None = Field(None, validation_alias="SSH_CONNECTION")
    # Signs TopUpRequested (billing verifies it with the same key).
    topup_signing_key: SecretStr | None = Field(None, validation_alias="HALA_TOPUP_SIGNING_KEY")
    # Keyed hash an erased account's ledger is kept under (`hala accounts erase`).
    pseudonym_key: SecretStr | None = Field(None, validation_alias="HALA_PSEUDONYM_KEY")

    @property
    def allow_loopback_http(self) -> bool:
        """`development` (make run, the tests) also accepts http to loopback as a webhook
        endpoint URL."""
        return self.environment == "development"

    @model_validator(mode="after")
    def _development_secrets(self) -> Self:
        # Outside development a missing key is reported when a command needs it, so that
        # commands that need none still run.
        if self.environment == "development":
            self.topup_signing_key = resolve_secret(
                self.topup_signing_key, variable="HALA_TOPUP_SIGNING_KEY",
                development_default=DEVELOPMENT_TOPUP_SIGNING_KEY,
                environment=self.environment)
            self.pseudonym_key = resolve_secret(
                self.pseudonym_key, variable="HALA_PSEUDONYM_KEY",
                development_default=DEVELOPMENT_PSEUDONYM_KEY, environment=self.environment)
        return self

    def topup_key(self) -> bytes:
        return _required(self.topup_signing_key, "HALA_TOPUP_SIGNING_KEY",
                         DEVELOPMENT_TOPUP_SIGNING_KEY, self.environment)

    def erasure_key(self) -> bytes:
        return _required(self.pseudonym_key, "HALA_PSEUDONYM_KEY", DEVELOPMENT_PSEUDONYM_KEY,
                         self.environment)


def _required(value: SecretStr | None, variable: str, development_default: str,
              environment: str) -> bytes:
    try:
        return resolve_secret(value, variable=variable, development_default=development_default,
                              environment=environment).get_secret_value().encode()
    except ValueError as exc:
        raise ServiceError(str(exc), code="missing_secret",
                           details={"variable": variable}) from None
