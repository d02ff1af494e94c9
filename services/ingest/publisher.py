"""ingest's Kafka adapter: publish SendRequested (and the webhook endpoint API's NotifyRequested,
the suppression API's SuppressionChangeRequested) and wait for the broker's acknowledgement.

Through librdkafka (shared/rdkafka_producer.py): one publish per request makes the producer's
CPU per message a large part of a request's cost."""

from __future__ import annotations

import time
from typing import Protocol

from services.ingest.metrics import PUBLISH_DURATION
from shared.kafka import topic_name
from shared.messages import (
    NOTIFY_REQUESTED,
    SEND_REQUESTED,
    SUPPRESSION_CHANGE_REQUESTED,
    NotifyRequested,
    SendRequested,
    SuppressionChangeRequested,
)
from shared.rdkafka_producer import RdKafkaProducer


class Publisher(Protocol):
    async def send_requested(self, event: SendRequested) -> None: ...


class NotifyRequests(Protocol):
    """Test events and replays for the delivery side (notify)."""

    async def notify_requested(self, event: NotifyRequested) -> None: ...


class SuppressionRequests(Protocol):
    """A client's suppression or resubscription, for status (the list's only writer)."""

    async def suppression_change_requested(self, event: SuppressionChangeRequested) -> None: ...


class KafkaPublisher:
    def __init__(self, producer: RdKafkaProducer, topic_prefix: str = "") -> None:
        self._producer = producer
        self._topic = topic_name(SEND_REQUESTED, topic_prefix)
        self._notify_topic = topic_name(NOTIFY_REQUESTED, topic_prefix)
        self._suppression_topic = topic_name(SUPPRESSION_CHANGE_REQUESTED, topic_prefix)

    async def send_requested(self, event: SendRequested) -> None:
        started = time.perf_counter()
        key, value = SEND_REQUESTED.encode(event)
        try:
            await self._producer.send(self._topic, key, value)
        finally:
            PUBLISH_DURATION.observe(time.perf_counter() - started)

    async def notify_requested(self, event: NotifyRequested) -> None:
        key, value = NOTIFY_REQUESTED.encode(event)
        await self._producer.send(self._notify_topic, key, value)

    async def suppression_change_requested(self, event: SuppressionChangeRequested) -> None:
        key, value = SUPPRESSION_CHANGE_REQUESTED.encode(event)
        await self._producer.send(self._suppression_topic, key, value)
