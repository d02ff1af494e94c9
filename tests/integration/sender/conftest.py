"""The sender against the real broker, the real database and the real Meta simulator.

The simulator runs as a subprocess (python -m tools.metasim) on a free port, with webhooks off
(nothing listens for them here); each test resets it. Each test has its own topic prefix,
consumer group and database, and seeds `phone_numbers` to match the simulator's numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.sender.consumer import SenderWorker
from services.sender.meta_client import MetaClient
from services.sender.settings import SenderSettings
from services.sender.worker import create_worker
from shared.clock import SystemClock
from shared.collections import PHONE_NUMBERS
from shared.kafka import KafkaConfig, make_consumer, make_producer, publish, topic_name
from shared.messages import (
    SEND_APPROVED,
    STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    SendApproved,
    StatusChanged,
    ThroughputChanged,
)
from shared.ports import free_loopback_port
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[3]
WABA_A1 = "102290129340398"
PORTFOLIO_A = "880011223344556"
A1_NUMBER = "109731225428301"
A1_NUMBER_2 = "109731225428302"
BSP_TOKEN = "EAAsim-bsp-system-user"
RESERVATION = {
    "name": "reservation_confirmation",
    "language": {"code": "en_US"},
    "components": [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
                {"type": "text", "parameter_name": "day", "text": "Saturday"},
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def metasim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator's base URL; the process is ours and is stopped by its handle."""
    config = yaml.safe_load((REPO / "tools" / "metasim" / "default.yaml").read_text())
    config["webhooks"]["enabled"] = False
    folder = tmp_path_factory.mktemp("metasim")
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_loopback_port()
    log = (folder / "metasim.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.metasim", "--port", str(port), "--config", str(config_path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"the simulator did not start; see {folder / 'metasim.log'}"
                ) from None
            time.sleep(0.1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


class StatusCollector:
    """Reads the test's status-changed topic from the start (no group) into memory."""

    def __init__(self, kafka: KafkaConfig, prefix: str) -> None:
        self._consumer = make_consumer(kafka, None)
        self._name = topic_name(STATUS_CHANGED, prefix)
        self.changes: list[StatusChanged] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [TopicPartition(self._name, p) for p in range(STATUS_CHANGED.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.changes.extend(STATUS_CHANGED.decode(r.value) for r in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def outcomes(self) -> dict[str, set[str]]:
        """message id -> the statuses published for it."""
        seen: dict[str, set[str]] = {}
        for change in self.changes:
            seen.setdefault(change.message_id, set()).add(change.status)
        return seen

    def with_status(self, status: str) -> dict[str, StatusChanged]:
        return {c.message_id: c for c in self.changes if c.status == status}


@dataclass
class RunningSender:
    worker: SenderWorker
    meta: MetaClient
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.meta.close()


@dataclass
class Rig:
    """Senders run in process as the sender's own principal (`settings()`,
    `sender_producer`); the test writes their input as the set-up principal (`kafka`,
    `producer`), playing billing and status."""

    broker: Broker
    kafka: KafkaConfig
    prefix: str
    db: AsyncDatabase[dict[str, Any]]
    database_url: str
    producer: AIOKafkaProducer
    sender_producer: AIOKafkaProducer
    statuses: StatusCollector
    sim: str
    token_keys: str
    http: aiohttp.ClientSession
    senders: list[RunningSender] = field(default_factory=list)
    _serial: int = 0

    def event(
        self, phone_number_id: str = A1_NUMBER, recipient: str | None = None, **overrides: Any
    ) -> SendApproved:
        self._serial += 1
        now_ms = time.time_ns() // 1_000_000
        message_id = f"msg_{self.prefix.strip('.')}_{self._serial:05}"
        fields: dict[str, Any] = {
            "event_id": message_id,
            "message_id": message_id,
            "account_id": "acc_it",
            "portfolio_id": PORTFOLIO_A,
            "waba_id": WABA_A1,
            "phone_number_id": phone_number_id,
            "recipient": recipient or f"+44791{self._serial:06}",
            "recipient_region": "GB",
            "message_type": "template",
            "content": RESERVATION,
            "category": "utility",
            "accepted_at": now_ms,
            "expires_at": now_ms + 3_600_000,
            "reserved_amount": 1000,
            "rate_card_version": "test",
        }
        fields.update(overrides)
        return SEND_APPROVED.decode(orjson.dumps(fields))

    async def produce(self, *events: SendApproved) -> None:
        for event in events:
            key, value = SEND_APPROVED.encode(event)
            await self.producer.send(topic_name(SEND_APPROVED, self.prefix), value=value, key=key)
        await self.producer.flush()

    async def publish_throughput(self, change: ThroughputChanged) -> None:
        await publish(self.producer, THROUGHPUT_CHANGED, change, self.prefix)

    def settings(self, **overrides: Any) -> SenderSettings:
        return SenderSettings(
            **self.broker.settings("sender"),
            mongodb_url=self.database_url,
            topic_prefix=self.prefix,
            meta_base_url=self.sim,
            token_keys=self.token_keys,
            **overrides,
        )

    async def start_sender(self, **overrides: Any) -> RunningSender:
        worker, meta = create_worker(
            self.settings(**overrides), self.db, self.sender_producer, SystemClock()
        )
        running = RunningSender(worker, meta, asyncio.create_task(worker.run()))
        self.senders.append(running)
        return running

    async def sim_get(self, path: str) -> Any:
        async with self.http.get(f"{self.sim}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def sim_post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(f"{self.sim}{path}", json=body) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def sim_sends(self, phone_number_id: str | None = None) -> list[dict[str, Any]]:
        query = f"?phone_number_id={phone_number_id}" if phone_number_id else ""
        return list((await self.sim_get(f"/_sim/sends{query}"))["sends"])


def phone_number_docs(vault: TokenVault) -> list[dict[str, Any]]:
    token = vault.encrypt(BSP_TOKEN)
    return [
        {
            "_id": number_id,
            "account_id": "acc_it",
            "waba_id": WABA_A1,
            "portfolio_id": PORTFOLIO_A,
            "display_phone_number": display,
            "access_token_encrypted": token,
            "throughput_mps": 80,
            "messaging_limit": "TIER_UNLIMITED",
            "status": "active",
        }
        for number_id, display in ((A1_NUMBER, "15550001001"), (A1_NUMBER_2, "15550001002"))
    ]


@pytest.fixture
async def rig(
    broker: Broker,
    mongodb_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    unique: str,
    metasim: str,
) -> AsyncIterator[Rig]:
    prefix = f"t{unique}."
    await broker.grant(prefix)
    database = f"it_{unique}"
    db = mongo[database]
    keys = new_key()
    await db[PHONE_NUMBERS].insert_many(phone_number_docs(TokenVault(keys)))
    producer = make_producer(broker.setup)
    await producer.start()
    sender_producer = make_producer(broker.as_service("sender"))
    await sender_producer.start()
    statuses = StatusCollector(broker.setup, prefix)
    await statuses.start()
    http = aiohttp.ClientSession()
    rig = Rig(
        broker,
        broker.setup,
        prefix,
        db,
        mongodb_url,
        producer,
        sender_producer,
        statuses,
        metasim,
        keys,
        http,
    )
    await rig.sim_post("/_sim/reset", {})
    try:
        yield rig
    finally:
        for sender in rig.senders:
            await sender.stop()
        await http.close()
        await statuses.stop()
        await producer.stop()
        await sender_producer.stop()
        await mongo.drop_database(database)
