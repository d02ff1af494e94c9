"""Fixtures for tests that need infrastructure: integration and end-to-end tests run against
the real local Kafka and MongoDB-compatible server.

The project's infrastructure script starts them once per test session (or the addresses in
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL are used). Unreachable infrastructure is a failure, never a
skip. Each test gets its own topics, consumer groups and database.

Every process runs in development mode (HALA_ENV=development): secrets may keep their
development defaults.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.kafka import delete_topics
from shared.mongo import make_client

# Before any settings are read, by the tests or by the processes they start.
os.environ.setdefault("HALA_ENV", "development")

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "deploy" / "local" / "infra.sh"

# Every id the `unique` fixture handed out in this session: at its end, the topics and databases
# named with one are deleted (only ours: other sessions may share the broker).
_UNIQUES: set[str] = set()


def _infra(*args: str) -> str:
    result = subprocess.run([str(INFRA), *args], capture_output=True, text=True, timeout=900,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"infra.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[dict[str, str]]:
    """Addresses of the broker and database, started by the project's script if needed."""
    started_here = False
    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URL")):
        was_running = subprocess.run([str(INFRA), "status"], capture_output=True,
                                     check=False).returncode == 0
        _infra("up")
        started_here = not was_running
    env = dict(line.split("=", 1) for line in _infra("env").split() if "=" in line)
    env.update({k: os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")
                if os.environ.get(k)})
    yield env
    if _UNIQUES:
        asyncio.run(_clean_up(env["KAFKA_BOOTSTRAP_SERVERS"], env["MONGODB_URL"], _UNIQUES))
    if started_here and os.environ.get("HALA_KEEP_INFRA") != "1":
        _infra("down")


async def _clean_up(bootstrap_servers: str, mongodb_url: str, uniques: set[str]) -> None:
    await delete_topics(bootstrap_servers, lambda name: any(u in name for u in uniques))
    # By name, not by listing: FerretDB's listDatabases waits on every database's lock.
    client = make_client(mongodb_url)
    try:
        for unique in uniques:
            await client.drop_database(f"it_{unique}")
    finally:
        await client.close()


@pytest.fixture(scope="session")
def bootstrap_servers(infrastructure: dict[str, str]) -> str:
    return infrastructure["KAFKA_BOOTSTRAP_SERVERS"]


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
