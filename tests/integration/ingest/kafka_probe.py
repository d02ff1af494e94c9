"""Read what a test published, without consumer groups: end offsets say how many records a topic
holds (no waiting needed once the producer was acknowledged), then read them back."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.kafka import KafkaConfig, topic_name
from shared.messages import Topic


def _partitions(topic: Topic[Any], prefix: str) -> list[TopicPartition]:
    name = topic_name(topic, prefix)
    return [TopicPartition(name, p) for p in range(topic.partitions)]


async def published_count(kafka: KafkaConfig, topic: Topic[Any], prefix: str) -> int:
    consumer = AIOKafkaConsumer(**kafka.aiokafka_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(_partitions(topic, prefix))
        return sum(ends.values())
    finally:
        await consumer.stop()


async def read_published(
    kafka: KafkaConfig, topic: Topic[Any], prefix: str, timeout: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record the topic holds now."""
    expected = await published_count(kafka, topic, prefix)
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(_partitions(topic, prefix))
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(records) < expected:
            assert time.monotonic() < deadline, f"read {len(records)} of {expected} records"
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
