"""Composition root: settings -> logging -> connections -> the consumer and the recipient
sweeper -> serve (ops endpoints only) until SIGTERM."""

import asyncio
from functools import partial

from services.guard.repository import MongoGuardStore
from services.guard.settings import GuardSettings
from services.guard.worker import (
    SERVICE,
    Guard,
    KafkaHoldPublisher,
    run_consumer,
    sweep_forever,
)
from shared.clock import SystemClock
from shared.collections import ACCOUNT_HOLDS, GUARD_RECIPIENTS, GUARD_STATES, ensure_indexes
from shared.logging import configure_logging
from shared.pseudonyms import keyed_hash
from shared.runtime import Connections, Parts, serve
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(GuardSettings)
    configure_logging(SERVICE, settings.log_level)
    clock = SystemClock()

    async def build(conns: Connections) -> Parts:
        await ensure_indexes(conns.db, ACCOUNT_HOLDS, GUARD_STATES, GUARD_RECIPIENTS)
        store = MongoGuardStore(conns.db)
        guard = Guard(
            store,
            KafkaHoldPublisher(conns.producer, settings.topic_prefix),
            clock,
            settings.rules(),
            partial(keyed_hash, key=settings.recipient_hash_key_bytes()),
            prefix=settings.topic_prefix,
            overrides_cache_seconds=settings.overrides_cache_seconds,
        )
        workers = [
            run_consumer(
                settings.kafka,
                settings.topic_prefix,
                guard,
                conns.producer,
                settings.max_batch,
                settings.max_batch_wait_seconds,
                settings.consumer_options(),
            ),
            sweep_forever(
                store,
                clock,
                settings.recipient_memory_days,
                settings.sweep_page_size,
                settings.sweep_interval_seconds,
            ),
        ]
        return Parts(checks=conns.readiness_checks(), workers=workers)

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
