"""ingest's Kafka adapter: publish SendRequested and wait for the broker's acknowledgement."""

from __future__ import annotations

import time
from typing import Protocol

from aiokafka import AIOKafkaProducer

from services.ingest.metrics import PUBLISH_DURATION
from shared.kafka import publish
from shared.messages import SEND_REQUESTED, SendRequested


class Publisher(Protocol):
    async def send_requested(self, event: SendRequested) -> None: ...


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic_prefix: str = "") -> None:
        self._producer = producer
        self._prefix = topic_prefix

    async def send_requested(self, event: SendRequested) -> None:
        started = time.perf_counter()
        try:
            await publish(self._producer, SEND_REQUESTED, event, self._prefix)
        finally:
            PUBLISH_DURATION.observe(time.perf_counter() - started)
