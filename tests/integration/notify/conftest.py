"""A private notify per test, wired as its composition root wires it, on the real broker and
database (its own topic prefix and database), delivering over real HTTP to aiohttp receivers
that succeed, fail, hang, trickle and disappear, and mailing a real aiosmtpd server.

On the secure broker, notify's consumer and its dead letters run as notify's own principal
(`hala-notify`, with the ACLs the test's prefix is granted); the test publishes what the other
services would, as the set-up principal."""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.notify import alerts
from services.notify.core import Endpoint, Health, scaled
from services.notify.dispatcher import DeliveryPolicy, Dispatcher
from services.notify.endpoints import EndpointDirectory
from services.notify.mailer import Mailer, SmtpConfig, SmtpServer
from services.notify.repository import NotifyRepository
from services.notify.settings import NotifySettings
from services.notify.transport import HttpTransport
from services.notify.worker import NotifyWorker, run_consumer
from shared.clock import SystemClock
from shared.collections import (
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    EMAIL_ALERTS,
    NOTIFY_EVENTS,
    ensure_indexes,
)
from shared.kafka import make_producer, publish
from shared.ports import free_loopback_port
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker

# notify's own fetch settings, as it runs (NotifySettings' defaults)
FETCH = {
    k: NotifySettings.model_fields[k].default for k in ("fetch_min_bytes", "fetch_max_wait_ms")
}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 30.0, what: str = "condition"
) -> Any:
    """Poll until `check` returns something true; fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval, not a wait for the result


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    at: float  # time.time()


Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def ok(_: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def fail_with_huge_body(_: web.Request) -> web.StreamResponse:
    return web.Response(status=500, body=b"x" * 5_000_000)


async def hang(_: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)  # a receiver that never answers
    return web.Response()


async def trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    await response.prepare(request)
    for _ in range(3600):  # one byte a second, forever
        await response.write(b".")
        await asyncio.sleep(1)
    return response


async def gone(_: web.Request) -> web.StreamResponse:
    return web.Response(status=410)


class Flaky:
    """503 with Retry-After until `up` is set, then 200 (a receiver in trouble, then fixed)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._up = False
        self.up_since = float("inf")

    @property
    def up(self) -> bool:
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        self._up = value
        self.up_since = time.time() if value else float("inf")

    async def __call__(self, _: web.Request) -> web.StreamResponse:
        if self._up:
            return web.Response(text="ok")
        return web.Response(status=503, headers={"Retry-After": "0"})


