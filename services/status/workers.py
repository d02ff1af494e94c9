"""status's two Kafka workers as coroutines for `serve()`: each owns its consumer from start to
stop and runs the shared batched pipeline (shared/pipeline.py: decode, batch, the batch's
effect, commit after it; a record that can never succeed, or whose handling keeps raising, goes
to the DLQ and the partition moves on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from services.status.processor import WebhookProcessor
from services.status.processor import decode as decode_webhook
from services.status.settings import StatusSettings
from services.status.state_writer import StateWriter
from services.status.state_writer import decode as decode_state_event
from shared.kafka import KafkaConfig, make_consumer, report_lag_forever, topic_name
from shared.messages import (
    SEND_REQUESTED,
    STATUS_CHANGED,
    SUPPRESSION_CHANGE_REQUESTED,
    WEBHOOK_RECEIVED,
    Topic,
)
from shared.pipeline import BatchPolicy, Effect, Pipeline

T = TypeVar("T")

SERVICE = "status"


def processor_group(prefix: str) -> str:
    return f"{prefix}status-processor"


def state_writer_group(prefix: str) -> str:
    return f"{prefix}status-state"


Record = ConsumerRecord[bytes, bytes]

# Batches as large as a poll brings (no waiting: an idle pipeline adds no latency, a busy one
# batches what arrived while the previous batch was written).
BATCHES = BatchPolicy(max_records=500, max_wait_s=0.0)
_SETTING_DEFAULTS = StatusSettings.model_fields


@dataclass(frozen=True)
class ConsumerTuning:
    """A status consumer's batches, backpressure and fetches (from StatusSettings; the shared
    make_consumer's fetch settings are other services' too)."""

    policy: BatchPolicy = BATCHES
    # StatusSettings' defaults, read from its fields so that the two cannot drift apart.
    fetch_max_wait_ms: int = _SETTING_DEFAULTS["fetch_max_wait_ms"].default
    max_partition_fetch_bytes: int = _SETTING_DEFAULTS["max_partition_fetch_bytes"].default

    def consumer_options(self) -> dict[str, int]:
        return {
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "max_poll_records": self.policy.max_records,
        }


DEFAULT_TUNING = ConsumerTuning()


def state_writer_policy(pause_at: int) -> BatchPolicy:
    """Both of the state writer's topics are keyed by account: batches fair by key are fair by
    tenant, and the read-ahead (`pause_at`) is how far behind a campaign's backlog on its
    partition another tenant's record is still found and written in the next batch."""
    return replace(BATCHES, fair_by_key=True, pause_at=pause_at, resume_at=pause_at * 3 // 4)


STATE_WRITER_TUNING = ConsumerTuning(
    state_writer_policy(_SETTING_DEFAULTS["state_writer_pause_at"].default)
)


def tunings(settings: StatusSettings) -> tuple[ConsumerTuning, ConsumerTuning]:
    """(the processor's, the state writer's). The processor's records are webhook POSTs of up
    to Meta's batch of statuses each (~8 KB for 20): its batches and the records waiting per
    partition are counted in them, so both are smaller than the state writer's (a batch of 500
    POSTs was 10,000 statuses and ~17 MB while it was handled; 1,000 waiting per partition,
    ~12 MB)."""
    fetch_wait, fetch_bytes = settings.fetch_max_wait_ms, settings.max_partition_fetch_bytes
    processor = replace(
        BATCHES,
        max_records=settings.processor_max_records,
        pause_at=settings.processor_pause_at,
        resume_at=settings.processor_pause_at // 4,
    )
    return (
        ConsumerTuning(processor, fetch_wait, fetch_bytes),
        ConsumerTuning(
            state_writer_policy(settings.state_writer_pause_at), fetch_wait, fetch_bytes
        ),
    )


async def run_consumer(
    kafka: KafkaConfig,
    prefix: str,
    group: str,
    topics: Sequence[Topic[Any]],
    decode: Callable[[Record], T],
    effect: Effect[T],
    producer: AIOKafkaProducer,
    on_partitions_moved: Callable[[], None] | None = None,
    tuning: ConsumerTuning = DEFAULT_TUNING,
) -> None:
    # The range assignor gives every process the same partition numbers of each topic: topics
    # keyed alike (by account, by WABA) then reach the same process, which stays their
    # accounts' only writer; each partition's records reach the effect in offset order.
    consumer = make_consumer(
        kafka,
        group,
        partition_assignment_strategy=(RangePartitionAssignor,),
        **tuning.consumer_options(),
    )
    pipeline = Pipeline(
        consumer,
        producer,
        decode=decode,
        effect=effect,
        service=SERVICE,
        policy=tuning.policy,
        on_partitions_moved=on_partitions_moved,
    )
    consumer.subscribe([topic_name(topic, prefix) for topic in topics], listener=pipeline.listener)
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group))
    try:
        await pipeline.run()
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()


async def run_processor(
    kafka: KafkaConfig,
    prefix: str,
    processor: WebhookProcessor,
    producer: AIOKafkaProducer,
    tuning: ConsumerTuning = DEFAULT_TUNING,
) -> None:
    """Webhooks of one WABA in order: they may touch the same conversations, templates and
    suppressions (the suppression change requests are keyed by WABA too, and the range
    assignor gives one process the same partitions of both topics)."""
    await run_consumer(
        kafka,
        prefix,
        processor_group(prefix),
        (WEBHOOK_RECEIVED, SUPPRESSION_CHANGE_REQUESTED),
        decode_webhook,
        processor.handle_batch,
        producer,
        tuning=tuning,
    )


async def run_state_writer(
    kafka: KafkaConfig,
    prefix: str,
    writer: StateWriter,
    producer: AIOKafkaProducer,
    tuning: ConsumerTuning = STATE_WRITER_TUNING,
) -> None:
    """A message's request and events in order, its account's records in one process; each
    batch taken fair by account (`state_writer_policy`)."""
    await run_consumer(
        kafka,
        prefix,
        state_writer_group(prefix),
        (SEND_REQUESTED, STATUS_CHANGED),
        decode_state_event,
        writer.handle_batch,
        producer,
        writer.forget_all,
        tuning,
    )
