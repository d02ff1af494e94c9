"""Composition root: settings -> logging -> connections -> app + workers -> serve until SIGTERM."""

import asyncio

from services.status.app import SERVICE, create_app
from services.status.handlers import WebhookConfig
from services.status.processor import WebhookProcessor
from services.status.publisher import KafkaPublisher
from services.status.repository import StatusRepository
from services.status.settings import StatusSettings
from services.status.state_writer import StateWriter
from services.status.sweeper import Sweeper, SweepPolicy
from services.status.workers import run_processor, run_state_writer, tunings
from shared.clock import SystemClock
from shared.collections import (
    CONVERSATIONS,
    INBOUND_MESSAGES,
    MESSAGES,
    NUMBER_STATES,
    PARKED_STATUSES,
    SUPPRESSIONS,
    USER_PREFERENCES,
    WAMID_INDEX,
    ensure_indexes,
)
from shared.logging import configure_logging, get_logger
from shared.memory import AllocatorTuning, trim_heap_forever, tune_allocator
from shared.runtime import Connections, Parts, serve
from shared.settings import load_settings

log = get_logger(__name__)

# Workers may wait longer for the broker than Meta waits for our answer.
WORKER_PUBLISH_TIMEOUT_SECONDS = 30.0


def allocator_tuning(settings: StatusSettings) -> AllocatorTuning:
    """glibc's options for status (services/status/README.md, "Memory in a backlog")."""
    return AllocatorTuning(
        mmap_threshold_bytes=settings.malloc_mmap_threshold_bytes,
        arena_max=settings.malloc_arena_max,
        trim_interval_s=settings.malloc_trim_interval_seconds,
    )


async def main() -> None:
    settings = load_settings(StatusSettings)
    configure_logging(SERVICE, settings.log_level)
    allocator = allocator_tuning(settings)
    log.info("allocator_tuned", **tune_allocator(allocator))
    clock = SystemClock()

    async def build(conns: Connections) -> Parts:
        await ensure_indexes(
            conns.db,
            MESSAGES,
            WAMID_INDEX,
            PARKED_STATUSES,
            CONVERSATIONS,
            INBOUND_MESSAGES,
            USER_PREFERENCES,
            NUMBER_STATES,
            SUPPRESSIONS,
        )
        prefix, kafka = settings.topic_prefix, settings.kafka
        repository = StatusRepository(conns.db)
        webhook_publisher = KafkaPublisher(conns.producer, prefix, settings.publish_timeout_seconds)
        worker_publisher = KafkaPublisher(conns.producer, prefix, WORKER_PUBLISH_TIMEOUT_SECONDS)
        app = create_app(
            WebhookConfig(
                app_secret=settings.app_secret.get_secret_value().encode(),
                verify_token=settings.verify_token.get_secret_value(),
                max_body_bytes=settings.max_webhook_bytes,
            ),
            webhook_publisher,
            clock,
        )
        processor = WebhookProcessor(repository, worker_publisher, clock)
        state_writer = StateWriter(repository, worker_publisher, clock)
        sweeper = Sweeper(
            repository,
            worker_publisher,
            clock,
            SweepPolicy(
                unknown_timeout_seconds=settings.unknown_timeout_seconds,
                parked_retention_days=settings.parked_retention_days,
                message_retention_days=settings.message_retention_days,
                batch_size=settings.sweep_batch_size,
                recipient_hash_key=settings.recipient_hash_key.get_secret_value().encode(),
            ),
        )
        processor_tuning, writer_tuning = tunings(settings)
        workers = [
            run_processor(kafka, prefix, processor, conns.producer, processor_tuning),
            run_state_writer(kafka, prefix, state_writer, conns.producer, writer_tuning),
            sweeper.run_forever(
                settings.sweep_interval_seconds, settings.sweep_messages_interval_seconds
            ),
        ]
        if allocator.trim_interval_s:
            workers.append(trim_heap_forever(allocator.trim_interval_s))
        return Parts(checks=conns.readiness_checks(), workers=workers, client_app=app)

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
