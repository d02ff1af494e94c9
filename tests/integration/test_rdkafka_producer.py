"""The librdkafka producer ingest publishes with, on the real broker: a send returns once the
record is stored (key and value as given, in order per key), concurrent sends each learn their
own outcome, and no broker is a transient failure, not a hang."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer

from shared.errors import DependencyUnavailable
from shared.kafka import KafkaConfig, make_producer
from shared.rdkafka_producer import RdKafkaProducer
from tests.integration.test_kafka import _create, _read


async def _read_all(kafka: KafkaConfig, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        return [(r.key, r.value) for r in await _read(consumer, count)]
    finally:
        await consumer.stop()


async def test_acknowledged_sends_are_stored_in_order_per_key(
    kafka: KafkaConfig, unique: str
) -> None:
    topic = f"it.rdkafka.{unique}"
    await _create(kafka, topic, partitions=3)
    producer = RdKafkaProducer(kafka)
    await producer.start()
    try:
        await asyncio.gather(
            *(producer.send(topic, f"k{i % 4}".encode(), f"v{i}".encode()) for i in range(200))
        )
    finally:
        await producer.stop()
    stored = await _read_all(kafka, topic, 200)
    assert len(stored) == 200
    for key in (b"k0", b"k1", b"k2", b"k3"):
        values = [int(v[1:]) for k, v in stored if k == key]
        assert values == sorted(values) and len(values) == 50


async def test_a_key_lands_on_the_partition_aiokafka_picks_for_it(
    kafka: KafkaConfig, unique: str
) -> None:
    """ingest writes send-requested with librdkafka, the others write with aiokafka: one
    account's records must share a partition number across topics (billing owns an account)."""
    topic = f"it.rdkafka.parts.{unique}"
    await _create(kafka, topic, partitions=6)
    keys = [f"acc_{i}".encode() for i in range(24)]
    producer = RdKafkaProducer(kafka)
    await producer.start()
    try:
        for key in keys:
            await producer.send(topic, key, b"rd")
    finally:
        await producer.stop()
    reference = make_producer(kafka)
    await reference.start()
    try:
        for key in keys:
            await reference.send_and_wait(topic, b"aio", key=key)
    finally:
        await reference.stop()
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        records = await _read(consumer, 2 * len(keys))
    finally:
        await consumer.stop()
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert len(partitions) == len(keys)
    assert all(len(parts) == 1 for parts in partitions.values()), partitions
    assert len(set().union(*partitions.values())) > 1  # the keys really spread


async def test_without_a_broker_start_and_send_fail_as_transient(kafka: KafkaConfig) -> None:
    producer = RdKafkaProducer(
        replace(kafka, bootstrap_servers="127.0.0.1:1"), delivery_timeout_ms=1000
    )
    with pytest.raises(DependencyUnavailable):
        await producer.start(deadline_s=1.0)
    with pytest.raises(DependencyUnavailable):
        await asyncio.wait_for(producer.send("it.nowhere", b"k", b"v"), 10)
    await producer.stop()
