"""Reading a dead-letter topic in integration tests: poll (with a deadline) until it holds the
expected records, then check the headers every dead letter carries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from shared.kafka import KafkaConfig, make_consumer

DLQ_PARTITIONS = 1  # ensure_topics creates every dead-letter topic with one partition


async def wait_for_dead_letters(
    kafka: KafkaConfig,
    dlq_topic: str,
    count: int,
    *,
    timeout: float = 60.0,
    alive: Callable[[], None] = lambda: None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first `count` records of `dlq_topic`, once it holds them; `alive` raises if the
    consumer under test died meanwhile."""
    consumer = make_consumer(kafka, None)
    await consumer.start()
    partitions = [TopicPartition(dlq_topic, p) for p in range(DLQ_PARTITIONS)]
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while len(records) < count:
            alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{dlq_topic}: {len(records)} dead letters, not {count}")
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records[:count]
    finally:
        await consumer.stop()


def check_dead_letter(
    record: ConsumerRecord[bytes, bytes],
    *,
    source_topic: str,
    source_offset: int,
    service: str,
    error_type: str,
    reason: str,
    attempts: int,
) -> dict[str, bytes]:
    """Assert the headers of a dead letter and return them all."""
    headers = dict(record.headers)
    assert headers["source_topic"] == source_topic.encode()
    assert headers["source_offset"] == str(source_offset).encode()
    assert headers["source_partition"].isdigit()
    assert headers["service"] == service.encode()
    assert headers["error_type"] == error_type.encode()
    assert headers["error_reason"] == reason.encode()
    assert headers["attempts"] == str(attempts).encode()
    assert headers["error_traceback"].startswith(b"Traceback (most recent call last)")
    assert int(headers["dead_lettered_at"]) > 1_700_000_000_000
    return headers


async def until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Poll a synchronous or awaitable condition until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)  # polling interval, not a wait for the result
