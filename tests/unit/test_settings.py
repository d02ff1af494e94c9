"""The one way secrets are read and checked (shared/settings.py): `<NAME>_FILE` for every secret,
and outside development a service refuses to start on a secret that is missing, empty, a known
default or too short, naming the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.admin.settings import AdminSettings
from services.billing.settings import BillingSettings
from services.ingest.settings import IngestSettings
from services.notify.settings import NotifySettings
from services.sender.settings import SenderSettings
from services.status.settings import StatusSettings
from shared.errors import ServiceError
from shared.secrets import new_key
from shared.settings import DEVELOPMENT_TOPUP_SIGNING_KEY, ServiceSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
STRONG = "s3cret-value-of-the-operator-0123456789"
KAFKA = {"KAFKA_SASL_USERNAME": "hala-status", "KAFKA_SASL_PASSWORD": STRONG}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: production mode unless a test says otherwise."""
    import os

    for key in list(os.environ):
        if key.startswith(
            ("HALA_", "KAFKA_", "MONGODB_", "STATUS_", "SENDER_", "INGEST_", "BILLING_", "NOTIFY_")
        ):
            monkeypatch.delenv(key)


def _refusal(cls: type[ServiceSettings]) -> str:
    with pytest.raises(SystemExit) as refused:
        load_settings(cls)
    return str(refused.value)


def test_outside_development_the_status_defaults_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in KAFKA.items():
        monkeypatch.setenv(key, value)
    message = _refusal(StatusSettings)
    assert message.startswith("StatusSettings: refusing to start")
    for name in ("STATUS_APP_SECRET", "STATUS_VERIFY_TOKEN", "STATUS_RECIPIENT_HASH_KEY"):
        assert f"{name} is a known default" in message
    assert "metasim-app-secret" not in message  # the value itself is never shown


def test_in_development_the_defaults_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    for key, value in KAFKA.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(StatusSettings)
    assert settings.development
    assert settings.app_secret.get_secret_value() == "metasim-app-secret-change-me"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("short-secret", "is shorter than 16"),
        ("changeme", "known default"),
        ("password", "known default"),
        ("please-change-me-before-production", "known default or placeholder"),
    ],
)
def test_an_unusable_secret_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    for key, good in KAFKA.items():
        monkeypatch.setenv(key, good)
    monkeypatch.setenv("STATUS_APP_SECRET", value)
    monkeypatch.setenv("STATUS_VERIFY_TOKEN", STRONG)
    monkeypatch.setenv("STATUS_RECIPIENT_HASH_KEY", STRONG + "x")
    message = _refusal(StatusSettings)
    assert "STATUS_APP_SECRET" in message and why in message
    assert "STATUS_VERIFY_TOKEN" not in message


def test_every_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {}
    for name in (
        "STATUS_APP_SECRET",
        "STATUS_VERIFY_TOKEN",
        "STATUS_RECIPIENT_HASH_KEY",
        "KAFKA_SASL_PASSWORD",
        "MONGODB_PASSWORD",
    ):
        path = tmp_path / name
        path.write_text(f"{STRONG}-{name.lower()}\n")  # one trailing newline is not part of it
        files[name] = path
        monkeypatch.setenv(f"{name}_FILE", str(path))
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "hala-status")
    monkeypatch.setenv("MONGODB_USERNAME", "hala")
    settings = load_settings(StatusSettings)
    assert settings.app_secret.get_secret_value() == f"{STRONG}-status_app_secret"
    assert settings.kafka.password == SecretStr(f"{STRONG}-kafka_sasl_password")
    assert settings.mongo_credentials() == {
        "username": "hala",
        "password": f"{STRONG}-mongodb_password",
    }


def test_a_secret_and_its_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    path = tmp_path / "token"
    path.write_text(STRONG)
    monkeypatch.setenv("STATUS_VERIFY_TOKEN", STRONG)
    monkeypatch.setenv("STATUS_VERIFY_TOKEN_FILE", str(path))
    assert "both STATUS_VERIFY_TOKEN and STATUS_VERIFY_TOKEN_FILE are set" in _refusal(
        StatusSettings
    )


def test_a_secret_file_that_cannot_be_read_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    monkeypatch.setenv("HALA_TOKEN_KEYS_FILE", str(tmp_path / "missing"))
    message = _refusal(SenderSettings)
    assert "HALA_TOKEN_KEYS_FILE: cannot read" in message


def test_the_sender_without_token_keys_is_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in KAFKA.items():
        monkeypatch.setenv(key, value)
    assert "HALA_TOKEN_KEYS is empty" in _refusal(SenderSettings)
    monkeypatch.setenv("HALA_TOKEN_KEYS", new_key())
    monkeypatch.setenv("SENDER_RECIPIENT_HASH_KEY", STRONG)
    assert load_settings(SenderSettings).token_keys.get_secret_value()


def test_token_keys_must_be_fernet_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    monkeypatch.setenv("HALA_TOKEN_KEYS", f"{new_key()},not-a-fernet-key-at-all")
    assert "key 2 of the list is not a Fernet key" in _refusal(IngestSettings)


