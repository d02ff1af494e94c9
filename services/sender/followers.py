"""The topics the sender follows without a consumer group: every instance needs all of them.

Throughput changes, WABA status and guard's account holds are compacted and read from their
beginning (a restarted instance must still know the latest of each); inbound messages are
followed from their end (each takes a token from its number's buckets). A followed record that
cannot be read or applied is logged, counted and skipped: these topics only tune pacing or
holds, and the next record corrects them.

A follower's fetch waits on the broker up to `fetch_max_wait_ms` while its topic is quiet, and
returns as soon as a record comes (fetch_min_bytes stays 1). The compacted topics change
rarely, so their followers may wait long between fetches (SENDER_FOLLOWER_FETCH_MAX_WAIT_MS);
the inbound follower keeps make_consumer's default: a record arriving on a partition it has
just read waits for the fetch in flight (aiokafka has one per broker), and an inbound message
must reach its number's buckets within their one-second memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka import TopicPartition

from services.sender import metrics
from shared.kafka import KafkaConfig, make_consumer, topic_name
from shared.logging import get_logger
from shared.messages import (
    ACCOUNT_HOLD_CHANGED,
    INBOUND_RECEIVED,
    THROUGHPUT_CHANGED,
    WABA_STATUS_CHANGED,
    Topic,
)

if TYPE_CHECKING:
    from services.sender.engine import SendEngine

log = get_logger(__name__)


async def follow_throughput(
    kafka: KafkaConfig, prefix: str, engine: SendEngine, fetch_max_wait_ms: int
) -> None:
    """Read the compacted throughput topic from its beginning, then follow it: every instance
    knows every number's latest level, also right after a restart."""
    await _follow(
        kafka,
        prefix,
        THROUGHPUT_CHANGED,
        engine.apply_throughput,
        from_beginning=True,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def follow_waba_status(
    kafka: KafkaConfig, prefix: str, engine: SendEngine, fetch_max_wait_ms: int
) -> None:
    """Read the compacted WABA status topic from its beginning, then follow it: a restarted
    instance must still know which WABAs Meta holds."""
    await _follow(
        kafka,
        prefix,
        WABA_STATUS_CHANGED,
        engine.apply_waba_status,
        from_beginning=True,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def follow_account_hold(
    kafka: KafkaConfig, prefix: str, engine: SendEngine, fetch_max_wait_ms: int
) -> None:
    """Read the compacted account hold topic from its beginning, then follow it: a restarted
    instance must still know which accounts guard holds."""
    await _follow(
        kafka,
        prefix,
        ACCOUNT_HOLD_CHANGED,
        engine.apply_account_hold,
        from_beginning=True,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def follow_inbound(kafka: KafkaConfig, prefix: str, engine: SendEngine) -> None:
    """Follow the inbound messages from now on: each one takes a token from its number's
    buckets (past ones are of no use: a bucket forgets within a second)."""
    await _follow(kafka, prefix, INBOUND_RECEIVED, engine.count_inbound, from_beginning=False)


async def _follow(
    kafka: KafkaConfig,
    prefix: str,
    topic: Topic[Any],
    apply: Callable[[Any], None],
    *,
    from_beginning: bool,
    fetch_max_wait_ms: int | None = None,
) -> None:
    """Every partition of `topic`, without a consumer group: nothing to commit, and every
    instance needs all of it (`fetch_max_wait_ms` None: make_consumer's)."""
    name = topic_name(topic, prefix)
    waits = {} if fetch_max_wait_ms is None else {"fetch_max_wait_ms": fetch_max_wait_ms}
    consumer = make_consumer(kafka, None, **waits)
    await consumer.start()
    try:
        # The registry's partition count is what ensure_topics created (a group-less consumer
        # gets no metadata for topics it has not been assigned).
        tps = [TopicPartition(name, p) for p in range(topic.partitions)]
        consumer.assign(tps)
        await (consumer.seek_to_beginning(*tps) if from_beginning else consumer.seek_to_end(*tps))
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    _apply_followed(topic, apply, record)
    finally:
        await consumer.stop()


def _apply_followed(topic: Topic[Any], apply: Callable[[Any], None], record: Any) -> None:
    """Apply one followed record; one that cannot be read or applied is logged, counted and
    skipped (these topics only tune pacing: the next record corrects it)."""
    try:
        apply(topic.decode(record.value))
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
        log.warning(
            "followed_record_unreadable",
            topic=topic.name,
            partition=record.partition,
            offset=record.offset,
            error=type(exc).__name__,
        )
    except Exception as exc:
        log.error(
            "followed_record_failed",
            topic=topic.name,
            partition=record.partition,
            offset=record.offset,
            exc_info=exc,
        )
        metrics.UNEXPECTED_ERRORS.labels("follower").inc()
