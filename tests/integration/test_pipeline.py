"""The shared consumer pipeline (shared/pipeline.py) on the real broker: a poison record in a
batch goes to `<topic>.dlq`, the other records' effects happen, and every partition's offset is
committed past all of them."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from shared.kafka import (
    KafkaConfig,
    RetryPolicy,
    group_state,
    make_admin,
    make_consumer,
    make_producer,
)
from shared.pipeline import BatchPolicy, Item, Pipeline, group_by_key
from tests.integration.dlq_probe import check_dead_letter, until, wait_for_dead_letters
from tests.integration.fetch_probe import fetches_alive

PARTITIONS = 2


async def _create(kafka: KafkaConfig, *topics: tuple[str, int]) -> None:
    admin = make_admin(kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics]
        )
    finally:
        await admin.close()


async def test_a_poison_record_in_a_batch_is_dead_lettered_and_the_rest_are_handled_and_committed(
    kafka: KafkaConfig, unique: str
) -> None:
    topic, group = f"it.pipeline.{unique}", f"it-pipeline-{unique}"
    await _create(kafka, (topic, PARTITIONS), (f"{topic}.dlq", 1))
    producer = make_producer(kafka)
    await producer.start()
    consumer = make_consumer(kafka, group)
    handled: list[tuple[str, str]] = []
    batch_sizes: list[int] = []
    try:
        # 60 records over 6 keys; one key's 4th record is poison, and one is not even UTF-8
        sent: list[tuple[str, str]] = []
        for n in range(60):
            key, value = f"key{n % 6}", f"record-{n}"
            if n == 21:
                value = "poison"
            sent.append((key, value))
            await producer.send(topic, key=key.encode(), value=value.encode())
        await producer.send_and_wait(topic, key=b"key0", value=b"\xff\xfe")

        def decode(record: object) -> tuple[str, str]:
            return (record.key.decode(), record.value.decode())  # type: ignore[attr-defined]

        async def effect(items: Sequence[Item[tuple[str, str]]]) -> None:
            batch_sizes.append(len(items))
            if any(item.value[1] == "poison" for item in items):
                raise RuntimeError("a bug meeting a poison record")
            for group_items in group_by_key(items, lambda i: i.value[0]).values():
                handled.extend(i.value for i in group_items)

        pipeline = Pipeline(
            consumer,
            producer,
            decode=decode,
            effect=effect,
            service="it",
            policy=BatchPolicy(max_records=25, max_wait_s=0.05),
            retry=RetryPolicy(unexpected_first_delay=0.01),
        )
        consumer.subscribe([topic], listener=pipeline.listener)
        await consumer.start()
        task = asyncio.create_task(pipeline.run())

        def alive() -> None:
            if task.done():
                task.result()

        dead = await wait_for_dead_letters(kafka, f"{topic}.dlq", 2, alive=alive)
        by_value = {bytes(r.value): r for r in dead}
        poison = by_value[b"poison"]
        check_dead_letter(
            poison,
            source_topic=topic,
            source_offset=int(dict(poison.headers)["source_offset"]),
            service="it",
            error_type="RuntimeError",
            reason="unexpected",
            attempts=3,
        )
        assert dict(by_value[b"\xff\xfe"].headers)["error_type"] == b"UnicodeDecodeError"

        expected = [s for s in sent if s[1] != "poison"]
        await until(lambda: len(handled) >= len(expected), 30, "the other records", alive)
        assert sorted(handled) == sorted(expected)
        for key in {k for k, _ in expected}:  # each key's records in the order they were sent
            assert [v for k, v in handled if k == key] == [v for k, v in expected if k == key]
        assert max(batch_sizes) > 1, "records should have been handled in batches"

        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])

        async def all_committed() -> bool:
            return all([await consumer.committed(tp) == end for tp, end in ends.items()])

        await until(all_committed, 30, "the offsets past every record", alive)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_partition_held_back_leaves_no_half_read_fetch_to_the_garbage_collector(
    kafka: KafkaConfig, unique: str
) -> None:
    """Backpressure must not drop aiokafka's fetched records half-read (`consumer.pause`
    does): a half-read fetch is a reference cycle holding its whole buffer until a full
    collection (status's 100,000 campaign: 40 MB of them). The effect is slower than the
    fetches, so the partition is held back again and again; the cyclic collector is off
    meanwhile, so every such fetch would still be there to count (with `consumer.pause`: 11
    of them)."""
    topic, group, records = f"it.pipeline.held.{unique}", f"it-pipeline-held-{unique}", 2000
    await _create(kafka, (topic, 2))  # all in partition 0: held back, partition 1 still polled
    producer = make_producer(kafka)
    await producer.start()
    # small fetches (~70 records), polls of 20: a fetch is mostly half-read when held back
    consumer = make_consumer(kafka, group, max_partition_fetch_bytes=16 * 1024)
    handled: list[int] = []
    polled: list[tuple[TopicPartition, ...]] = []
    real_getmany = consumer.getmany

    async def getmany(*partitions: TopicPartition, **options: int) -> object:
        polled.append(partitions)
        return await real_getmany(*partitions, **options)

    consumer.getmany = getmany  # type: ignore[method-assign]

    async def effect(items: Sequence[Item[int]]) -> None:
        await asyncio.sleep(0.02)  # a write's round trip: slower than the fetches
        handled.extend(item.value for item in items)

    gc.collect()
    gc.disable()
    try:
        for n in range(records):
            await producer.send(topic, value=f"{n:0200d}".encode(), partition=0)
        await producer.flush()
        pipeline = Pipeline(
            consumer,
            producer,
            decode=lambda record: int(record.value),  # type: ignore[no-any-return]
            effect=effect,
            service="it",
            policy=BatchPolicy(max_records=20, pause_at=100, resume_at=25),
        )
        consumer.subscribe([topic], listener=pipeline.listener)
        await consumer.start()
        task = asyncio.create_task(pipeline.run())

        def alive() -> None:
            if task.done():
                task.result()

        await until(lambda: len(handled) == records, 60, "every record handled", alive=alive)
        # aiokafka keeps at most one fetch per partition; any other is garbage in a cycle
        fetches = fetches_alive()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        gc.enable()
        await consumer.stop()
        await producer.stop()
    assert handled == list(range(records))  # in offset order, none lost, none twice
    assert fetches <= 2, f"{fetches} fetches alive: half-read ones waiting for the collector"
    held = [p for p in polled if p != ()]
    assert held, "the partition was never held back: the effect did not fall behind"


async def test_a_pipeline_with_every_partition_held_back_stays_in_its_group(
    kafka: KafkaConfig, unique: str
) -> None:
    """A slow effect (notify's slow endpoints, a database outage being retried) can keep every
    partition held back for longer than max_poll_interval_ms (5 min; here 3 s). aiokafka makes
    a consumer that does not poll for that long leave its group, so the pipeline must go on
    polling (nothing) while it holds everything: no rebalance, and once the effect is quick
    again every record's effect happens once and every offset is committed."""
    topic, group = f"it.pipeline.allheld.{unique}", f"it-pipeline-allheld-{unique}"
    per_partition, interval_s = 30, 3.0
    await _create(kafka, (topic, PARTITIONS))
    producer = make_producer(kafka)
    await producer.start()
    consumer = make_consumer(kafka, group, max_poll_interval_ms=int(interval_s * 1000))
    quick_again = asyncio.Event()
    handled: list[tuple[int, int]] = []
    moves = 0

    async def effect(items: Sequence[Item[int]]) -> None:
        await quick_again.wait()  # the first batch's effect lasts as long as the test says
        handled.extend((item.record.partition, item.value) for item in items)

    def moved() -> None:
        nonlocal moves
        moves += 1

    try:
        for p in range(PARTITIONS):
            for n in range(per_partition):
                await producer.send(topic, value=str(n).encode(), partition=p)
        await producer.flush()
        pipeline = Pipeline(
            consumer,
            producer,
            decode=lambda record: int(record.value),  # type: ignore[no-any-return]
            effect=effect,
            service="it",
            policy=BatchPolicy(max_records=4, pause_at=8, resume_at=2),
            on_partitions_moved=moved,
        )
        consumer.subscribe([topic], listener=pipeline.listener)
        await consumer.start()
        task = asyncio.create_task(pipeline.run())

        def alive() -> None:
            if task.done():
                task.result()

        assigned = {TopicPartition(topic, p) for p in range(PARTITIONS)}
        await until(lambda: pipeline.held_back == assigned, 30, "every partition held", alive)
        moves_before = moves
        window_ends = time.monotonic() + 3 * interval_s
        while time.monotonic() < window_ends:
            alive()
            assert pipeline.held_back == assigned
            await asyncio.sleep(0.1)  # sampling the window, not waiting for a result
        state = await group_state(kafka, group)
        quick_again.set()

        await until(lambda: len(handled) >= PARTITIONS * per_partition, 30, "every record", alive)
        ends = await consumer.end_offsets(sorted(assigned))

        async def all_committed() -> bool:
            return all([await consumer.committed(tp) == end for tp, end in ends.items()])

        await until(all_committed, 30, "the offsets past every record", alive)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await consumer.stop()
        await producer.stop()
    twice = sorted(r for r in set(handled) if handled.count(r) > 1)
    # in its group while holding, no rebalance, and each record's effect once
    assert (state, moves - moves_before, twice) == (("Stable", 1), 0, [])
    assert sorted(set(handled)) == [(p, n) for p in range(PARTITIONS) for n in range(per_partition)]


async def test_fair_by_key_a_stop_commits_no_further_than_a_keys_unfinished_backlog(
    kafka: KafkaConfig, unique: str
) -> None:
    """Batches fair by key finish a partition's records out of offset order: a stop commits
    only the contiguous finished prefix, so the next owner reads every unfinished record again
    (and the later ones finished before it: effects are idempotent)."""
    topic, group = f"it.pipeline.fair.{unique}", f"it-pipeline-fair-{unique}"
    await _create(kafka, (topic, 1))
    tp = TopicPartition(topic, 0)
    producer = make_producer(kafka)
    await producer.start()
    for n in range(300):  # one key's backlog, then another key's record behind it
        await producer.send(topic, key=b"campaign", value=str(n).encode())
    await producer.send_and_wait(topic, key=b"other", value=b"300")
    policy = BatchPolicy(max_records=20, commit_interval_s=0.0, fair_by_key=True)

    def decode(record: object) -> int:
        return int(record.value)  # type: ignore[attr-defined]

    async def run(effect: Callable[[Sequence[Item[int]]], Awaitable[None]]) -> asyncio.Task[None]:
        consumer = make_consumer(kafka, group)
        pipeline = Pipeline(
            consumer, producer, decode=decode, effect=effect, service="it", policy=policy
        )
        consumer.subscribe([topic], listener=pipeline.listener)
        await consumer.start()

        async def until_stopped() -> None:
            try:
                await pipeline.run()
            finally:
                await consumer.stop()

        return asyncio.create_task(until_stopped())

    first: list[int] = []
    stuck = asyncio.Event()  # never set: the first owner stops with the backlog unfinished

    async def stalls_after_the_other_key(items: Sequence[Item[int]]) -> None:
        if 300 in first and len(first) >= 60:
            await stuck.wait()
        first.extend(i.value for i in items)

    task = await run(stalls_after_the_other_key)
    try:
        await until(lambda: 300 in first and len(first) >= 60, 30, "the other key's record")
        assert first.index(300) < 60  # not behind the 300 of the backlog
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    reader = make_consumer(kafka, group)
    await reader.start()
    try:
        committed = await reader.committed(tp)
    finally:
        await reader.stop()
    assert committed is not None and committed < 300
    assert set(range(committed)) <= set(first)  # nothing unfinished below the position

    second: list[int] = []

    async def handles(items: Sequence[Item[int]]) -> None:
        second.extend(i.value for i in items)

    task = await run(handles)
    try:
        await until(lambda: len(second) >= 301 - committed, 30, "the rest")
        assert min(second) == committed  # read again from the first unfinished record
        assert set(first) | set(second) == set(range(301))
        assert 300 in second  # finished before the stop, past the position: read again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