class Receivers:
    """One HTTP server; each path behaves as told and every request is kept."""

    def __init__(self) -> None:
        self.port = free_loopback_port()
        self.behaviours: dict[str, Behaviour] = {}
        self.received: list[Received] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.match_info["path"]
        self.received.append(Received(path, body, dict(request.headers), time.time()))
        return await self.behaviours.get(path, ok)(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


class Mailbox:
    """A real SMTP server (aiosmtpd, in its own thread) that keeps every mail."""

    def __init__(self) -> None:
        self.port = free_loopback_port()
        self.messages: queue.SimpleQueue[EmailMessage] = queue.SimpleQueue()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=default)
        message["X-Rcpt-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.put(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def drain(self) -> list[EmailMessage]:
        found = []
        while not self.messages.empty():
            found.append(self.messages.get_nowait())
        return found


@dataclass
class NotifyWorld:
    broker: Broker
    mongodb_url: str
    prefix: str
    db: AsyncDatabase[dict[str, Any]]
    producer: AIOKafkaProducer  # the test's (set-up principal): what other services publish
    notify_producer: AIOKafkaProducer  # notify's own principal: its dead letters
    vault: TokenVault
    token_keys: str
    receivers: Receivers
    mailbox: Mailbox
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dispatcher: Dispatcher | None = None
    transport: HttpTransport | None = None

    async def add_endpoint(
        self,
        endpoint_id: str,
        path: str,
        account_id: str = "acc_a",
        events: tuple[str, ...] = ("*",),
        fmt: str = "standard",
        secrets: tuple[str, ...] | None = None,
    ) -> list[str]:
        """The document ingest's API writes (shared/collections.py), written directly."""
        secrets = secrets or (new_secret(),)
        now = int(time.time() * 1000) - 60_000
        await self.db["webhook_endpoints"].insert_one(
            {
                "_id": endpoint_id,
                "account_id": account_id,
                "url": self.receivers.url(path),
                "events": list(events),
                "format": fmt,
                "description": "",
                "enabled": True,
                "enabled_at": now,
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
                "secrets": [
                    {
                        "id": f"s{i}",
                        "encrypted": self.vault.encrypt(s),
                        "created_at": now - i,
                        "expires_at": None if i == 0 else now + 86_400_000,
                    }
                    for i, s in enumerate(secrets)
                ],
            }
        )
        return list(secrets)

    async def publish(self, topic: Any, event: Any) -> None:
        await publish(self.producer, topic, event, self.prefix)

    def start_notify(
        self,
        *,
        schedule: tuple[float, ...] = (0.2, 0.4, 0.8),
        time_scale: float = 1.0,
        total_timeout: float = 10.0,
        disable_after_s: float = 3 * 86_400.0,
        poll_interval: float = 0.1,
        grace_ms: int = 30_000,
        endpoint_ttl_s: float = 0.2,
    ) -> None:
        clock = SystemClock()
        store = NotifyRepository(self.db)
        directory = EndpointDirectory(store, self.vault, clock, ttl_seconds=endpoint_ttl_s)
        mailer = Mailer(
            store,
            SmtpServer(SmtpConfig("127.0.0.1", self.mailbox.port, timeout_seconds=10)),
            clock,
            "Hala <alerts@hala.test>",
            [0.2, 0.5],
            poll_interval=0.1,
        )
        self.transport = HttpTransport(allow_loopback=True, total_timeout=total_timeout)

        async def on_disabled(endpoint: Endpoint, health: Health) -> None:
            await mailer.raise_alert(
                alerts.endpoint_disabled(
                    endpoint.id,
                    endpoint.account_id,
                    endpoint.url,
                    health.disabled_reason or "failing",
                    health.disabled_at or 0,
                    health.failing_since,
                )
            )

        dispatcher = Dispatcher(
            store,
            directory,
            self.transport,
            clock,
            DeliveryPolicy(
                schedule=scaled(schedule, time_scale),
                jitter=0.1,
                disable_after_ms=round(disable_after_s * 1000 / time_scale),
                retry_after_scale=time_scale,
                poll_interval=poll_interval,
                grace_ms=grace_ms,
            ),
            on_disabled=on_disabled,
        )
        self.dispatcher = dispatcher
        worker = NotifyWorker(store, directory, dispatcher, mailer, clock, self.prefix, grace_ms)

        async def run_all() -> None:
            await self.transport.start()  # type: ignore[union-attr]
            await directory.load_health()
            try:
                await asyncio.gather(
                    run_consumer(
                        self.broker.as_service("notify"),
                        self.prefix,
                        worker,
                        self.notify_producer,
                        consumer_options=FETCH,
                    ),
                    dispatcher.run_forever(),
                    mailer.run_forever(),
                )
            finally:
                await dispatcher.stop()
                await self.transport.close()  # type: ignore[union-attr]

        self.tasks.append(asyncio.create_task(run_all()))

    def check(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def wait_for(
        self, check: Callable[[], Any], within: float = 30.0, what: str = "condition"
    ) -> Any:
        async def probe() -> Any:
            self.check()
            result = check()
            return await result if asyncio.iscoroutine(result) else result

        return await eventually(probe, within, what)


@pytest.fixture
async def world(
    broker: Broker, mongodb_url: str, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[NotifyWorld]:
    prefix = f"t{unique}."
    await broker.grant(prefix)
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, NOTIFY_EVENTS, DELIVERIES, DELIVERY_ATTEMPTS, EMAIL_ALERTS)
    producer = make_producer(broker.setup)
    notify_producer = make_producer(broker.as_service("notify"))
    await asyncio.gather(producer.start(), notify_producer.start())
    receivers, mailbox = Receivers(), Mailbox()
    await receivers.start()
    mailbox.start()
    keys = new_key()
    built = NotifyWorld(
        broker,
        mongodb_url,
        prefix,
        db,
        producer,
        notify_producer,
        TokenVault(keys),
        keys,
        receivers,
        mailbox,
    )
    try:
        yield built
    finally:
        for task in built.tasks:
            task.cancel()
        await asyncio.gather(*built.tasks, return_exceptions=True)
        await receivers.stop()
        mailbox.stop()
        await asyncio.gather(producer.stop(), notify_producer.stop())
        await mongo.drop_database(f"it_{unique}")
