"""status's consumers take their batch, backpressure and fetch sizes from StatusSettings: the
processor, whose records are webhook POSTs of up to 20 statuses each, holds at most
`STATUS_PROCESSOR_MAX_RECORDS` of them per batch and pauses a partition once
`STATUS_PROCESSOR_PAUSE_AT` wait, so its memory is bounded whatever the backlog."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from aiokafka import TopicPartition as TP

from services.status.settings import StatusSettings
from services.status.workers import BATCHES, tunings
from shared.pipeline import Batcher, Item, pause_changes

WEBHOOKS = TP("webhooks.received.v1", 0)


def _webhook_item(offset: int) -> Item[bytes]:
    value = b"x" * 8_000  # a POST of 20 statuses
    record = ConsumerRecord(WEBHOOKS.topic, 0, offset, 0, 0, b"waba", value, None, 4, 8_000, [])
    return Item(record, value)


def test_a_processor_batch_and_its_waiting_records_are_bounded_by_the_settings() -> None:
    processor, writer = tunings(StatusSettings())
    policy = processor.policy
    assert (policy.max_records, policy.pause_at, policy.resume_at) == (100, 200, 50)
    # send requests and status events (~1 KB each), taken fair by account (their key)
    assert writer.policy.max_records == BATCHES.max_records and writer.policy.fair_by_key
    assert (writer.policy.pause_at, writer.policy.resume_at) == (4_000, 3_000)
    assert not policy.fair_by_key
    buffer: Batcher[bytes] = Batcher(policy)
    buffer.add((_webhook_item(offset) for offset in range(1_000)), now=0.0)
    assert len(buffer.take(now=0.0)) == 100
    # 900 still waiting: the partition is paused until it is down to 50
    to_pause, _ = pause_changes(buffer.waiting(), set(), {WEBHOOKS}, policy)
    assert to_pause == {WEBHOOKS}
    while len(buffer) > 50:
        buffer.take(now=0.0)
        _, to_resume = pause_changes(buffer.waiting(), {WEBHOOKS}, {WEBHOOKS}, policy)
        assert to_resume == (set() if len(buffer) > 50 else {WEBHOOKS})
    # a poll brings no more than a batch
    assert processor.consumer_options()["max_poll_records"] == 100


def test_the_fetch_and_batch_sizes_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATUS_PROCESSOR_MAX_RECORDS", "40")
    monkeypatch.setenv("STATUS_PROCESSOR_PAUSE_AT", "80")
    monkeypatch.setenv("STATUS_STATE_WRITER_PAUSE_AT", "2000")
    monkeypatch.setenv("STATUS_FETCH_MAX_WAIT_MS", "100")
    monkeypatch.setenv("STATUS_MAX_PARTITION_FETCH_BYTES", "262144")
    processor, writer = tunings(StatusSettings())
    assert (processor.policy.max_records, processor.policy.pause_at) == (40, 80)
    assert (writer.policy.pause_at, writer.policy.resume_at) == (2000, 1500)
    for tuning in (processor, writer):
        options = tuning.consumer_options()
        assert options["fetch_max_wait_ms"] == 100
        assert options["max_partition_fetch_bytes"] == 262_144
