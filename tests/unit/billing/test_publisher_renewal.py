"""billing's publisher after the broker lost its producer's state (a broker restart can)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from services.billing.publisher import KafkaPublisher
from shared.errors import DependencyUnavailable
from shared.messages import SEND_REQUESTED
from tests.unit.billing.events import send_requested


class FakeProducer:
    """Enough of AIOKafkaProducer for shared.kafka.publish_all: each send fails with `error`,
    or is acknowledged and kept."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_producer_the_broker_no_longer_accepts_is_replaced_and_the_retry_goes_out() -> None:
    broken, fresh = FakeProducer(OutOfOrderSequenceNumber()), FakeProducer()
    renewals = 0

    async def renew() -> Any:
        nonlocal renewals
        renewals += 1
        return fresh

    publisher = KafkaPublisher(broken, "t.", renew=renew)  # type: ignore[arg-type]
    event = send_requested()
    with pytest.raises(DependencyUnavailable):  # transient: the worker retries the record
        await publisher.publish(SEND_REQUESTED, event)
    assert renewals == 1
    await publisher.publish(SEND_REQUESTED, event)
    assert len(fresh.sent) == 1 and broken.sent == []


async def test_a_broker_that_is_only_away_keeps_its_producer() -> None:
    away = FakeProducer(KafkaConnectionError())
    renewals = 0

    async def renew() -> Any:
        nonlocal renewals
        renewals += 1
        return FakeProducer()

    publisher = KafkaPublisher(away, "t.", renew=renew)  # type: ignore[arg-type]
    with pytest.raises(DependencyUnavailable):
        await publisher.publish(SEND_REQUESTED, send_requested())
    assert renewals == 0
