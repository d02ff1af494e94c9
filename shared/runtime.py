"""The connections every service opens in its composition root, opened and closed in one place."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import ReadinessCheck
from shared.kafka import ensure_topics, kafka_ready, make_producer
from shared.logging import get_logger
from shared.mongo import make_client, mongo_ready
from shared.settings import ServiceSettings

log = get_logger(__name__)


@dataclass
class Connections:
    producer: AIOKafkaProducer
    mongo: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"kafka": lambda: kafka_ready(self.producer),
                "mongodb": lambda: mongo_ready(self.mongo)}


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


@asynccontextmanager
async def connections(settings: ServiceSettings) -> AsyncIterator[Connections]:
    mongo = make_client(settings.mongodb_url, timeout_ms=settings.mongodb_timeout_ms)
    producer = make_producer(settings.kafka_bootstrap_servers)
    await start_with_retry(producer)
    try:
        await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
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


Build = Any  # Callable[[Connections], Awaitable[tuple[web.Application, list[Coroutine]]]]


async def serve(settings: ServiceSettings, service: str, build: Build) -> None:
    """Open connections, build the service's HTTP app and workers, serve until SIGTERM/SIGINT.

    A worker that stops on its own (a bug, or a transient failure past its retry budget) stops
    the whole process without committing, so that a supervisor restarts it.
    """
    from shared.http import start_site, stop_event_on_signals

    stop = stop_event_on_signals()
    async with connections(settings) as conns:
        app, workers = await build(conns)
        tune_garbage_collector()
        runner = await start_site(app, settings.http_host, settings.http_port)
        tasks = [asyncio.create_task(w) for w in workers]
        log.info("service_started", port=settings.http_port, workers=len(tasks))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper]
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        await runner.cleanup()
        for task in failed:
            if not task.cancelled() and task.exception() is not None:
                log.error("worker_failed", error=repr(task.exception()))
                raise task.exception()  # type: ignore[misc]
    log.info("service_stopped")
