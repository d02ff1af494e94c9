"""status's Kafka adapter: publish events and wait for the broker's acknowledgement (acks=all,
the shared idempotent producer). A broker that does not answer in time is a transient failure:
the webhook gets 503 (Meta retries), a worker retries the record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from shared.kafka import publish_all
from shared.messages import Topic

Outgoing = tuple[Topic[Any], Any]


class Publisher(Protocol):
    async def publish(self, topic: Topic[Any], event: Any) -> None: ...

    async def publish_all(self, events: Sequence[Outgoing]) -> None:
        """Publish in order and return once every event is acknowledged."""
        ...


class KafkaPublisher:
    def __init__(
        self, producer: AIOKafkaProducer, topic_prefix: str, timeout_seconds: float
    ) -> None:
        self._producer = producer
        self._prefix = topic_prefix
        self._timeout = timeout_seconds

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        await self.publish_all([(topic, event)])

    async def publish_all(self, events: Sequence[Outgoing]) -> None:
        await publish_all(self._producer, events, self._prefix, self._timeout)
