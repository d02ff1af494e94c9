"""guard's consumer on the shared pipeline, on the real broker and database, as guard's own
principal: a burst of Meta failures holds the account once (the hold document written and
`accounts.hold-changed` published), an unreadable record goes to the dead-letter topic while
the rest of its batch is applied, and the offsets are committed after the effect."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from pymongo import AsyncMongoClient

from services.guard.core import Rule, Rules
from services.guard.repository import MongoGuardStore
from services.guard.settings import GuardSettings
from services.guard.worker import Guard, KafkaHoldPublisher, group, run_consumer
from shared import holds
from shared.clock import SystemClock
from shared.collections import ACCOUNT_HOLDS, GUARD_RECIPIENTS, GUARD_STATES, ensure_indexes
from shared.kafka import make_consumer, make_producer, publish_all, topic_name
from shared.messages import ACCOUNT_HOLD_CHANGED, STATUS_CHANGED, MetaError, StatusChanged
from shared.pseudonyms import keyed_hash
from tests.conftest import Broker
from tests.integration.dlq_probe import wait_for_dead_letters

ACC = "acc_g"
# guard's own fetch settings, as it runs (GuardSettings' defaults)
FETCH = {k: GuardSettings.model_fields[k].default for k in ("fetch_min_bytes", "fetch_max_wait_ms")}


def failed(i: int) -> StatusChanged:
    return StatusChanged(
        event_id=f"s{i}",
        message_id=f"m{i}",
        account_id=ACC,
        status="failed",
        occurred_at=int(time.time() * 1000),
        source="webhook",
        error=MetaError(code=131026),
    )


async def test_a_burst_of_failures_holds_once_and_a_bad_record_is_dead_lettered(
    broker: Broker, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix)
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, ACCOUNT_HOLDS, GUARD_STATES, GUARD_RECIPIENTS)
    producer = make_producer(broker.setup)
    guard_producer = make_producer(broker.as_service("guard"))
    await asyncio.gather(producer.start(), guard_producer.start())
    status_topic = topic_name(STATUS_CHANGED, prefix)
    guard = Guard(
        MongoGuardStore(db),
        KafkaHoldPublisher(guard_producer, prefix),
        SystemClock(),
        Rules(failure_rate=Rule(0.5, 900, 10)),
        partial(keyed_hash, key=b"k"),
        prefix=prefix,
    )
    task = asyncio.create_task(
        run_consumer(broker.as_service("guard"), prefix, guard, guard_producer, 100, 0.05, FETCH)
    )

    def alive() -> None:
        if task.done():
            task.result()

    try:
        await publish_all(producer, [(STATUS_CHANGED, failed(i)) for i in range(4)], prefix)
        # an unreadable record on the same partition, between the failures
        await producer.send_and_wait(status_topic, b"{not json", key=ACC.encode())
        await publish_all(producer, [(STATUS_CHANGED, failed(i)) for i in range(4, 12)], prefix)
        [dead] = await wait_for_dead_letters(
            broker.setup, topic_name(STATUS_CHANGED.dlq, prefix), 1, alive=alive
        )
        assert dead.value == b"{not json"
        deadline = time.monotonic() + 60
        while not holds.is_held(await db[ACCOUNT_HOLDS].find_one({"_id": ACC})):
            alive()
            assert time.monotonic() < deadline, "no hold"
            await asyncio.sleep(0.05)  # polling interval
        assert list(holds.active_holds(await db[ACCOUNT_HOLDS].find_one({"_id": ACC}))) == [
            "failure_rate"
        ]
        # every record finished (the dead letter too): the group's position is the end
        reader = make_consumer(broker.setup, None)
        await reader.start()
        try:
            tp = TopicPartition(status_topic, _source_partition(dead.headers))
            end = (await reader.end_offsets([tp]))[tp]
        finally:
            await reader.stop()
        committed = make_consumer(broker.as_service("guard"), group(prefix))
        await committed.start()
        try:
            while (await committed.committed(tp)) != end:
                alive()
                assert time.monotonic() < deadline, "offsets not committed"
                await asyncio.sleep(0.05)  # polling interval
        finally:
            await committed.stop()
        hold_events = await wait_for_hold_events(broker, prefix)
        assert [(e.held, e.rule) for e in hold_events] == [(True, "failure_rate")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(producer.stop(), guard_producer.stop())
        await mongo.drop_database(db.name)


def _source_partition(headers: Any) -> int:
    return int(dict(headers)["source_partition"])


async def wait_for_hold_events(broker: Broker, prefix: str) -> list[Any]:
    topic = topic_name(ACCOUNT_HOLD_CHANGED, prefix)
    reader = make_consumer(broker.setup, None)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ACCOUNT_HOLD_CHANGED.partitions)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        found: list[Any] = []
        deadline = time.monotonic() + 30
        while not found:
            assert time.monotonic() < deadline, "no hold-changed event"
            for part in (await reader.getmany(timeout_ms=200)).values():
                found.extend(ACCOUNT_HOLD_CHANGED.decode_record(r.value) for r in part)
        return found
    finally:
        await reader.stop()
