"""Kafka helpers: durable producers, manual-commit consumers, topic creation and the consumer loop.

The loop follows arroyo's shape: decode -> handle -> commit offset + 1. The commit follows the
effect. Permanent errors go to `<topic>.dlq` with the original bytes and headers, then commit;
transient errors are retried in place with capped backoff and, when the budget runs out, the
process exits without committing so that it is restarted and the record is seen again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.errors import DependencyUnavailable, PermanentError, TransientError
from shared.logging import get_logger
from shared.messages import ALL_TOPICS, Topic
from shared.metrics import CONSUMER_LAG, DEAD_LETTERS, RECORDS_HANDLED

log = get_logger(__name__)


def topic_name(topic: Topic[Any] | str, prefix: str = "") -> str:
    return prefix + (topic if isinstance(topic, str) else topic.name)


def make_producer(bootstrap_servers: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer whose acknowledged writes survive a broker restart and are never duplicated
    by its own retries (aiokafka's defaults are acks=1 and no idempotence)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "request_timeout_ms": 15000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(bootstrap_servers: str, group_id: str, *topics: str,
                  **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(bootstrap_servers: str, prefix: str = "",
                        topics: Iterable[Topic[Any]] = ALL_TOPICS) -> None:
    """Create the platform's topics and their dead-letter topics if missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            config = {"cleanup.policy": "compact"} if topic.compacted else {}
            for name, parts, cfg in ((topic.name, topic.partitions, config),
                                     (topic.dlq, 1, {})):
                full = topic_name(name, prefix)
                if full not in existing:
                    wanted.append(NewTopic(full, num_partitions=parts, replication_factor=1,
                                           topic_configs=cfg))
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another service created them first
    finally:
        await admin.close()


async def delete_topics(bootstrap_servers: str, wanted: Callable[[str], bool]) -> list[str]:
    """Delete the topics whose names `wanted` picks, and return them: tests and benchmarks
    clean up after themselves, since every partition left behind slows the shared broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if wanted(name)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()

async def publish(producer: AIOKafkaProducer, topic: Topic[Any], event: Any,
                  prefix: str = "") -> None:
    """Write an event and wait until the broker acknowledged it (acks=all)."""
    await publish_all(producer, [(topic, event)], prefix)


async def publish_all(producer: AIOKafkaProducer, events: Sequence[tuple[Topic[Any], Any]],
                      prefix: str = "", timeout_s: float | None = None) -> None:
    """Write events in order and return once the broker acknowledged every one. All are enqueued
    before any is awaited: one broker round trip for a batch instead of one per event. A broker
    that fails or does not answer within `timeout_s` is a transient failure."""
    if not events:
        return

    async def send_all() -> None:
        acks = []
        for topic, event in events:
            key, value = topic.encode(event)
            acks.append(await producer.send(topic_name(topic, prefix), value=value, key=key))
        await asyncio.gather(*acks)

    try:
        await asyncio.wait_for(send_all(), timeout_s)
    except (KafkaError, TimeoutError) as exc:
        raise DependencyUnavailable(f"kafka unavailable: {type(exc).__name__}",
                                    details={"dependency": "kafka"}) from exc


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 0.2
    max_delay: float = 10.0
    # How long a transient failure may last before the process gives up and is restarted.
    budget_seconds: float = 120.0


async def retry_transient(action: Callable[[], Awaitable[Any]], policy: RetryPolicy,
                          what: str) -> Any:
    """Run `action`, retrying TransientError with capped exponential backoff."""
    delay = policy.first_delay
    deadline = time.monotonic() + policy.budget_seconds
    while True:
        try:
            return await action()
        except TransientError as exc:
            if time.monotonic() + delay > deadline:
                log.error("transient_retry_budget_exhausted", what=what, error=str(exc))
                raise
            log.warning("transient_error_retrying", what=what, error=str(exc),
                        retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, policy.max_delay)


class TooManyDeadLetters(RuntimeError):
    """Many dead letters in a row look like a bad deploy, not bad data: stop, don't drain."""


class DeadLetterGuard:
    def __init__(self, limit_in_a_row: int = 50) -> None:
        self.limit = limit_in_a_row
        self.in_a_row = 0

    def record_success(self) -> None:
        self.in_a_row = 0

    def record_dead_letter(self) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TooManyDeadLetters(f"{self.in_a_row} dead letters in a row")


async def send_to_dlq(producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes],
                      error: BaseException) -> None:
    headers = list(record.headers or ()) + [
        ("error_type", type(error).__name__.encode()),
        ("error_detail", str(error)[:1000].encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]
    await producer.send_and_wait(f"{record.topic}.dlq", value=record.value, key=record.key,
                                 headers=headers)


Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]


