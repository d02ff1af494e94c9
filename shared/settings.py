"""Settings every service has, and the one way secrets are read and checked.

Each service subclasses `ServiceSettings` with its own env prefix (`INGEST_`, `SENDER_`, ...) for
its own variables. The broker, its credentials, the database and the topic prefix are the same
for every service, so they are read from unprefixed variables (the ones
`deploy/local/infra.sh env` prints).

Secrets (every `SecretStr` field, here and in any subclass):
- each can come from a file instead, `<NAME>_FILE` (as Docker and Kubernetes mount secrets);
  setting both `<NAME>` and `<NAME>_FILE` is refused;
- outside development (`HALA_ENV=development`, which `make run`, the tests and the benchmarks
  set), a service refuses to start when a secret it needs is missing or empty, is a known default
  (the development value in the code, a placeholder, or a published example) or is shorter than
  `MIN_SECRET_LENGTH`, and says which setting it is. An optional secret (`SecretStr | None`)
  may be absent; when given it is checked like the others.
- a secret's development value is its field's default (or one of `KNOWN_DEFAULTS`): it works
  with `HALA_ENV=development` and is refused anywhere else. Values that two components must
  share (the top-up signing key: the admin CLI signs, billing verifies) are named here.
- a command-line tool whose commands need different secrets lists them in `deferred_secrets`:
  they are checked by `require_secret` when a command needs one, by the same rule.

Composition roots call `load_settings(TheirSettings)`: a refusal is a clear message and exit
status 1, not a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from shared.kafka import KafkaConfig

DEVELOPMENT = "development"
MIN_SECRET_LENGTH = 16
# Development values of secrets that more than one component holds (each is its fields'
# default, so outside development it is refused like any other default).
DEVELOPMENT_TOPUP_SIGNING_KEY = "dev-topup-signing-key"  # the admin CLI signs, billing verifies
DEVELOPMENT_PSEUDONYM_KEY = "dev-account-pseudonym-key"  # erased accounts' ledger (admin CLI)
# Values that must never protect anything outside development, besides each field's own default:
# the simulator's published secrets, the benchmarks', the development values above, and the
# placeholders of our examples.
KNOWN_DEFAULTS = frozenset(
    {
        "metasim-app-secret-change-me",
        "metasim-verify-token",
        "bench-app-secret",
        "bench-verify-token",
        "dev-recipient-hash-key-change-me",
        DEVELOPMENT_TOPUP_SIGNING_KEY,
        DEVELOPMENT_PSEUDONYM_KEY,
        "password",
        "secret",
        "admin",
        "changeme",
        "change-me",
        "example",
        "test",
    }
)
PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "replace-me")


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(arg) for arg in get_args(annotation))


def _is_secret(field: FieldInfo) -> bool:
    return _mentions_secret(field.annotation)


def _optional(field: FieldInfo) -> bool:
    return type(None) in get_args(field.annotation)


def setting_name(settings_cls: type[BaseSettings], name: str) -> str:
    """The environment variable a field is read from (for messages)."""
    field = settings_cls.model_fields[name]
    if isinstance(field.validation_alias, str):
        return field.validation_alias.upper()
    return (str(settings_cls.model_config.get("env_prefix", "")) + name).upper()


class SecretFileSource(EnvSettingsSource):
    """`<NAME>_FILE` for every secret: the file's content (one trailing newline removed) is the
    value. Placed before the environment, and refuses `<NAME>` and `<NAME>_FILE` together (which
    one would win is not something to find out in production)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not _is_secret(field):
            return None, field_name, False
        for field_key, env_name, value_is_complex in self._extract_field_info(field, field_name):
            path = self.env_vars.get(f"{env_name}_file")
            if path is None:
                continue
            if self.env_vars.get(env_name) is not None:
                raise SettingsError(
                    f"both {env_name.upper()} and {env_name.upper()}_FILE are set: keep one"
                )
            try:
                content = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise SettingsError(
                    f"{env_name.upper()}_FILE: cannot read {path} ({exc.strerror})"
                ) from exc
            return content.removesuffix("\n").removesuffix("\r"), field_key, value_is_complex
        return None, field_name, False


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Secret fields checked only when first needed (`require_secret`), not at start: for a
    # command-line tool whose commands need different ones (the admin CLI).
    deferred_secrets: ClassVar[frozenset[str]] = frozenset()

    # `development` relaxes the secret checks (make run, tests, benchmarks); anything else,
    # including unset, is strict.
    environment: str = Field("production", validation_alias="HALA_ENV")

    # --- Kafka: address and this process's principal (see shared/kafka.py KafkaConfig) ----
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka_security_protocol: Literal["SASL_SSL", "SSL", "SASL_PLAINTEXT", "PLAINTEXT"] = Field(
        "SASL_SSL", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str = Field("", validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    # PEM file of the CA that signed the broker's certificate; empty: the system trust store.
    kafka_ssl_ca_file: str = Field("", validation_alias="KAFKA_SSL_CA_FILE")

    # --- MongoDB ---------------------------------------------------------------------------
    mongodb_url: str = Field("mongodb://127.0.0.1:27017", validation_alias="MONGODB_URL")
    mongodb_database: str = Field("hala", validation_alias="MONGODB_DATABASE")
    # Credentials kept out of the URL, so that the URL is never a secret (the database's own
    # user store; authSource etc. go in the URL's options).
    mongodb_username: str = Field("", validation_alias="MONGODB_USERNAME")
    mongodb_password: SecretStr | None = Field(None, validation_alias="MONGODB_PASSWORD")
    # Deadline of every MongoDB operation, in ms (shared.mongo.make_client's timeoutMS).
    mongodb_timeout_ms: int = Field(10_000, gt=0, validation_alias="MONGODB_TIMEOUT_MS")

    # Prefixes topic and consumer-group names: tests give each run its own on a shared broker.
    topic_prefix: str = Field("", validation_alias="HALA_TOPIC_PREFIX")

    # --- HTTP ------------------------------------------------------------------------------
    # The client port (ingest's API, status's webhooks): HTTPS when a certificate is given
    # (the chain, leaf first, and its key: PEM files).
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # /healthz, /readyz and /metrics: a port of their own, on loopback unless told otherwise.
    ops_host: str = "127.0.0.1"
    ops_port: int = 9180
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            SecretFileSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def development(self) -> bool:
        return self.environment == DEVELOPMENT

    @model_validator(mode="after")
    def _check_secrets(self) -> ServiceSettings:
        problems = [p for p in (self._tls_problem(),) if p]
        if not self.development:
            problems += [p for p in (self._kafka_problem(),) if p] + unusable_secrets(
                self, skip=self.deferred_secrets
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def startup_problems(self) -> list[str]:
        """What would stop the service from connecting, in any mode (load_settings checks it;
        settings built in unit tests need no broker credentials)."""
        return [p for p in (self._kafka_problem(),) if p]

    def _kafka_problem(self) -> str | None:
        if not self.development and self.kafka_security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            return (
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} sends records in "
                "clear: use SASL_SSL (or SSL) outside development"
            )
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username
            and self.kafka_sasl_password
            and self.kafka_sasl_password.get_secret_value()
        ):
            return (
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
            )
        return None

    def _tls_problem(self) -> str | None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            cls = type(self)
            return (
                f"{setting_name(cls, 'tls_cert_file')} and "
                f"{setting_name(cls, 'tls_key_file')} go together"
            )
        return None

    @property
    def kafka(self) -> KafkaConfig:
        """How this service's Kafka clients connect, as its own principal."""
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username or None,
            password=self.kafka_sasl_password,
            ca_file=self.kafka_ssl_ca_file or None,
        )

    def require_secret(self, name: str) -> SecretStr:
        """A deferred secret, checked now by the rule every other secret is checked by at start
        (ValueError naming the setting); in development, whatever is set."""
        value: SecretStr | None = getattr(self, name)
        if value is None:
            env = setting_name(type(self), name)
            raise ValueError(f"{env} is missing (set it or {env}_FILE)")
        problem = None if self.development else secret_problem(self, name)
        if problem is not None:
            raise ValueError(problem)
        return value

    def mongo_credentials(self) -> dict[str, Any]:
        """Keyword arguments for the Mongo client (none when no user is configured)."""
        if not self.mongodb_username:
            return {}
        password = self.mongodb_password.get_secret_value() if self.mongodb_password else ""
        return {"username": self.mongodb_username, "password": password}


