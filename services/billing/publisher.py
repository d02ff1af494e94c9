"""billing's writes to Kafka: outputs and dead letters, through our own idempotent producer.

Outputs are awaited until the broker acknowledged them (acks=all) so that faust commits an input
only after its outputs are durable; faust's own `topic.send()` would defer them until the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from shared.errors import DependencyUnavailable
from shared.kafka import Failure, publish, publish_all, send_to_dlq
from shared.messages import Topic


@dataclass(frozen=True)
class Record:
    """One input record as read from Kafka, whatever read it (faust here)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0

    def as_consumer_record(self) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp=self.timestamp,
            timestamp_type=0,
            key=self.key,
            value=self.value,
            checksum=None,
            serialized_key_size=len(self.key or b""),
            serialized_value_size=len(self.value or b""),
            headers=list(self.headers),
        )


class KafkaPublisher:
    """`producer`: billing's, which replaces itself when the broker no longer accepts it
    (shared/renewing_producer.py), so that a retry after such a failure can succeed."""

    def __init__(self, producer: AIOKafkaProducer, topic_prefix: str) -> None:
        self._producer = producer
        self._prefix = topic_prefix

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        await self._write(lambda producer: publish(producer, topic, event, self._prefix))

    async def publish_all(self, events: Sequence[tuple[Topic[Any], Any]]) -> None:
        """Write `events` in order; return once the broker acknowledged every one (one round
        trip for all of them)."""
        await self._write(lambda producer: publish_all(producer, events, self._prefix))

    async def dead_letter(self, record: Record, failure: Failure) -> None:
        """Copy the original bytes and headers to `<topic>.dlq`, with why and where from."""
        await self._write(
            lambda producer: send_to_dlq(
                producer,
                record.as_consumer_record(),
                failure.error,
                service="billing",
                attempts=failure.attempts,
            )
        )

    async def _write(self, write: Callable[[AIOKafkaProducer], Awaitable[None]]) -> None:
        """A broker failure is transient: the caller retries."""
        try:
            await write(self._producer)
        except (KafkaError, OSError) as exc:
            # shared.kafka's writers already say DependencyUnavailable, with the cause
            raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"broker unavailable: {type(exc).__name__}", details={"dependency": "kafka"}
    )
