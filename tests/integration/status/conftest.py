"""A private world per test: its own topic prefix, consumer groups and database, with the
status service's real adapters wired as in its composition root."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.status.app import create_app
from services.status.handlers import WebhookConfig
from services.status.processor import WebhookProcessor
from services.status.publisher import KafkaPublisher
from services.status.repository import StatusRepository
from services.status.state_writer import StateWriter
from services.status.workers import processor_group, run_processor, run_state_writer
from shared.clock import SystemClock
from shared.collections import (
    CONVERSATIONS,
    INBOUND_MESSAGES,
    MESSAGES,
    NUMBER_STATES,
    PARKED_STATUSES,
    PHONE_NUMBERS,
    TEMPLATES,
    USER_PREFERENCES,
    WAMID_INDEX,
    ensure_indexes,
)
from shared.kafka import KafkaConfig, make_consumer, make_producer, topic_name
from shared.messages import WEBHOOK_RECEIVED, Topic
from tests.conftest import Broker

VERIFY_TOKEN = "token"
# Meta's subscription handshake: a GET the webhook app answers with the challenge.
HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"}


@dataclass
class StatusWorld:
    """status's workers and webhook app run as status's own principal (`service`, `producer`,
    `publisher`); the test itself reads and writes as the set-up principal (`kafka`,
    `publish`), playing ingest, billing and the sender."""

    kafka: KafkaConfig
    service: KafkaConfig
    prefix: str
    db: AsyncDatabase[dict[str, Any]]
    producer: AIOKafkaProducer
    repository: StatusRepository
    publisher: KafkaPublisher
    inputs: KafkaPublisher
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, worker: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(worker))

    def start_processor(self) -> None:
        processor = WebhookProcessor(self.repository, self.publisher, SystemClock())
        self.start(run_processor(self.service, self.prefix, processor, self.producer))

    @asynccontextmanager
    async def webhook_client(self, app_secret: bytes) -> AsyncIterator[TestClient[Any, Any]]:
        """status's webhook HTTP app, in process, publishing to this world's topics."""
        app = create_app(
            WebhookConfig(app_secret, VERIFY_TOKEN, 3 * 1024 * 1024), self.publisher, SystemClock()
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()

    async def processed_everything(self) -> bool:
        """Whether the processor's group has committed every webhook published so far."""
        topic = topic_name(WEBHOOK_RECEIVED, self.prefix)
        partitions = [TopicPartition(topic, p) for p in range(WEBHOOK_RECEIVED.partitions)]
        consumer = make_consumer(self.kafka, processor_group(self.prefix))
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
            committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
        finally:
            await consumer.stop()
        return all(committed[tp] >= end for tp, end in ends.items())

    def start_state_writer(self) -> None:
        writer = StateWriter(self.repository, self.publisher, SystemClock())
        self.start(run_state_writer(self.service, self.prefix, writer, self.producer))

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        """Write an input of status's, as the service that produces it would."""
        await self.inputs.publish(topic, event)

    def check_workers(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def read(
        self, topic: Topic[Any], until: Callable[[list[Any]], bool], within_seconds: float = 30.0
    ) -> list[Any]:
        """Decoded events of a topic (from the start) once `until` holds for them."""
        consumer = make_consumer(
            self.kafka,
            f"{self.prefix}it-reader-{time.monotonic_ns()}",
            topic_name(topic, self.prefix),
        )
        await consumer.start()
        events: list[Any] = []
        try:
            deadline = time.monotonic() + within_seconds
            while not until(events):
                self.check_workers()
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out reading {topic.name}: {events}")
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    events.extend(topic.decode(r.value) for r in records)
            return events
        finally:
            await consumer.stop()

    async def wait_for(
        self,
        condition: Callable[[], Awaitable[bool]],
        within_seconds: float = 30.0,
        what: str = "condition",
    ) -> None:
        deadline = time.monotonic() + within_seconds
        while not await condition():
            self.check_workers()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)  # polling interval, not a wait for the result


@pytest.fixture
async def world(
    broker: Broker, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[StatusWorld]:
    prefix = f"t{unique}."
    await broker.grant(prefix)
    db = mongo[f"it_{unique}"]
    # ingest's and the CLI's indexes too: the state writer must live with them.
    await ensure_indexes(
        db,
        MESSAGES,
        TEMPLATES,
        WAMID_INDEX,
        PARKED_STATUSES,
        CONVERSATIONS,
        INBOUND_MESSAGES,
        USER_PREFERENCES,
        NUMBER_STATES,
        PHONE_NUMBERS,
    )
    service = broker.as_service("status")
    producer = make_producer(service)
    await producer.start()
    test_producer = make_producer(broker.setup)
    await test_producer.start()
    repository = StatusRepository(db)
    world = StatusWorld(
        kafka=broker.setup,
        service=service,
        prefix=prefix,
        db=db,
        producer=producer,
        repository=repository,
        publisher=KafkaPublisher(producer, prefix, timeout_seconds=30),
        inputs=KafkaPublisher(test_producer, prefix, timeout_seconds=30),
    )
    try:
        yield world
    finally:
        for task in world.tasks:
            task.cancel()
        await asyncio.gather(*world.tasks, return_exceptions=True)
        await producer.stop()
        await test_producer.stop()
        await mongo.drop_database(f"it_{unique}")
