"""The connections every service opens in its composition root, opened and closed in one place."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import ReadinessCheck
from shared.kafka import kafka_ready, make_producer, topic_name, wait_for_topics
from shared.kafka_access import topics_of
from shared.logging import get_logger
from shared.mongo import make_client, mongo_ready
from shared.renewing_producer import renewing_producer
from shared.settings import ServiceSettings

log = get_logger(__name__)


@dataclass
class Connections:
    producer: AIOKafkaProducer
    mongo: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {
            "kafka": lambda: kafka_ready(self.producer),
            "mongodb": lambda: mongo_ready(self.mongo),
        }


async def start_with_retry(producer: AIOKafkaProducer, deadline_s: float = 60.0) -> None:
    """The broker may still be starting when a service starts: keep trying for a while."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await producer.start()
            return
        except (KafkaConnectionError, KafkaError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("kafka_not_ready_retrying", error=str(exc))
            await asyncio.sleep(1)


async def wait_for_own_topics(settings: ServiceSettings, service: str) -> None:
    """Services create no topics (their principals may not): wait until the set-up step made
    the ones this service uses."""
    await wait_for_topics(
        settings.kafka, [topic_name(name, settings.topic_prefix) for name in topics_of(service)]
    )


@asynccontextmanager
async def connections(settings: ServiceSettings, service: str) -> AsyncIterator[Connections]:
    mongo = make_client(
        settings.mongodb_url, timeout_ms=settings.mongodb_timeout_ms, **settings.mongo_credentials()
    )
    await wait_for_own_topics(settings, service)
    # Replaced by a new one when the broker no longer accepts it (shared/renewing_producer.py).
    producer = renewing_producer(lambda: make_producer(settings.kafka), start_with_retry)
    await producer.start()
    try:
        yield Connections(producer=producer, mongo=mongo, db=mongo[settings.mongodb_database])
    finally:
        await producer.stop()
        await mongo.close()


# Young-generation collections every 700 container allocations (CPython's default) ran several
# times per request on ingest's hot path; at 20,000 ingest spends ~10 % less CPU per request
# (bench/README.md) for a few MB more of short-lived garbage.
GC_YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Once everything built at start exists: move it out of the collector's reach for good
    (modules, apps, settings are never garbage) and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


@dataclass
class Parts:
    """What a service's build function makes: the readiness checks of its ops endpoints, its
    background workers, and its client-facing app (None: the service serves only the ops
    endpoints)."""

    checks: Mapping[str, ReadinessCheck]
    workers: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    client_app: web.Application | None = None


Build = Callable[[Connections], Awaitable[Parts]]


async def serve(settings: ServiceSettings, service: str, build: Build) -> None:
    """Open connections, build the service's parts, serve until SIGTERM/SIGINT: the ops
    endpoints on OPS_HOST:OPS_PORT, the client app (if any) on HTTP_HOST:HTTP_PORT, over HTTPS
    when TLS_CERT_FILE/TLS_KEY_FILE are set.

    A worker that stops on its own (a bug, or a transient failure past its retry budget) stops
    the whole process without committing, so that a supervisor restarts it.
    """
    from shared.http import make_ops_app, server_ssl_context, start_site, stop_event_on_signals

    stop = stop_event_on_signals()
    tls = (
        server_ssl_context(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file
        else None
    )
    async with connections(settings, service) as conns:
        parts = await build(conns)
        tune_garbage_collector()
        runners = [
            await start_site(
                make_ops_app(service, parts.checks), settings.ops_host, settings.ops_port
            )
        ]
        if parts.client_app is not None:
            runners.append(
                await start_site(parts.client_app, settings.http_host, settings.http_port, tls)
            )
        tasks = [asyncio.create_task(w) for w in parts.workers]
        log.info(
            "service_started",
            ops_port=settings.ops_port,
            port=settings.http_port if parts.client_app is not None else None,
            https=tls is not None,
            workers=len(tasks),
        )
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper]
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        for runner in reversed(runners):
            await runner.cleanup()
        for task in failed:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("worker_failed", error=repr(error))
                raise error
    log.info("service_stopped")
