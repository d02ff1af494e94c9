"""status's two Kafka workers as coroutines for `serve()`: each owns its consumer from start to
stop and runs the shared loop (commit after the effect; a record that can never succeed, or
whose handling keeps raising, goes to the DLQ and the partition moves on: shared/kafka.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from shared.kafka import (
    Handler,
    KafkaConfig,
    consume_concurrently,
    make_consumer,
    report_lag_forever,
    topic_name,
)
from shared.messages import (
    SEND_REQUESTED,
    STATUS_CHANGED,
    SUPPRESSION_CHANGE_REQUESTED,
    WEBHOOK_RECEIVED,
    Topic,
)

SERVICE = "status"


def processor_group(prefix: str) -> str:
    return f"{prefix}status-processor"


def state_writer_group(prefix: str) -> str:
    return f"{prefix}status-state"


Record = ConsumerRecord[bytes, bytes]


def by_kafka_key(record: Record) -> object:
    """Webhooks of one WABA in order: they may touch the same conversations, templates and
    suppressions (the suppression change requests are keyed by WABA too, and the range
    assignor gives one process the same partitions of both topics)."""
    return record.key


def by_message(record: Record) -> object:
    """A message's request and events in order; different messages' documents are written
    concurrently."""
    try:
        return _MESSAGE_ID.decode(record.value).message_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return record.key  # dead-lettered by the handler anyway


class _MessageId(msgspec.Struct):
    """What both of the state writer's topics carry (the rest is decoded by the handler)."""

    message_id: str


_MESSAGE_ID = msgspec.json.Decoder(_MessageId)


class _OnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, moved: Callable[[], None]) -> None:
        self._moved = moved

    def on_partitions_revoked(self, revoked: object) -> None:
        self._moved()

    def on_partitions_assigned(self, assigned: object) -> None:
        self._moved()


async def run_consumer(
    kafka: KafkaConfig,
    prefix: str,
    group: str,
    topics: tuple[Topic[Any], ...],
    handle: Handler,
    producer: AIOKafkaProducer,
    key_of: Callable[[Record], object],
    on_rebalance: Callable[[], None] | None = None,
) -> None:
    # The range assignor gives every process the same partition numbers of each topic: topics
    # keyed alike (by account) then reach the same process, which stays their accounts' only
    # writer.
    consumer = make_consumer(kafka, group, partition_assignment_strategy=(RangePartitionAssignor,))
    consumer.subscribe(
        [topic_name(topic, prefix) for topic in topics],
        listener=_OnRebalance(on_rebalance or (lambda: None)),
    )
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group))
    try:
        await consume_concurrently(consumer, producer, handle, service=SERVICE, key_of=key_of)
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()


async def run_processor(
    kafka: KafkaConfig, prefix: str, handle: Handler, producer: AIOKafkaProducer
) -> None:
    await run_consumer(
        kafka,
        prefix,
        processor_group(prefix),
        (WEBHOOK_RECEIVED, SUPPRESSION_CHANGE_REQUESTED),
        handle,
        producer,
        by_kafka_key,
    )


async def run_state_writer(
    kafka: KafkaConfig,
    prefix: str,
    handle: Handler,
    producer: AIOKafkaProducer,
    on_rebalance: Callable[[], None],
) -> None:
    await run_consumer(
        kafka,
        prefix,
        state_writer_group(prefix),
        (SEND_REQUESTED, STATUS_CHANGED),
        handle,
        producer,
        by_message,
        on_rebalance,
    )
