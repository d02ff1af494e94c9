"""The sender's backpressure on the real broker: a partition that is behind is held back again
and again without leaving aiokafka's fetched records half-read for the garbage collector."""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from services.sender import consumer as sender_consumer
from services.sender import worker as sender_worker
from shared.collections import PHONE_NUMBERS
from shared.kafka import KafkaConfig, make_consumer, topic_name
from shared.messages import SEND_APPROVED, ThroughputChanged
from tests.integration.dlq_probe import until
from tests.integration.fetch_probe import fetches_alive
from tests.integration.sender.conftest import A1_NUMBER, WABA_A1, Rig

MESSAGES = 1000


async def test_a_partition_held_back_leaves_no_half_read_fetch_to_the_garbage_collector(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka drops a paused partition's fetched records half-read, and a half-read fetch is
    a reference cycle holding its whole buffer until a full collection (shared/pipeline.py's
    docstring). Small fetches (~50 records) read 20 at a time, one number at 80 mps and a
    partition behind at 20 ready messages: its partition is held back again and again. The
    cyclic collector is off meanwhile, so every fetch dropped half-read is still there to
    count at the end."""
    topic = topic_name(SEND_APPROVED, rig.prefix)
    polls_held_back: list[bool] = []

    def small_fetches(kafka: KafkaConfig, group: str | None, **options: Any) -> AIOKafkaConsumer:
        consumer = make_consumer(
            kafka, group, **{**options, "max_partition_fetch_bytes": 32 * 1024}
        )
        real_getmany = consumer.getmany

        async def getmany(*partitions: TopicPartition, **kwargs: Any) -> Any:
            held = REGISTRY.get_sample_value("sender_partitions_paused") or 0
            polls_held_back.append(held > 0)
            return await real_getmany(*partitions, **kwargs)

        consumer.getmany = getmany  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(sender_consumer, "make_consumer", small_fetches)
    monkeypatch.setattr(
        sender_worker,
        "WorkerConfig",
        functools.partial(sender_worker.WorkerConfig, poll_records=20),
    )
    events = [rig.event(A1_NUMBER) for _ in range(MESSAGES)]
    await rig.produce(*events)

    gc.collect()
    gc.disable()
    try:
        sender = await rig.start_sender(backlog_floor=20, backlog_seconds=0.1)

        def alive() -> None:
            assert not sender.task.done(), sender.task

        await until(
            lambda: len(rig.statuses.with_status("sent")) == MESSAGES,
            90,
            "every message sent",
            alive=alive,
        )
        fetches = fetches_alive(topic)
    finally:
        gc.enable()
    sent = rig.statuses.with_status("sent")
    assert set(sent) == {e.message_id for e in events}
    sends = await rig.sim_sends(A1_NUMBER)
    assert len(sends) == MESSAGES  # none twice
    times_held_back = sum(1 for was, now in itertools.pairwise(polls_held_back) if now > was)
    assert times_held_back >= 5, f"held back {times_held_back} times: not behind enough"
    assert fetches <= SEND_APPROVED.partitions, f"{fetches} fetches alive: half-read ones"


async def test_a_sender_with_every_partition_held_back_stays_in_its_group_and_takes_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One number at 1 mps with messages in all six partitions: every partition is behind for
    many seconds. The loop then polls no partition (consumer.NO_PARTITION) rather than not at
    all: aiokafka leaves the group of a consumer that does not poll for max_poll_interval_ms
    (here 3 s), and a partition may be held back for much longer (a held number or account).
    Meanwhile no record is taken; raised to 80 mps, the number sends every message once."""
    topic = topic_name(SEND_APPROVED, rig.prefix)
    partitions = [TopicPartition(topic, p) for p in range(SEND_APPROVED.partitions)]

    def quick_to_leave(kafka: KafkaConfig, group: str | None, **options: Any) -> AIOKafkaConsumer:
        return make_consumer(kafka, group, **{**options, "max_poll_interval_ms": 3000})

    monkeypatch.setattr(sender_consumer, "make_consumer", quick_to_leave)
    monkeypatch.setattr(
        sender_worker,
        "WorkerConfig",
        functools.partial(sender_worker.WorkerConfig, poll_records=20),
    )
    await rig.db[PHONE_NUMBERS].update_one({"_id": A1_NUMBER}, {"$set": {"throughput_mps": 1}})
    events = [rig.event(A1_NUMBER) for _ in range(50 * len(partitions))]
    for n, event in enumerate(events):  # the number's messages in every partition
        key, value = SEND_APPROVED.encode(event)
        await rig.producer.send(topic, value=value, key=key, partition=n % len(partitions))
    await rig.producer.flush()
    sender = await rig.start_sender(backlog_floor=10)
    worker = sender.worker

    def alive() -> None:
        assert not sender.task.done(), sender.task

    await until(lambda: worker.held_back == set(partitions), 30, "all held back", alive=alive)
    revoked: list[set[TopicPartition]] = []
    real_revoked = worker.partitions_revoked

    async def count_revoked(partitions: set[TopicPartition]) -> None:
        revoked.append(partitions)
        await real_revoked(partitions)

    worker.partitions_revoked = count_revoked  # type: ignore[method-assign]
    positions = [await worker.consumer.position(tp) for tp in partitions]
    window_ends = time.monotonic() + 3 * 3.0  # three times max_poll_interval_ms
    while time.monotonic() < window_ends:
        alive()
        assert worker.held_back == set(partitions)
        await asyncio.sleep(0.1)  # sampling the window, not waiting for a result
    assert revoked == []  # still in the group: no rebalance
    assert [await worker.consumer.position(tp) for tp in partitions] == positions  # none taken

    await rig.publish_throughput(
        ThroughputChanged(
            event_id=f"{A1_NUMBER}:THROUGHPUT_UPGRADE:1",
            phone_number_id=A1_NUMBER,
            waba_id=WABA_A1,
            messages_per_second=80,
            messaging_limit="TIER_UNLIMITED",
            occurred_at=time.time_ns() // 1_000_000,
        )
    )
    await until(
        lambda: len(rig.statuses.with_status("sent")) == len(events),
        60,
        "every message sent",
        alive=alive,
    )
    sends = await rig.sim_sends(A1_NUMBER)
    assert sorted(s["biz_opaque_callback_data"] for s in sends) == sorted(
        e.message_id for e in events
    )  # each once
    assert revoked == []