async def _handle_one(record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer,
                      handle: Handler, service: str, retry: RetryPolicy,
                      guard: DeadLetterGuard) -> None:
    """Handle one record to its end: its effect, or its dead letter. TransientError past the
    retry budget and bugs propagate: the caller must not commit."""
    try:
        await retry_transient(lambda: handle(record), retry, what=record.topic)
        guard.record_success()
        outcome = "handled"
    except PermanentError as exc:
        await send_to_dlq(producer, record, exc)
        log.warning("record_dead_lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, error_code=exc.code)
        outcome = "dead_lettered"
        DEAD_LETTERS.labels(service=service).inc()
        guard.record_dead_letter()
    RECORDS_HANDLED.labels(service=service, outcome=outcome).inc()


COMMIT_INTERVAL_S = 0.5
FINAL_COMMIT_TIMEOUT_S = 5.0


async def consume_concurrently(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                               handle: Handler, *, service: str,
                               key_of: Callable[[ConsumerRecord[bytes, bytes]], object],
                               max_records: int = 500, retry: RetryPolicy = RetryPolicy(),
                               guard: DeadLetterGuard | None = None,
                               commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
    """Handle records, those with different keys concurrently, and commit what is finished.

    `handle` raises PermanentError for a record that can never succeed (-> DLQ) and
    TransientError for a dependency problem (-> retried; the process exits when the budget runs
    out). Any other exception is a bug: it propagates, and the batch it hit is not committed.

    Records that share `key_of(record)` (e.g. one message's events) are handled one after the
    other in offset order, so whoever writes that key's documents is still their only writer.
    A batch counts as finished once every record of it is. Finished positions are committed at
    most every `commit_interval_s`, and as soon as no record is waiting: a commit per batch cost
    the broker a log write per batch, at low rates one per record. A stop, crash or rebalance
    before the commit means those records are read again (handlers are idempotent).
    """
    guard = guard or DeadLetterGuard()
    finished: dict[TopicPartition, int] = {}
    last_commit = float("-inf")
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            records = [r for part in batches.values() for r in part]
            if records:
                await _handle_batch(records, producer, handle, service, key_of, retry, guard)
                finished.update({tp: part[-1].offset + 1 for tp, part in batches.items() if part})
            now = time.monotonic()
            if finished and (not records or now - last_commit >= commit_interval_s):
                await _commit_finished(consumer, finished)
                last_commit = now
    finally:
        if finished:  # a stop (or a bug in a later batch) keeps what was finished before it
            try:
                await asyncio.wait_for(_commit_finished(consumer, finished),
                                       timeout=FINAL_COMMIT_TIMEOUT_S)
            except TimeoutError:  # a broker that is gone must not hold up the stop
                log.warning("commit_failed", error="timed out at stop")


async def _handle_batch(records: list[ConsumerRecord[bytes, bytes]], producer: AIOKafkaProducer,
                        handle: Handler, service: str,
                        key_of: Callable[[ConsumerRecord[bytes, bytes]], object],
                        retry: RetryPolicy, guard: DeadLetterGuard) -> None:
    by_key: dict[object, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        by_key.setdefault(key_of(record), []).append(record)

    async def in_order(group: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in group:
            await _handle_one(record, producer, handle, service, retry, guard)

    await asyncio.gather(*(in_order(group) for group in by_key.values()))


async def _commit_finished(consumer: AIOKafkaConsumer,
                           finished: dict[TopicPartition, int]) -> None:
    """Commit and forget the finished positions. A rebalance may have moved partitions
    meanwhile: then nothing is committed, and their new owner reads those records again."""
    positions = dict(finished)
    finished.clear()
    try:
        await consumer.commit(positions)
    except KafkaError as exc:
        log.warning("commit_failed", error=str(exc), partitions=len(positions))


async def report_lag_forever(consumer: AIOKafkaConsumer, service: str,
                             group: str, interval: float = 5.0) -> None:
    """Publish consumer lag per partition as a gauge, measured by the consumer itself."""
    while True:
        try:
            assignment = consumer.assignment()
            if assignment:
                ends = await consumer.end_offsets(list(assignment))
                for tp in assignment:
                    position = await consumer.committed(tp) or 0
                    lag = max(0, ends.get(tp, 0) - position)
                    CONSUMER_LAG.labels(service=service, group=group, topic=tp.topic,
                                        partition=str(tp.partition)).set(lag)
        except KafkaError as exc:
            log.warning("consumer_lag_unavailable", error=str(exc))
        await asyncio.sleep(interval)


async def kafka_ready(producer: AIOKafkaProducer) -> bool:
    """True when the broker answers a metadata request."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2)
        return True
    except (KafkaError, TimeoutError, OSError):
        return False
