"""Smoke check: does aiokafka work against the local broker (deploy/local/infra.sh)?

Checks what the services rely on:
  1. admin: create a normal topic and a `cleanup.policy=compact` topic, read the policy back;
  2. idempotent producer (acks="all", enable_idempotence=True);
  3. consumer group with enable_auto_commit=False, manual commit of part of the messages;
  4. a second consumer in the same group resumes exactly at the committed offsets;
  5. transactional producer + read_committed consumer (aiokafka only speaks v0 of the
     transaction APIs, so this is worth proving on each broker version).

Usage: eval "$(deploy/local/infra.sh env)"; KAFKA_SASL_USERNAME=hala-setup \
       KAFKA_SASL_PASSWORD_FILE=$HALA_KAFKA_SECRETS_DIR/hala-setup.password \
       .venv/bin/python deploy/local/smoke_kafka.py [--keep]
It connects like the services (the KAFKA_* settings: SASL_SSL, SCRAM); topic creation and the
transactional id need the set-up principal. Exit code 0 = all checks passed. Topics are deleted
afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from shared.settings import ServiceSettings, load_settings

N_MESSAGES = 30
PARTITIONS = 3


def step(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


async def consume(bootstrap: dict[str, Any], topic: str, group: str, limit: int, **kw) -> list:
    """Read up to `limit` messages one by one, commit exactly what was read, stop."""
    consumer = AIOKafkaConsumer(
        topic,
        **bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kw,
    )
    await consumer.start()
    got, last = [], {}
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():  # joined the group and got partitions
            assert time.monotonic() < deadline, "no partition assignment within 30 s"
            await asyncio.sleep(0.05)
        while len(got) < limit:
            batch = await consumer.getmany(timeout_ms=1000, max_records=limit - len(got))
            if not batch:
                break  # nothing more within 1 s
            for tp, records in batch.items():
                for r in records:
                    got.append((r.partition, r.offset, r.key, r.value))
                    last[tp] = r.offset
        if last:
            await consumer.commit({tp: off + 1 for tp, off in last.items()})
            for tp, off in last.items():
                assert await consumer.committed(tp) == off + 1, "commit not visible"
    finally:
        await consumer.stop()
    return got


async def main(bootstrap: dict[str, Any], keep: bool) -> None:
    t0 = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    events, compacted, txn_topic = (f"smoke.{n}.{suffix}" for n in ("events", "compact", "txn"))
    group = f"smoke-group-{suffix}"

    admin = AIOKafkaAdminClient(**bootstrap)
    await admin.start()
    try:
        step(
            f"broker {bootstrap['bootstrap_servers']}: creating topics {events}, "
            f"{compacted} (compact), {txn_topic}"
        )
        await admin.create_topics(
            [
                NewTopic(events, num_partitions=PARTITIONS, replication_factor=1),
                NewTopic(
                    compacted,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                ),
                NewTopic(txn_topic, num_partitions=1, replication_factor=1),
            ]
        )
        topics = await admin.list_topics()
        assert {events, compacted, txn_topic} <= set(topics), topics
        resp = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, compacted, {"cleanup.policy": None})]
        )
        policy = {entry[0]: entry[1] for r in resp for res in r.resources for entry in res[4]}.get(
            "cleanup.policy"
        )
        assert policy == "compact", f"cleanup.policy is {policy!r}"
        step("admin OK (create_topics, list_topics, describe_configs cleanup.policy=compact)")

        producer = AIOKafkaProducer(**bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            sent = set()
            for i in range(N_MESSAGES):
                md = await producer.send_and_wait(events, f"v{i}".encode(), key=f"k{i}".encode())
                sent.add((md.partition, md.offset))
            for i in range(3):  # same key twice -> compaction candidate
                await producer.send_and_wait(compacted, f"state{i}".encode(), key=b"account-1")
        finally:
            await producer.stop()
        step(f"idempotent producer OK ({N_MESSAGES} + 3 messages, acks=all)")

        first = await consume(bootstrap, events, group, limit=N_MESSAGES // 2)
        assert len(first) == N_MESSAGES // 2, f"first consumer read {len(first)}"
        step(f"consumer 1 read {len(first)} messages, committed manually")
        second = await consume(bootstrap, events, group, limit=N_MESSAGES)
        a = {(p, o) for p, o, *_ in first}
        b = {(p, o) for p, o, *_ in second}
        assert not a & b, f"re-delivered after commit: {sorted(a & b)}"
        assert a | b == sent, f"missing: {sorted(sent - (a | b))}"
        step(f"consumer 2 (same group) resumed at the committed offsets: {len(second)} new")

        tx = AIOKafkaProducer(**bootstrap, transactional_id=f"smoke-tx-{suffix}")
        await tx.start()
        try:
            async with tx.transaction():
                await tx.send(txn_topic, b"committed")
            await tx.begin_transaction()
            await tx.send(txn_topic, b"aborted")
            await tx.abort_transaction()
        finally:
            await tx.stop()
        seen = await consume(
            bootstrap, txn_topic, f"{group}-tx", limit=10, isolation_level="read_committed"
        )
        values = [v for *_, v in seen]
        assert values == [b"committed"], values
        step("transactional producer OK (commit visible, abort hidden with read_committed)")
    finally:
        if not keep:
            try:
                await admin.delete_topics([events, compacted, txn_topic])
            except Exception as exc:  # cleanup must not hide the real result
                step(f"(cleanup: delete_topics failed: {exc!r})")
        await admin.close()
    step(f"ALL OK in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the smoke topics")
    args = ap.parse_args()
    # aiokafka logs retried, expected conditions (e.g. the group coordinator not being
    # available until __consumer_offsets exists) at ERROR; show them, labelled.
    logging.basicConfig(level=logging.WARNING, format="[smoke] (aiokafka log) %(message)s")
    try:
        kafka = load_settings(ServiceSettings).kafka
        asyncio.run(main(kafka.aiokafka_options(), args.keep))
    except Exception as exc:
        print(f"[smoke] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
