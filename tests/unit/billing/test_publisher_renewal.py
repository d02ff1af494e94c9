"""billing's publisher after the broker lost its producer's state (a broker restart can): the
shared renewing producer (shared/renewing_producer.py) under billing's KafkaPublisher."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from services.billing.publisher import KafkaPublisher
from shared.errors import DependencyUnavailable
from shared.messages import SEND_REQUESTED
from shared.renewing_producer import RenewingProducer
from tests.unit.billing.events import send_requested


class FakeProducer:
    """Enough of AIOKafkaProducer for shared.kafka.publish_all: each delivery fails with
    `error`, or is acknowledged and kept."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple[str, bytes]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self.error is not None:  # the broker's answer, once the caller waits for it
            loop.call_soon(future.set_exception, self.error)
        else:
            self.sent.append((topic, value))
            future.set_result(None)
        return future


async def test_a_producer_the_broker_no_longer_accepts_is_replaced_and_the_retry_goes_out() -> None:
    broken, fresh = FakeProducer(OutOfOrderSequenceNumber()), FakeProducer()
    made = iter([broken, fresh])
    producer = RenewingProducer(lambda: next(made))  # type: ignore[arg-type, return-value]
    await producer.start()
    publisher = KafkaPublisher(producer, "t.")  # type: ignore[arg-type]
    event = send_requested()

    with pytest.raises(DependencyUnavailable):  # transient: the worker retries the record
        await publisher.publish(SEND_REQUESTED, event)
    await publisher.publish(SEND_REQUESTED, event)

    assert producer.renewals == 1
    assert len(fresh.sent) == 1 and broken.sent == []
    assert fresh.started and broken.stopped


async def test_a_broker_that_is_only_away_keeps_its_producer() -> None:
    away = FakeProducer(KafkaConnectionError())
    producer = RenewingProducer(lambda: away)  # type: ignore[arg-type, return-value]
    publisher = KafkaPublisher(producer, "t.")  # type: ignore[arg-type]

    with pytest.raises(DependencyUnavailable):
        await publisher.publish(SEND_REQUESTED, send_requested())

    assert producer.renewals == 0 and producer.current is away and not away.stopped
