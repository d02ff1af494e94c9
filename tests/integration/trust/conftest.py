"""The send API (ingest in process, as in tests/integration/ingest/) with status's webhook
processor and guard running beside it on the same real broker and database, and `hala` for the
operator: what a user's STOP, a client's list or a burst of failures does to the next send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.admin import audit_core, cli, commands
from services.admin.settings import AdminSettings
from services.guard.core import Rule, Rules
from services.guard.repository import MongoGuardStore
from services.guard.worker import Guard, KafkaHoldPublisher
from services.guard.worker import run_consumer as run_guard
from services.status.processor import WebhookProcessor
from services.status.publisher import KafkaPublisher
from services.status.repository import StatusRepository
from services.status.workers import run_processor
from shared.clock import SystemClock
from shared.collections import ACCOUNT_HOLDS, SUPPRESSIONS, ensure_indexes
from shared.kafka import make_producer, publish_all
from shared.messages import Topic
from shared.pseudonyms import keyed_hash
from tests.conftest import Broker
from tests.integration.ingest.conftest import (  # noqa: F401 (the fixture, re-exported)
    META_TEMPLATES,
    PHONE_A,
    WABA_A,
    Platform,
    StaticTemplates,
    meta_template,
    platform,
)

ANA = audit_core.Operator(name="ana", os_user="deploy", host="ops-1")
# Small enough for a test's burst; the other rules out of the way.
RULES = Rules(
    failure_rate=Rule(0.5, 900, 10),
    new_recipients=Rule(0.99, 3600, 10_000),
    volume_spike=Rule(5.0, 3600, 10_000),
)
WITHIN_S = 30.0


@dataclass
class Trust:
    platform: Platform
    producer: AIOKafkaProducer
    settings: AdminSettings
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.platform.db

    async def publish(self, topic: Topic[Any], *events: Any) -> None:
        await publish_all(self.producer, [(topic, e) for e in events], self.platform.prefix)

    async def hala(self, *argv: str) -> Any:
        return await cli.run(cli.build_parser().parse_args(list(argv)), self.settings, ANA)

    async def send(self, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.platform.client.post(
            "/v1/messages",
            data=orjson.dumps(body),
            headers={**self.platform.a.auth, "Content-Type": "application/json"},
        )
        return resp.status, await resp.json()

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.platform.client.request(
            method,
            path,
            data=None if body is None else orjson.dumps(body),
            headers={**self.platform.a.auth, "Content-Type": "application/json"},
        )
        text = await resp.text()
        return resp.status, orjson.loads(text) if text else None

    async def until(self, check: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Poll `check` until it returns something true (with a deadline); return it."""
        deadline = time.monotonic() + WITHIN_S
        while True:
            for task in self.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            found = await check()
            if found:
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)  # polling interval, not a wait for the result

    async def until_send(self, body: dict[str, Any], status: int, what: str) -> Any:
        async def answered() -> Any:
            got, answer = await self.send(body)
            return answer if got == status else None

        return await self.until(answered, what)


def marketing(to: str = "+447912345678") -> dict[str, Any]:
    return {
        "from": PHONE_A,
        "to": to,
        "type": "template",
        "template": {
            "name": "spring_sale",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "20%"},
                    ],
                }
            ],
        },
    }


def utility(to: str = "+447912345678") -> dict[str, Any]:
    return {
        "from": PHONE_A,
        "to": to,
        "type": "template",
        "template": {
            "name": "appointment_reminder",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Monday"},
                        {"type": "text", "text": "10:00"},
                    ],
                }
            ],
        },
    }


def text(to: str = "+447912345678") -> dict[str, Any]:
    return {"from": PHONE_A, "to": to, "type": "text", "text": {"body": "Your order shipped"}}


@pytest.fixture
async def trust(
    platform: Platform,  # noqa: F811
    broker: Broker,
    mongodb_url: str,
) -> AsyncIterator[Trust]:
    # Every topic of the prefix with each service's ACLs: status's processor and guard each
    # run as their own principal, `hala` as the admin's, the test itself as the set-up's.
    await broker.grant(platform.prefix)
    await ensure_indexes(platform.db, SUPPRESSIONS, ACCOUNT_HOLDS)
    # an approved marketing template of the first account's WABA
    await commands.sync_templates(
        platform.db,
        platform.vault,
        StaticTemplates(
            {
                WABA_A: [
                    *META_TEMPLATES[WABA_A],
                    meta_template("spring_sale", "Hi {{1}}, {{2}} off.", category="MARKETING"),
                ]
            }
        ),
        waba_id=WABA_A,
    )
    producer = make_producer(broker.setup)  # the test's own writes (Meta's, status's facts)
    status_producer = make_producer(broker.as_service("status"))
    guard_producer = make_producer(broker.as_service("guard"))
    for started in (producer, status_producer, guard_producer):
        await started.start()
    settings = AdminSettings(
        MONGODB_URL=mongodb_url,
        MONGODB_DATABASE=platform.db.name,
        HALA_TOPIC_PREFIX=platform.prefix,
        HALA_ENV="development",
        **broker.settings("admin"),
    )
    world = Trust(platform, producer, settings)
    clock = SystemClock()
    processor = WebhookProcessor(
        StatusRepository(platform.db),
        KafkaPublisher(status_producer, platform.prefix, timeout_seconds=30),
        clock,
        keywords_cache_seconds=0,
    )
    guard = Guard(
        MongoGuardStore(platform.db),
        KafkaHoldPublisher(guard_producer, platform.prefix),
        clock,
        RULES,
        partial(keyed_hash, key=b"it-key"),
        prefix=platform.prefix,
    )
    world.tasks = [
        asyncio.create_task(
            run_processor(
                broker.as_service("status"),
                platform.prefix,
                processor,
                status_producer,
            )
        ),
        asyncio.create_task(
            run_guard(
                broker.as_service("guard"), platform.prefix, guard, guard_producer, max_batch=500
            )
        ),
    ]
    try:
        yield world
    finally:
        for task in world.tasks:
            task.cancel()
        await asyncio.gather(*world.tasks, return_exceptions=True)
        for started in (producer, status_producer, guard_producer):
            await started.stop()