def unusable_secrets(settings: BaseSettings, skip: frozenset[str] = frozenset()) -> list[str]:
    """Why each secret field of `settings` could not protect anything (empty list: all fine)."""
    problems = []
    for name, field in type(settings).model_fields.items():
        if name in skip or not _is_secret(field):
            continue
        problem = secret_problem(settings, name)
        if problem is not None:
            problems.append(problem)
    return problems


def secret_problem(settings: BaseSettings, name: str) -> str | None:
    """Why the secret field `name` of `settings` could not protect anything (None: fine)."""
    cls = type(settings)
    field = cls.model_fields[name]
    value: SecretStr | None = getattr(settings, name)
    env = setting_name(cls, name)
    if value is None:
        return None if _optional(field) else f"{env} is missing (set it or {env}_FILE)"
    raw = value.get_secret_value()
    default = field.default.get_secret_value() if isinstance(field.default, SecretStr) else None
    if not raw.strip():
        return f"{env} is empty (set it or {env}_FILE)"
    if (
        raw == default
        or raw.strip().lower() in KNOWN_DEFAULTS
        or any(mark in raw.lower() for mark in PLACEHOLDER_MARKS)
    ):
        return f"{env} is a known default or placeholder: set a secret of your own"
    if len(raw) < MIN_SECRET_LENGTH:
        return f"{env} is shorter than {MIN_SECRET_LENGTH} characters"
    return None


S = TypeVar("S", bound=BaseSettings)


def load_settings(settings_cls: type[S], **values: Any) -> S:
    """Read the settings, or exit with a message naming every setting that is wrong."""
    try:
        settings = settings_cls(**values)
    except SettingsError as exc:
        # pydantic-settings wraps a source's own error ("error getting value for field ..."):
        # ours (SecretFileSource's) says what is wrong.
        reason = exc.__cause__ if isinstance(exc.__cause__, SettingsError) else exc
        raise SystemExit(f"{settings_cls.__name__}: refusing to start: {reason}") from None
    except ValidationError as exc:
        reasons = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            reasons.append(f"{location}: {message}" if location else message)
        raise SystemExit(
            f"{settings_cls.__name__}: refusing to start: " + "; ".join(reasons)
        ) from None
    problems = settings.startup_problems() if isinstance(settings, ServiceSettings) else []
    if problems:
        raise SystemExit(f"{settings_cls.__name__}: refusing to start: " + "; ".join(problems))
    return settings
