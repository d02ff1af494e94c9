"""status's Kafka adapter: publish events and wait for the broker's acknowledgement (acks=all,
the shared idempotent producer). A broker that does not answer in time is a transient failure:
the webhook gets 503 (Meta retries), a worker retries the record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.errors import DependencyUnavailable
from shared.kafka import topic_name
from shared.messages import Topic

Outgoing = tuple[Topic[Any], Any]


class Publisher(Protocol):
    async def publish(self, topic: Topic[Any], event: Any) -> None: ...

    async def publish_all(self, events: Sequence[Outgoing]) -> None:
        """Publish in order and return once every event is acknowledged."""
        ...


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic_prefix: str,
                 timeout_seconds: float) -> None:
        self._producer = producer
        self._prefix = topic_prefix
        self._timeout = timeout_seconds

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        await self.publish_all([(topic, event)])

    async def publish_all(self, events: Sequence[Outgoing]) -> None:
        if not events:
            return
        try:
            await asyncio.wait_for(self._send_all(events), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise DependencyUnavailable(f"kafka unavailable: {type(exc).__name__}",
                                        details={"dependency": "kafka"}) from exc

    async def _send_all(self, events: Sequence[Outgoing]) -> None:
        # Enqueue everything first, then wait: one broker round trip for a whole batch instead
        # of one per event. The producer keeps the order of sends per partition.
        acks = []
        for topic, event in events:
            key, value = topic.encode(event)
            acks.append(await self._producer.send(topic_name(topic, self._prefix),
                                                  value=value, key=key))
        await asyncio.gather(*acks)
