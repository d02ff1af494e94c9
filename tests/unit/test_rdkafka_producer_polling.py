"""shared/rdkafka_producer.py's event-loop side, over a fake librdkafka client: the loop's own
polling settles each send with its delivery report, an acknowledgement that never comes fails
its sender at the timeout and marks the broker down, and stop() serves what is still queued."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import shared.rdkafka_producer as rdkafka_producer
from shared.errors import DependencyUnavailable
from shared.kafka import KafkaConfig
from shared.rdkafka_producer import RdKafkaProducer


class FakeClient:
    """Takes records; reports them delivered on poll() only when `acknowledging`."""

    instances: list[FakeClient] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.queued: list[tuple[str, bytes, bytes, Callable[[Any, Any], None]]] = []
        self.acknowledging = True
        self.polls = 0
        FakeClient.instances.append(self)

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        self.queued.append((topic, value, key, on_delivery))

    def poll(self, timeout: float) -> int:
        assert timeout == 0, "the event loop must never block in poll()"
        self.polls += 1
        if not self.acknowledging:
            return 0
        served, self.queued = self.queued, []
        for *_, on_delivery in served:
            on_delivery(None, None)
        return len(served)

    def purge(self, **_: Any) -> None:
        pass

    def list_topics(self, timeout: float) -> None:
        pass

    def __len__(self) -> int:
        return len(self.queued)


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.instances = []
    monkeypatch.setattr(rdkafka_producer.confluent_kafka, "Producer", FakeClient)
    return FakeClient


CONFIG = KafkaConfig(bootstrap_servers="localhost:1", security_protocol="PLAINTEXT")


async def test_sends_return_once_the_loops_poll_serves_their_reports(
    fake_client: type[FakeClient],
) -> None:
    producer = RdKafkaProducer(CONFIG, ack_timeout_s=5, poll_interval_s=0.001)
    await producer.start()
    async with asyncio.timeout(5):
        await asyncio.gather(*(producer.send("t", b"k", f"v{i}".encode()) for i in range(20)))
    client = fake_client.instances[0]
    assert client.queued == []
    assert 1 <= client.polls < 20 * 100  # a poll per interval, not a busy loop
    await producer.stop()


async def test_an_acknowledgement_that_never_comes_fails_the_send_and_marks_the_broker_down(
    fake_client: type[FakeClient],
) -> None:
    producer = RdKafkaProducer(
        CONFIG, ack_timeout_s=0.05, poll_interval_s=0.001, probe_interval_s=60
    )
    await producer.start()
    fake_client.instances[0].acknowledging = False
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DependencyUnavailable, match="did not acknowledge in time"):
        await producer.send("t", b"k", b"v")
    assert 0.05 <= loop.time() - started < 1.0
    assert not producer.broker_up
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        await producer.send("t", b"k", b"v")  # refused at once while down
    fake_client.instances[0].acknowledging = True  # else stop() waits its 10 s for the report
    await producer.stop()


async def test_stop_serves_the_reports_of_what_is_still_queued(
    fake_client: type[FakeClient],
) -> None:
    producer = RdKafkaProducer(CONFIG, ack_timeout_s=5, poll_interval_s=60)
    await producer.start()
    send = asyncio.ensure_future(producer.send("t", b"k", b"v"))
    await asyncio.sleep(0)  # produced; its report waits for a poll an hour away
    assert fake_client.instances[0].queued
    await producer.stop()
    async with asyncio.timeout(0.05):  # served by stop(), not by the idle poll 0.1 s away
        await send
