"""docker-compose.yml can't run here (no Docker engine): keep it correct by construction. Each
service's environment, read by its own settings in production mode with the secret files the
compose file names, must pass the checks the service makes at start; its Kafka principal, its
database user and its ops port must be the ones the rest of the file and Prometheus expect; and
`init` must prepare what the broker and the simulator read."""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.admin.settings import AdminSettings
from services.billing.settings import BillingSettings
from services.guard.settings import GuardSettings
from services.ingest.settings import IngestSettings
from services.notify.settings import NotifySettings
from services.sender.settings import SenderSettings
from services.status.settings import StatusSettings
from shared.kafka_access import SERVICES, principal
from shared.secrets import new_key
from shared.settings import ServiceSettings, load_settings, setting_name
from tools.kafka_setup import BROKER_USERS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.compose.yml").read_text())
SERVICES_SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "status": StatusSettings,
    "sender": SenderSettings,
    "billing": BillingSettings,
    "notify": NotifySettings,
    "guard": GuardSettings,
}


def _interpolated(value: object) -> str:
    """What compose makes of `${NAME:-default}` when NAME is not set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def _env(name: str) -> dict[str, str]:
    return {k: _interpolated(v) for k, v in COMPOSE["services"][name]["environment"].items()}


def _secret_fields(cls: type[ServiceSettings]) -> dict[str, str]:
    """field name -> the variable it is read from, for every secret of `cls`."""
    from shared.settings import _is_secret

    return {n: setting_name(cls, n) for n, f in cls.model_fields.items() if _is_secret(f)}


def _with_secret_files(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """The environment with every *_FILE pointing at a local file holding a strong secret (the
    operator's files and init's, as the containers see them)."""
    local = dict(env)
    for key, path in env.items():
        if key.endswith("_FILE") and path.startswith(("/run/secrets/", "/shared/kafka/")):
            file = tmp / key
            value = new_key() if key == "HALA_TOKEN_KEYS_FILE" else secrets.token_urlsafe(32)
            file.write_text(value + "\n")
            local[key] = str(file)
    return local


def test_compose_file_parses_and_has_every_component() -> None:
    assert {
        "init",
        "kafka",
        "kafka-setup",
        "mongo",
        "metasim",
        "ingest",
        "status",
        "sender",
        "billing",
        "notify",
        "guard",
        "hala",
        "prometheus",
    } <= set(COMPOSE["services"])


@pytest.mark.parametrize("name", sorted(SERVICES_SETTINGS))
def test_every_variable_given_to_a_service_is_one_its_settings_read(name: str) -> None:
    cls = SERVICES_SETTINGS[name]
    prefix = str(cls.model_config["env_prefix"])
    shared = {
        setting_name(cls, n)
        for n, f in cls.model_fields.items()
        if isinstance(f.validation_alias, str)
    }
    readable = shared | {f"{v}_FILE" for v in _secret_fields(cls).values()}
    for key in _env(name):
        if key.startswith(prefix):
            field = key.removeprefix(prefix).lower()
            if field not in cls.model_fields:  # then it must be a secret's file, <NAME>_FILE
                assert key.endswith("_FILE"), f"{name}: {key} is read by nothing"
                assert key.removesuffix("_FILE") in _secret_fields(cls).values(), key
        else:
            assert key in readable, f"{name}: {key} is read by nothing"


@pytest.mark.parametrize("name", sorted(SERVICES_SETTINGS))
def test_each_service_starts_in_production_mode_with_its_secrets_from_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = SERVICES_SETTINGS[name]
    env = _env(name)
    assert "HALA_ENV" not in env  # production: the strict checks apply
    # No secret is written in the file: every one comes from a file.
    assert not set(_secret_fields(cls).values()) & set(env), name
    for key in [
        k
        for k in list(os.environ)
        if k.startswith(("KAFKA_", "MONGODB_", "HALA_", cls.model_config["env_prefix"]))
    ]:
        monkeypatch.delenv(key)
    for key, value in _with_secret_files(env, tmp_path).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(cls)  # SystemExit, naming the setting, if anything is wrong
    assert not settings.development
    kafka = settings.kafka
    assert (kafka.security_protocol, kafka.username) == ("SASL_SSL", principal(name))
    assert env["KAFKA_SASL_PASSWORD_FILE"] == f"/shared/kafka/{principal(name)}.password"
    assert settings.mongo_credentials()["username"] == "hala"
    assert "authSource=hala" in settings.mongodb_url


def test_a_service_without_its_secret_files_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _with_secret_files(_env("status"), tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HALA_ENV", raising=False)
    monkeypatch.delenv("STATUS_APP_SECRET_FILE")
    with pytest.raises(SystemExit) as refused:
        load_settings(StatusSettings)
    assert "STATUS_APP_SECRET is a known default" in str(refused.value)


def test_every_secret_a_service_reads_is_declared_and_mounted() -> None:
    declared = COMPOSE["secrets"]
    for name, service in COMPOSE["services"].items():
        mounted = set(service.get("secrets", []))
        used = {
            m.group(1)
            for v in (service.get("environment") or {}).values()
            for m in [re.fullmatch(r"/run/secrets/(\w+)", str(v))]
            if m
        }
        assert used <= mounted, f"{name} reads {used - mounted} without mounting them"
        assert mounted <= set(declared), name
    for secret in declared.values():
        assert secret["file"].startswith("./deploy/compose/secrets/")  # git-ignored
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/deploy/compose/secrets/" in ignored


def test_ops_ports_are_the_ones_prometheus_scrapes_and_are_not_published() -> None:
    targets = {
        c["labels"]["service"]: c["targets"][0]
        for job in PROMETHEUS["scrape_configs"]
        if job["job_name"] == "hala"
        for c in job["static_configs"]
    }
    for name, cls in SERVICES_SETTINGS.items():
        prefix = str(cls.model_config["env_prefix"])
        env, service = _env(name), COMPOSE["services"][name]
        assert targets[name] == f"{name}:{env[f'{prefix}OPS_PORT']}"
        assert env[f"{prefix}OPS_HOST"] == "0.0.0.0"  # reachable by Prometheus in the network
        published = " ".join(service.get("ports", []))
        assert env[f"{prefix}OPS_PORT"] not in published


def test_ingest_and_status_serve_https_with_init_s_certificates() -> None:
    for name in ("ingest", "status"):
        env = _env(name)
        prefix = name.upper()
        assert env[f"{prefix}_TLS_CERT_FILE"] == f"/shared/tls/{name}.pem"
        assert env[f"{prefix}_TLS_KEY_FILE"] == f"/shared/tls/{name}-key.pem"
    sim = _env("metasim")
    assert sim["METASIM_WEBHOOK_URL"].startswith("https://status:")
    assert sim["METASIM_WEBHOOK_CA_FILE"] == "/shared/tls/ca.pem"


def test_mongo_has_authentication_and_the_services_an_app_user() -> None:
    mongo = COMPOSE["services"]["mongo"]
    assert "--replSet" in mongo["command"] and "--keyFile" in mongo["command"]
    assert (
        mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"]
        == "/run/secrets/mongo_root_password"
    )
    init_js = (REPO / "deploy" / "compose" / "mongo-init.js").read_text()
    assert 'role: "readWrite", db: "hala"' in init_js and "mongo_app_password" in init_js
    shared = COMPOSE["x-service-env"]
    assert shared["MONGODB_USERNAME"] == "hala"
    assert shared["MONGODB_PASSWORD_FILE"] == "/run/secrets/mongo_app_password"


def test_the_cli_holds_the_top_up_and_erasure_keys_from_files_billing_the_same_top_up_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env("hala")
    assert env["HALA_TOPUP_SIGNING_KEY_FILE"] == _env("billing")["HALA_TOPUP_SIGNING_KEY_FILE"]
    for key in [k for k in list(os.environ) if k.startswith(("KAFKA_", "MONGODB_", "HALA_"))]:
        monkeypatch.delenv(key)
    for key, value in _with_secret_files(env, tmp_path).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(AdminSettings)
    assert not settings.development
    # In production, from the files: neither key is the development value.
    assert len(settings.topup_key()) >= 32 and len(settings.erasure_key()) >= 32
    assert settings.kafka.username == principal("admin")


def test_notify_mails_through_a_relay_with_starttls_and_a_login() -> None:
    env = _env("notify")
    assert env["NOTIFY_SMTP_STARTTLS"] == "true" and env["NOTIFY_SMTP_USERNAME"]
    assert env["NOTIFY_SMTP_PASSWORD_FILE"] == "/run/secrets/notify_smtp_password"
    assert "ports" not in COMPOSE["services"]["notify"]  # it has no client port


def test_the_kafka_set_up_runs_as_the_set_up_principal_and_the_cli_as_admin() -> None:
    assert _env("kafka-setup")["KAFKA_SASL_USERNAME"] == "hala-setup"
    assert _env("hala")["KAFKA_SASL_USERNAME"] == principal("admin")


def test_init_prepares_the_broker_the_principals_and_the_simulator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "compose_init", REPO / "deploy" / "compose" / "init.py"
    )
    assert spec is not None and spec.loader is not None
    init = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init)
    prepare = init.prepare
    operator = tmp_path / "secrets"
    operator.mkdir()
    (operator / "status_app_secret").write_text("an-app-secret-of-the-operator-0123\n")
    (operator / "status_verify_token").write_text("a-verify-token-of-the-operator-01\n")
    shared, ca = tmp_path / "shared", tmp_path / "ca"
    prepare(shared, ca, operator, chown=False)
    first = {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()}
    prepare(shared, ca, operator, chown=False)  # a re-run changes nothing
    assert {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()} == first

    properties = (shared / "kafka" / "server.properties").read_text()
    assert "${" not in properties
    assert "listeners=BROKER://0.0.0.0:9092" in properties
    assert "advertised.listeners=BROKER://kafka:9092" in properties
    broker_password = (shared / "kafka" / "kafka-broker.password").read_text().strip()
    assert f'password="{broker_password}"' in properties
    for user in (*BROKER_USERS, *(principal(s) for s in SERVICES)):
        assert (shared / "kafka" / f"{user}.password").stat().st_mode & 0o077 == 0
    assert broker_password not in (shared / "kafka" / "scram-args").read_text()
    assert not list(shared.rglob("ca-key.pem")) and (ca / "ca-key.pem").exists()
    assert {p.name for p in (shared / "tls").iterdir()} >= {
        "ca.pem",
        "kafka-bundle.pem",
        "ingest.pem",
        "ingest-key.pem",
        "status.pem",
        "status-key.pem",
    }
    sim: dict[str, Any] = yaml.safe_load((shared / "metasim.yaml").read_text())
    assert sim["app_secret"] == "an-app-secret-of-the-operator-0123"
    assert sim["verify_token"] == "a-verify-token-of-the-operator-01"


def test_each_service_is_restarted_after_it_exits_and_the_cli_is_not() -> None:
    # runtime.serve raises (the process exits non-zero) when a worker gives up on a dependency:
    # the restart is what brings the consumer back, from its committed offsets.
    services = COMPOSE["services"]
    for name in SERVICES_SETTINGS:
        assert services[name]["restart"] == "unless-stopped", name
    assert services["hala"]["restart"] == "no"
