"""status's two Kafka workers as coroutines for `serve()`: each owns its consumer from start to
stop and runs the shared loop (commit after the effect, DLQ for permanent errors)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.kafka import Handler, consume_forever, make_consumer, report_lag_forever, topic_name
from shared.messages import STATUS_CHANGED, WEBHOOK_RECEIVED, Topic

SERVICE = "status"


def processor_group(prefix: str) -> str:
    return f"{prefix}status-processor"


def state_writer_group(prefix: str) -> str:
    return f"{prefix}status-state"


async def run_consumer(bootstrap_servers: str, prefix: str, group: str, topic: Topic[Any],
                       handle: Handler, producer: AIOKafkaProducer) -> None:
    consumer = make_consumer(bootstrap_servers, group, topic_name(topic, prefix))
    await consumer.start()
    lag = asyncio.create_task(report_lag_forever(consumer, SERVICE, group))
    try:
        await consume_forever(consumer, producer, handle, service=SERVICE)
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await consumer.stop()


async def run_processor(bootstrap_servers: str, prefix: str, handle: Handler,
                        producer: AIOKafkaProducer) -> None:
    await run_consumer(bootstrap_servers, prefix, processor_group(prefix), WEBHOOK_RECEIVED,
                       handle, producer)


async def run_state_writer(bootstrap_servers: str, prefix: str, handle: Handler,
                           producer: AIOKafkaProducer) -> None:
    await run_consumer(bootstrap_servers, prefix, state_writer_group(prefix), STATUS_CHANGED,
                       handle, producer)
