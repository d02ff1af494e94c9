"""A signed webhook POSTed to the in-process app lands byte for byte on the real broker, and the
200 comes only after the broker has it."""

from __future__ import annotations

import orjson
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition

from services.status import core
from services.status.app import create_app
from services.status.handlers import WebhookConfig
from shared.clock import SystemClock
from shared.kafka import make_consumer, topic_name
from shared.messages import WEBHOOK_RECEIVED
from tests.integration.status.conftest import StatusWorld
from tests.unit.status.meta_examples import APP_SECRET, BATCHED_STATUSES, WABA_ID, sign


async def _records_on(world: StatusWorld, topic: str) -> int:
    """How many records the topic's partitions hold (sum of end offsets)."""
    partitions = [TopicPartition(topic, p) for p in await world.producer.partitions_for(topic)]
    consumer = make_consumer(world.kafka, None, topic)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_a_signed_batched_webhook_is_durable_on_the_topic_before_the_200(
    world: StatusWorld,
) -> None:
    topic = topic_name(WEBHOOK_RECEIVED, world.prefix)
    app = create_app(
        WebhookConfig(APP_SECRET, "token", 3 * 1024 * 1024), world.publisher, SystemClock()
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert await _records_on(world, topic) == 0
        resp = await client.post(
            "/webhooks/meta",
            data=BATCHED_STATUSES,
            headers={
                "X-Hub-Signature-256": sign(BATCHED_STATUSES),
                "Content-Type": "application/json",
            },
        )
        assert resp.status == 200
        # Checked right after the answer, without waiting: the record is already in the log.
        assert await _records_on(world, topic) == 1

        bad = await client.post(
            "/webhooks/meta", data=BATCHED_STATUSES, headers={"X-Hub-Signature-256": sign(b"other")}
        )
        assert bad.status == 401
    finally:
        await client.close()

    [event] = await world.read(WEBHOOK_RECEIVED, until=lambda events: len(events) >= 1)
    assert bytes(event.payload) == BATCHED_STATUSES
    assert event.event_id == core.webhook_event_id(WABA_ID, BATCHED_STATUSES)
    # Nothing was published for the refused POST.
    assert await _records_on(world, topic) == 1


async def test_a_webhook_of_two_and_a_half_mib_is_accepted_published_and_processed(
    world: StatusWorld,
) -> None:
    """Meta's webhooks may reach 3 MB: one of 2.5 MiB gets its 200 (the producer and the topic
    take it), and the processor reads and handles it from the topic."""
    status = {
        "id": "wamid.BIG1",
        "status": "delivered",
        "timestamp": "1764000003",
        "recipient_id": "447911123456",
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "statuses": [status],
                            # A field nobody reads, only to make the body as big as Meta's largest.
                            "padding": "x" * (5 * 1024 * 1024 // 2),
                        },
                    }
                ],
            }
        ],
    }
    raw = orjson.dumps(payload)
    assert 2.5 * 1024 * 1024 <= len(raw) < 3 * 1024 * 1024
    async with world.webhook_client(APP_SECRET) as client:
        resp = await client.post(
            "/webhooks/meta",
            data=raw,
            headers={"X-Hub-Signature-256": sign(raw), "Content-Type": "application/json"},
        )
        assert resp.status == 200, await resp.text()
    [event] = await world.read(WEBHOOK_RECEIVED, until=lambda events: len(events) >= 1)
    assert bytes(event.payload) == raw

    world.start_processor()

    async def parked() -> bool:  # a status of a wamid nobody knows yet waits for it
        return await world.db["parked_statuses"].count_documents({"wamid": "wamid.BIG1"}) == 1

    await world.wait_for(parked, what="the big webhook's status parked")
    await world.wait_for(world.processed_everything, what="the processor committed it")
