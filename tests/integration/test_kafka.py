"""The real broker: manual commits, resuming from the committed offset, compacted topics, and
the topics' configuration as the set-up step makes it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import (
    KafkaConfig,
    make_admin,
    make_consumer,
    make_producer,
    report_lag_forever,
)
from shared.messages import SEND_REQUESTED, THROUGHPUT_CHANGED, WEBHOOK_RECEIVED
from shared.metrics import CONSUMER_LAG
from tools.kafka_setup import grant


async def _create(kafka: KafkaConfig, name: str, partitions: int = 1, **config: str) -> None:
    admin = make_admin(kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config)]
        )
    finally:
        await admin.close()


async def _read(consumer, count: int, wait_s: float = 20.0) -> list:  # type: ignore[no-untyped-def]
    records: list = []

    async def fill() -> None:
        async for record in consumer:
            records.append(record)
            if len(records) == count:
                return

    await asyncio.wait_for(fill(), wait_s)
    return records


async def test_a_restarted_consumer_resumes_after_the_last_committed_offset(
    kafka: KafkaConfig, unique: str
) -> None:
    topic, group = f"it.commit.{unique}", f"it-group-{unique}"
    await _create(kafka, topic)
    producer = make_producer(kafka)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, value=f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    first = make_consumer(kafka, group, topic)
    await first.start()
    try:
        records = await _read(first, 4)
        # Commit after handling the 4th record only: the next member must start at offset 4.
        await first.commit({TopicPartition(topic, 0): records[-1].offset + 1})
    finally:
        await first.stop()

    second = make_consumer(kafka, group, topic)
    await second.start()
    try:
        rest = await _read(second, 6)
    finally:
        await second.stop()
    assert [r.value for r in records] == [b"m0", b"m1", b"m2", b"m3"]
    assert [r.value for r in rest] == [f"m{i}".encode() for i in range(4, 10)]


async def test_uncommitted_records_are_delivered_again_after_a_restart(
    kafka: KafkaConfig, unique: str
) -> None:
    topic, group = f"it.redeliver.{unique}", f"it-group-{unique}"
    await _create(kafka, topic)
    producer = make_producer(kafka)
    await producer.start()
    await producer.send_and_wait(topic, value=b"only", key=b"k")
    await producer.stop()

    for _ in range(2):  # read twice without committing: it must come back
        consumer = make_consumer(kafka, group, topic)
        await consumer.start()
        try:
            assert [r.value for r in await _read(consumer, 1)] == [b"only"]
        finally:
            await consumer.stop()


async def _read_all(kafka: KafkaConfig, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record currently in partition 0, read from the beginning without a group."""
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        seen: list[tuple[bytes, bytes]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            seen += [(r.key, r.value) for r in batch.get(tp, [])]
        return seen
    finally:
        await consumer.stop()


async def test_a_compacted_topic_keeps_only_the_latest_value_per_key(
    kafka: KafkaConfig, unique: str
) -> None:
    topic = f"it.compacted.{unique}"
    # Tiny segments and no dirty-ratio floor so the log cleaner compacts within the test.
    await _create(
        kafka,
        topic,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.001",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "100",
        },
    )
    admin = make_admin(kafka)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
        )
        configs = {entry[0]: entry[1] for r in described for res in r.resources for entry in res[4]}
        assert configs["cleanup.policy"] == "compact"
    finally:
        await admin.close()

    producer = make_producer(kafka)
    await producer.start()
    try:
        for level in (20, 80, 1000):
            await producer.send_and_wait(topic, value=str(level).encode(), key=b"number-1")
        await producer.send_and_wait(topic, value=b"80", key=b"number-2")
        # Only closed segments are compacted: keep writing so segments roll, until the
        # cleaner has removed the superseded values (it wakes every few seconds).
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            await asyncio.sleep(0.2)
            await producer.send_and_wait(topic, value=b"tick", key=b"roller")
            values = [v for k, v in await _read_all(kafka, topic) if k == b"number-1"]
            if values == [b"1000"]:
                break
            assert asyncio.get_running_loop().time() < deadline, f"not compacted: {values}"
    finally:
        await producer.stop()
    latest = {k: v for k, v in await _read_all(kafka, topic)}
    assert latest[b"number-1"] == b"1000" and latest[b"number-2"] == b"80"


