"""`hala dlq list|show|replay` on the real broker and database: a dead letter written by the
consumers' own path is listed, shown with why it failed, replayed once to its source partition
with its original headers, and refused the second time. The commands run as the admin CLI's
principal (hala-admin), whose ACLs are all they get."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands
from shared.collections import DLQ_REPLAYS
from shared.kafka import KafkaConfig, make_producer, send_to_dlq, topic_name
from shared.messages import WEBHOOK_RECEIVED
from tests.conftest import Broker

SOURCE_PARTITION = 1


@pytest.fixture
async def producer(kafka: KafkaConfig) -> AsyncIterator[AIOKafkaProducer]:
    """The test's own (set-up principal): it plays the status service dead-lettering."""
    writer = make_producer(kafka)
    await writer.start()
    yield writer
    await writer.stop()


@pytest.fixture
def admin(broker: Broker) -> KafkaConfig:
    return broker.as_service("admin")


@pytest.fixture
async def admin_producer(admin: KafkaConfig) -> AsyncIterator[AIOKafkaProducer]:
    writer = make_producer(admin)
    await writer.start()
    yield writer
    await writer.stop()


async def _dead_letter(
    kafka: KafkaConfig, producer: AIOKafkaProducer, prefix: str, value: bytes, times: int = 1
) -> ConsumerRecord[bytes, bytes]:
    """A webhook record on its topic, dead-lettered (`times` times, as after a stop before its
    commit) by the consumers' own function."""
    source = topic_name(WEBHOOK_RECEIVED, prefix)
    await producer.send_and_wait(
        source,
        value=value,
        key=b"102290129340398",
        headers=[("traceparent", b"00-abc-01")],
        partition=SOURCE_PARTITION,
    )
    [record] = await commands.read_dead_letters(kafka, source, partition=SOURCE_PARTITION)
    try:
        raise KeyError("statuses")
    except KeyError as exc:
        for _ in range(times):
            await send_to_dlq(producer, record, exc, service="status", attempts=3)
    return record


async def test_a_dead_letter_is_listed_shown_replayed_once_and_refused_again(
    broker: Broker,
    admin: KafkaConfig,
    producer: AIOKafkaProducer,
    admin_producer: AIOKafkaProducer,
    db: AsyncDatabase[dict[str, Any]],
    unique: str,
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix, [WEBHOOK_RECEIVED])
    source = topic_name(WEBHOOK_RECEIVED, prefix)
    dlq = f"{source}.dlq"
    original = await _dead_letter(broker.setup, producer, prefix, b'{"event_id": "e1"}')

    listed = await commands.list_dead_letters(db, admin, prefix)
    assert listed == [{"topic": dlq, "source_topic": source, "records": 1, "replayed": 0}]

    [shown] = await commands.show_dead_letters(db, admin, prefix, "webhooks.received.v1")
    assert shown["dead_letter"] == f"{dlq}:0:0"
    assert shown["source"] == f"{source}:{SOURCE_PARTITION}:{original.offset}"
    assert (shown["service"], shown["error"]["type"], shown["error"]["reason"]) == (
        "status",
        "KeyError",
        "unexpected",
    )
    assert shown["error"]["traceback"][-1] == "KeyError: 'statuses'"
    assert shown["value"] == {"event_id": "e1"} and shown["replayed"] is None

    [dry] = await commands.replay_dead_letters(
        db, admin_producer, admin, prefix, "webhooks.received.v1", offset=0, dry_run=True
    )
    assert dry["outcome"] == "would_replay"
    assert len(await commands.read_dead_letters(broker.setup, source)) == 1

    [done] = await commands.replay_dead_letters(db, admin_producer, admin, prefix, dlq, offset=0)
    assert done["outcome"] == "replayed"
    assert done["replayed_to"] == f"{source}:{SOURCE_PARTITION}:{original.offset + 1}"
    back = (await commands.read_dead_letters(broker.setup, source, partition=SOURCE_PARTITION))[-1]
    assert (back.key, back.value) == (original.key, original.value)
    assert list(back.headers) == [
        ("traceparent", b"00-abc-01"),
        ("replayed_from", f"{dlq}:0:0".encode()),
    ]

    again = await commands.replay_dead_letters(db, admin_producer, admin, prefix, dlq, offset=0)
    everything = await commands.replay_dead_letters(
        db, admin_producer, admin, prefix, dlq, replay_all=True
    )
    assert [r["outcome"] for r in again + everything] == ["already_replayed"] * 2
    assert len(await commands.read_dead_letters(broker.setup, source)) == 2
    stored = await db[DLQ_REPLAYS].find_one({"_id": f"{dlq}:0:0"})
    assert stored is not None and stored["state"] == "replayed"
    assert stored["source"] == f"{source}:{SOURCE_PARTITION}:0"
    listed = await commands.list_dead_letters(db, admin, prefix)
    assert listed[0]["replayed"] == 1
    [shown] = await commands.show_dead_letters(db, admin, prefix, dlq)
    assert shown["replayed"]["replayed_to"] == done["replayed_to"]


async def test_a_record_dead_lettered_twice_is_replayed_once(
    broker: Broker,
    admin: KafkaConfig,
    producer: AIOKafkaProducer,
    admin_producer: AIOKafkaProducer,
    db: AsyncDatabase[dict[str, Any]],
    unique: str,
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix, [WEBHOOK_RECEIVED])
    await _dead_letter(broker.setup, producer, prefix, b'{"event_id": "e2"}', times=2)

    results = await commands.replay_dead_letters(
        db, admin_producer, admin, prefix, "webhooks.received.v1", replay_all=True
    )
    assert [r["outcome"] for r in results] == ["replayed", "already_replayed"]
    source = topic_name(WEBHOOK_RECEIVED, prefix)
    assert len(await commands.read_dead_letters(broker.setup, source)) == 2


async def test_the_hala_console_script_lists_shows_and_replays_dead_letters(
    mongodb_url: str, broker: Broker, producer: AIOKafkaProducer, unique: str
) -> None:
    prefix = f"t{unique}."
    await broker.grant(prefix, [WEBHOOK_RECEIVED])
    await _dead_letter(broker.setup, producer, prefix, b"not json")
    env = {
        **os.environ,
        **broker.env("admin"),
        "MONGODB_URL": mongodb_url,
        "MONGODB_DATABASE": f"it_{unique}",
        "HALA_TOPIC_PREFIX": prefix,
    }
    hala = [str(Path(sys.executable).with_name("hala"))]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*hala, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    listed = run("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert orjson.loads(listed.stdout)[0]["records"] == 1
    shown = run("dlq", "show", "webhooks.received.v1")
    assert shown.returncode == 0, shown.stderr
    assert "KeyError: 'statuses'" in shown.stdout and "value: not json" in shown.stdout
    replayed = run("dlq", "replay", "webhooks.received.v1", "--offset", "0", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert orjson.loads(replayed.stdout)[0]["outcome"] == "replayed"
    unknown = run("dlq", "show", "no.such.topic")
    assert unknown.returncode == 1 and "unknown_dlq_topic" in unknown.stderr
