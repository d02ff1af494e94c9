"""Fixtures for tests that need infrastructure: integration and end-to-end tests run against
the real local Kafka and MongoDB-compatible server.

The project's infrastructure script starts them once per test session (or the addresses in
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL are used). Unreachable infrastructure is a failure, never a
skip. Each test gets its own topics, consumer groups and database.

The broker is the secure one `deploy/local/infra.sh` runs: SASL_SSL with SCRAM and ACLs. Tests
connect as the set-up principal (`kafka`, a super user: topic creation, reading and writing
anything a test checks), and every service a test runs, in process or as a process, connects
as its own principal (`broker.as_service(...)`, `broker.env(...)`), allowed only its own topics
and groups: `broker.grant(prefix)` creates a test prefix's topics and the ACLs of every service
on them, as the set-up of a real deployment would. An external broker (KAFKA_BOOTSTRAP_SERVERS)
must be configured the same way: KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CA_FILE and
HALA_KAFKA_SECRETS_DIR with `<user>.password` of hala-setup and of every service principal.

Every process runs in development mode (HALA_ENV=development): secrets may keep their
development defaults.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.kafka import KafkaConfig
from shared.kafka_access import SETUP_PRINCIPAL, principal
from shared.messages import ALL_TOPICS, Topic
from shared.mongo import make_client
from tools.kafka_setup import (
    ensure_missing_users,
    existing_password,
    grant,
    password_file,
    revoke,
)

# Before any settings are read, by the tests or by the processes they start.
os.environ.setdefault("HALA_ENV", "development")

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "deploy" / "local" / "infra.sh"

# Every id the `unique` fixture handed out in this session: at its end, the topics, ACLs and
# databases named with one are deleted (only ours: other sessions may share the broker).
_UNIQUES: set[str] = set()
_KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SSL_CA_FILE",
    "HALA_KAFKA_SECRETS_DIR",
)


def _infra(*args: str) -> str:
    result = subprocess.run(
        [str(INFRA), *args], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"infra.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class Broker:
    """The secure broker: the set-up principal for the tests themselves, and every service's
    principal for the services they run."""

    setup: KafkaConfig
    secrets_dir: Path
    _granted: set[tuple[str, str]] = field(default_factory=set)

    def as_service(self, service: str) -> KafkaConfig:
        """How `service` connects (its own principal)."""
        user = principal(service)
        return self.setup.as_user(user, existing_password(self.secrets_dir, user))

    def env(self, service: str | None) -> dict[str, str]:
        """The KAFKA_* variables of a process running as `service` (None: as the set-up
        principal), its password by file."""
        config = self.setup
        user = principal(service) if service else SETUP_PRINCIPAL
        return {
            "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": config.security_protocol,
            "KAFKA_SASL_MECHANISM": config.sasl_mechanism,
            "KAFKA_SSL_CA_FILE": config.ca_file or "",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(password_file(self.secrets_dir, user)),
        }

    def settings(self, service: str) -> dict[str, Any]:
        """Keyword arguments for a service's settings built in process (as `service`)."""
        config = self.as_service(service)
        return {
            "kafka_bootstrap_servers": config.bootstrap_servers,
            "kafka_security_protocol": config.security_protocol,
            "kafka_sasl_mechanism": config.sasl_mechanism,
            "kafka_ssl_ca_file": config.ca_file or "",
            "kafka_sasl_username": config.username,
            "kafka_sasl_password": config.password,
        }

    async def grant(self, prefix: str, topics: Iterable[Topic[Any]] = ALL_TOPICS) -> None:
        """The topics of `prefix` (all, or those given) and every service's ACLs on them."""
        wanted = tuple(t for t in topics if (prefix, t.name) not in self._granted)
        if wanted:
            await grant(self.setup, prefix, wanted)
            self._granted.update((prefix, t.name) for t in wanted)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[dict[str, str]]:
    """Addresses and credentials of the broker and database, started by the project's script if
    needed."""
    started_here = False
    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URL")):
        was_running = (
            subprocess.run([str(INFRA), "status"], capture_output=True, check=False).returncode == 0
        )
        _infra("up")
        started_here = not was_running
    env = dict(line.split("=", 1) for line in _infra("env").split() if "=" in line)
    env.update({k: os.environ[k] for k in (*_KAFKA_ENV, "MONGODB_URL") if os.environ.get(k)})
    broker = broker_from_env(env)
    yield env
    if _UNIQUES:
        asyncio.run(_clean_up(broker.setup, env["MONGODB_URL"], _UNIQUES))
    if started_here and os.environ.get("HALA_KEEP_INFRA") != "1":
        _infra("down")


def broker_from_env(env: dict[str, str]) -> Broker:
    """The broker `infra.sh env` (or the caller's KAFKA_* variables) describe."""
    missing = [k for k in ("KAFKA_BOOTSTRAP_SERVERS", "HALA_KAFKA_SECRETS_DIR") if k not in env]
    if missing:
        raise RuntimeError(
            f"the tests need the secure broker's settings: {', '.join(missing)} "
            "missing (deploy/local/infra.sh env prints them)"
        )
    secrets_dir = Path(env["HALA_KAFKA_SECRETS_DIR"])
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    setup = KafkaConfig(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=env.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),  # type: ignore[arg-type]
        username=SETUP_PRINCIPAL if protocol.startswith("SASL_") else None,
        password=(
            existing_password(secrets_dir, SETUP_PRINCIPAL)
            if protocol.startswith("SASL_")
            else None
        ),
        ca_file=env.get("KAFKA_SSL_CA_FILE") or None,
    )
    return Broker(setup, secrets_dir)


async def _clean_up(setup: KafkaConfig, mongodb_url: str, uniques: set[str]) -> None:
    await revoke(setup, lambda name: any(u in name for u in uniques))
    # By name, not by listing: FerretDB's listDatabases waits on every database's lock.
    client = make_client(mongodb_url)
    try:
        for unique in uniques:
            await client.drop_database(f"it_{unique}")
    finally:
        await client.close()


@pytest.fixture(scope="session")
def broker(infrastructure: dict[str, str]) -> Broker:
    broker = broker_from_env(infrastructure)
    # A service added since the shared broker was set up (its principal has no SCRAM user
    # yet) gets one now, as the set-up's next `users` would: no restart of the broker.
    asyncio.run(ensure_missing_users(broker.setup, broker.secrets_dir))
    return broker


@pytest.fixture(scope="session")
def kafka(broker: Broker) -> KafkaConfig:
    """The broker as the set-up principal: what tests themselves connect as."""
    return broker.setup


@pytest.fixture(scope="session")
def mongodb_url(infrastructure: dict[str, str]) -> str:
    return infrastructure["MONGODB_URL"]


@pytest.fixture
def unique() -> str:
    """A short id that makes this test's topics, groups and database its own."""
    value = uuid.uuid4().hex[:10]
    _UNIQUES.add(value)
    return value


@pytest.fixture
async def mongo(mongodb_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = make_client(mongodb_url)
    yield client
    await client.close()