def test_optional_secrets_may_be_absent_but_are_checked_when_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in KAFKA.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HALA_TOPUP_SIGNING_KEY", STRONG)
    assert load_settings(BillingSettings).mongodb_password is None  # no database user: fine
    monkeypatch.setenv("MONGODB_PASSWORD", "admin")
    assert "MONGODB_PASSWORD is a known default" in _refusal(BillingSettings)


# The secrets that came with audit, retention and notify: one rule for all of them.
@pytest.mark.parametrize(
    ("cls", "name", "extra"),
    [
        (BillingSettings, "HALA_TOPUP_SIGNING_KEY", {}),
        (SenderSettings, "SENDER_RECIPIENT_HASH_KEY", {"HALA_TOKEN_KEYS": new_key()}),
        (NotifySettings, "HALA_TOKEN_KEYS", {}),
    ],
)
def test_the_newer_secrets_are_refused_by_name_and_read_from_files(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    cls: type[ServiceSettings],
    name: str,
    extra: dict[str, str],
) -> None:
    for key, value in {**KAFKA, **extra}.items():
        monkeypatch.setenv(key, value)
    assert name in _refusal(cls)  # its development value (or nothing) outside development
    if name != "HALA_TOKEN_KEYS":  # (a Fernet key list has a check of its own)
        monkeypatch.setenv(name, "short")
        assert f"{name} is shorter than 16" in _refusal(cls)
        monkeypatch.delenv(name)
    value = new_key() if name == "HALA_TOKEN_KEYS" else STRONG
    (tmp_path / "secret").write_text(value + "\n")
    monkeypatch.setenv(f"{name}_FILE", str(tmp_path / "secret"))
    assert load_settings(cls) is not None


def test_notify_s_smtp_password_is_optional_checked_when_given_and_needed_by_a_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**KAFKA, "HALA_TOKEN_KEYS": new_key()}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(NotifySettings)
    assert settings.smtp_password is None and settings.ops_port == 9184
    monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "changeme")
    assert "NOTIFY_SMTP_PASSWORD is a known default" in _refusal(NotifySettings)
    monkeypatch.delenv("NOTIFY_SMTP_PASSWORD")
    monkeypatch.setenv("NOTIFY_SMTP_USERNAME", "alerts")
    assert "NOTIFY_SMTP_USERNAME needs NOTIFY_SMTP_PASSWORD" in _refusal(NotifySettings)


def test_the_admin_cli_checks_its_keys_when_a_command_needs_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in KAFKA.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(AdminSettings)  # production: starts without the keys
    with pytest.raises(ServiceError) as refused:
        settings.topup_key()
    assert refused.value.code == "missing_secret"
    assert "HALA_TOPUP_SIGNING_KEY is a known default" in str(refused.value)
    with pytest.raises(ServiceError, match="HALA_PSEUDONYM_KEY is a known default"):
        settings.erasure_key()
    (tmp_path / "topup").write_text(STRONG)
    monkeypatch.setenv("HALA_TOPUP_SIGNING_KEY_FILE", str(tmp_path / "topup"))
    assert load_settings(AdminSettings).topup_key() == STRONG.encode()
    monkeypatch.setenv("HALA_ENV", "development")
    assert load_settings(AdminSettings).erasure_key()  # the development value
    monkeypatch.delenv("HALA_TOPUP_SIGNING_KEY_FILE")
    assert load_settings(AdminSettings).topup_key() == DEVELOPMENT_TOPUP_SIGNING_KEY.encode()


def test_kafka_needs_credentials_and_outside_development_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    assert "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in _refusal(BillingSettings)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert load_settings(BillingSettings).kafka.security_protocol == "PLAINTEXT"
    monkeypatch.delenv("HALA_ENV")
    assert "sends records in clear" in _refusal(BillingSettings)


def test_a_certificate_without_its_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    monkeypatch.setenv("INGEST_TLS_CERT_FILE", "/somewhere/ingest.pem")
    assert "INGEST_TLS_CERT_FILE and INGEST_TLS_KEY_FILE go together" in _refusal(IngestSettings)


def test_secrets_never_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    monkeypatch.setenv("STATUS_APP_SECRET", STRONG)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", STRONG + "k")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "hala-status")
    settings = load_settings(StatusSettings)
    assert STRONG not in repr(settings) and STRONG not in repr(settings.kafka)


def test_the_admin_cli_checks_kafka_credentials_only_when_it_uses_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HALA_ENV", "development")
    assert load_settings(AdminSettings).startup_problems() == []


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("services.status", "STATUS_APP_SECRET is a known default"),
        ("services.sender", "HALA_TOKEN_KEYS is empty"),
        ("services.billing", "HALA_TOPUP_SIGNING_KEY is a known default"),
        ("services.notify", "HALA_TOKEN_KEYS is empty"),
    ],
)
def test_a_service_started_without_its_secrets_exits_naming_them(
    module: str, expected: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", "KAFKA_SASL_USERNAME": "hala-x", "KAFKA_SASL_PASSWORD": STRONG}
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert expected in done.stderr and "Traceback" not in done.stderr
