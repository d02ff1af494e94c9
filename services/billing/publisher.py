"""billing's writes to Kafka: outputs and dead letters, through our own idempotent producer.

Outputs are awaited until the broker acknowledged them (acks=all) so that faust commits an input
only after its outputs are durable; faust's own `topic.send()` would defer them until the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
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
            topic=self.topic, partition=self.partition, offset=self.offset,
            timestamp=self.timestamp, timestamp_type=0, key=self.key, value=self.value,
            checksum=None, serialized_key_size=len(self.key or b""),
            serialized_value_size=len(self.value or b""), headers=list(self.headers))


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic_prefix: str) -> None:
        self._producer = producer
        self._prefix = topic_prefix

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        try:
            await publish(self._producer, topic, event, self._prefix)
        except (KafkaError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def publish_all(self, events: Sequence[tuple[Topic[Any], Any]]) -> None:
        """Write `events` in order; return once the broker acknowledged every one (one round
        trip for all of them)."""
        try:
            await publish_all(self._producer, events, self._prefix)
        except (KafkaError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def dead_letter(self, record: Record, failure: Failure) -> None:
        """Copy the original bytes and headers to `<topic>.dlq`, with why and where from."""
        try:
            await send_to_dlq(self._producer, record.as_consumer_record(), failure.error,
                              service="billing", attempts=failure.attempts)
        except (KafkaError, OSError) as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(f"broker unavailable: {type(exc).__name__}",
                                 details={"dependency": "kafka"})