async def test_the_idempotent_producer_writes_with_acks_all(
    kafka: KafkaConfig, unique: str
) -> None:
    topic = f"it.idem.{unique}"
    await _create(kafka, topic, partitions=3)
    producer = make_producer(kafka)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value=b"x", key=b"acc-1")
        again = await producer.send_and_wait(topic, value=b"y", key=b"acc-1")
        # The broker granted a producer id (InitProducerId): writes carry sequence numbers,
        # so the producer's own retries can't duplicate them.
        assert producer._txn_manager is not None and producer._txn_manager.has_pid()
    finally:
        await producer.stop()
    # Same key, same partition, consecutive offsets: ordering per key holds.
    assert metadata.partition == again.partition
    assert again.offset == metadata.offset + 1


async def _configs(kafka: KafkaConfig, names: list[str]) -> dict[str, dict[str, str]]:
    admin = make_admin(kafka)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, None) for n in names]
        )
    finally:
        await admin.close()
    return {name: {e[0]: e[1] for e in entries} for _, _, _, name, entries in described.resources}


async def test_the_set_up_sets_each_topics_retention_and_fixes_topics_that_exist(
    kafka: KafkaConfig, unique: str
) -> None:
    """The set-up step (tools/kafka_setup.py grant, through ensure_topics) gives created topics
    the registry's retention.ms and max.message.bytes (raw content short, dead letters long,
    compacted ones without), and brings a topic that already existed with the broker's
    defaults to them."""
    prefix = f"t{unique}."
    # Made before the set-up, as an older version of the platform did: broker defaults.
    await _create(kafka, prefix + WEBHOOK_RECEIVED.name, partitions=6)
    topics = [WEBHOOK_RECEIVED, SEND_REQUESTED, THROUGHPUT_CHANGED]
    await grant(kafka, prefix, topics)
    await grant(kafka, prefix, topics)  # idempotent
    names = [prefix + n for t in topics for n in (t.name, t.dlq)]
    configs = await _configs(kafka, names)
    week, month = str(7 * 86_400_000), str(30 * 86_400_000)
    webhooks = configs[prefix + WEBHOOK_RECEIVED.name]
    assert (webhooks["retention.ms"], webhooks["max.message.bytes"]) == (week, str(4 * 1024 * 1024))
    assert configs[prefix + SEND_REQUESTED.name]["retention.ms"] == week
    assert configs[prefix + WEBHOOK_RECEIVED.dlq]["retention.ms"] == month
    assert configs[prefix + SEND_REQUESTED.dlq]["retention.ms"] == month
    assert configs[prefix + THROUGHPUT_CHANGED.name]["cleanup.policy"] == "compact"


async def test_the_lag_gauge_is_the_partition_end_minus_what_the_consumer_has_read(
    kafka: KafkaConfig, unique: str
) -> None:
    """Measured from the consumer's own fetch answers and position: no broker request."""
    topic, group = f"it.lag.{unique}", f"it-group-{unique}"
    await _create(kafka, topic)
    producer = make_producer(kafka)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, value=f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(kafka, group, topic, max_poll_records=4)
    await consumer.start()
    reporter = asyncio.create_task(report_lag_forever(consumer, "it", group, interval=0.05))
    gauge = CONSUMER_LAG.labels(service="it", group=group, topic=topic, partition="0")
    try:
        records: list = []
        async with asyncio.timeout(20):
            while len(records) < 4:
                batches = await consumer.getmany(timeout_ms=200, max_records=4 - len(records))
                records += [r for part in batches.values() for r in part]
            for _ in range(200):  # the reporter runs every 0.05 s
                if gauge._value.get() == 6:
                    break
                await asyncio.sleep(0.05)
    finally:
        reporter.cancel()
        await consumer.stop()
    assert gauge._value.get() == 6  # 10 written, 4 read
