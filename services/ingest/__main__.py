"""Composition root: settings -> logging -> connections -> serve until SIGTERM."""

import asyncio

from aiohttp import web

from services.ingest.app import SERVICE, create_app
from services.ingest.cache import RecentMessages
from services.ingest.handlers import Ingest
from services.ingest.publisher import KafkaPublisher
from services.ingest.repository import (
    CachedDirectory,
    MongoDirectory,
    MongoIdempotencyStore,
    MongoMessageStore,
)
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock
from shared.logging import configure_logging
from shared.pricing import load_rate_card
from shared.rdkafka_producer import RdKafkaProducer
from shared.runtime import Connections, serve


async def main() -> None:
    settings = IngestSettings()
    configure_logging(SERVICE, settings.log_level)

    async def build(conns: Connections):  # type: ignore[no-untyped-def]
        clock = SystemClock()
        producer = RdKafkaProducer(settings.kafka_bootstrap_servers)
        await producer.start()
        ingest = Ingest(
            directory=CachedDirectory(MongoDirectory(conns.db), clock,
                                      settings.cache_ttl_seconds),
            idempotency=MongoIdempotencyStore(conns.db),
            messages=MongoMessageStore(conns.db),
            recent=RecentMessages(clock, settings.recent_ttl_seconds),
            publisher=KafkaPublisher(producer, settings.topic_prefix),
            clock=clock,
            rate_card=load_rate_card(settings.rate_card_version),
        )
        checks = {**conns.readiness_checks(), "kafka": producer.ready}
        app = create_app(checks, ingest)

        async def stop_producer(_: web.Application) -> None:
            await producer.stop()  # after the last request: what was accepted is flushed

        app.on_cleanup.append(stop_producer)
        return app, []

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
