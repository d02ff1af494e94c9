"""A producer for request paths that publish one event per request: librdkafka (confluent-kafka)
behind an asyncio face.

Why not aiokafka here: its producer spends ~30 µs of Python CPU per message (~60 µs through
`publish`), librdkafka ~15 µs including its own threads (measured side by side on this machine,
32 concurrent sends of 400 bytes, acks=all). For ingest that is most of a request's cost beyond
aiohttp's own. Consumers and batch publishers stay on aiokafka.

Same guarantees as `shared.kafka.make_producer`: acks=all, idempotence, and a bounded time to
deliver; `send` returns only once the broker acknowledged the record, and any failure is a
transient DependencyUnavailable. Same connection and credentials too: the service's
`KafkaConfig` (shared/kafka.py) gives librdkafka its address, TLS and SASL properties.

librdkafka reports deliveries only from `poll()`: one thread polls, gathers the reports each poll
served, and hands them to the event loop in one call (not one wake-up per message).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import confluent_kafka

from shared.errors import DependencyUnavailable
from shared.kafka import KafkaConfig

# Each request waits for its record's acknowledgement, so the linger is in every answer's
# latency, and with a fixed number of client connections latency caps throughput. Measured for
# ingest at 32 connections: 2 ms -> ~5,400 req/s (the process idle 15 %), 1 ms -> ~6,500 req/s
# (CPU-bound, same CPU per request); 0 makes a broker request of every record and costs more.
LINGER_MS = 1.0
_POLL_SECONDS = 0.1  # poll() returns as soon as a report arrives; this only bounds shutdown
# librdkafka before 2.6.1 answered Kafka 4's SCRAM challenge wrongly (it re-appended the client
# nonce; Kafka 4 checks it strictly since CVE-2024-56128): login fails. libversion() is
# 0xMMmmrrpp.
MIN_SCRAM_LIBVERSION = 0x020601FF


def _unavailable(error: object) -> DependencyUnavailable:
    return DependencyUnavailable(f"kafka unavailable: {error}", details={"dependency": "kafka"})


class RdKafkaProducer:
    def __init__(self, kafka: KafkaConfig, *, linger_ms: float = LINGER_MS,
                 delivery_timeout_ms: int = 15000) -> None:
        if kafka.uses_sasl and kafka.sasl_mechanism.startswith("SCRAM") \
                and confluent_kafka.libversion()[1] < MIN_SCRAM_LIBVERSION:
            raise RuntimeError(f"librdkafka {confluent_kafka.libversion()[0]} cannot log in "
                               "to Kafka 4 with SCRAM: 2.6.1 or later is needed")
        self._config: dict[str, Any] = {
            **kafka.rdkafka_options(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "message.timeout.ms": delivery_timeout_ms,
            # Java's (and aiokafka's) partitioner, not librdkafka's CRC32 default: one account's
            # records from ingest must land on the same partition number as those the other
            # services write with aiokafka (billing's single writer per account, the state
            # writer's co-partitioned topics).
            "partitioner": "murmur2_random",
        }
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[tuple[asyncio.Future[None], Any]] = []
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None

    async def start(self, deadline_s: float = 60.0) -> None:
        """Connect, waiting for a broker that is still starting."""
        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer(self._config)
        self._poller = threading.Thread(target=self._poll_forever, name="rdkafka-poll",
                                        daemon=True)
        self._poller.start()
        loop_deadline = self._loop.time() + deadline_s
        while not await self.ready():
            if self._loop.time() > loop_deadline:
                raise _unavailable("no broker answered")
            await asyncio.sleep(1)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Write one record and return once the broker acknowledged it (acks=all)."""
        assert self._producer is not None and self._loop is not None, "start() first"
        delivered: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(error: Any, _: Any) -> None:
            # Runs in the poll thread, inside poll(): the list it finds is the current one.
            self._reports.append((delivered, error))

        try:
            self._producer.produce(topic, value, key, on_delivery=on_delivery)
        except (BufferError, confluent_kafka.KafkaException) as exc:
            raise _unavailable(exc) from exc
        await delivered

    async def ready(self) -> bool:
        """True when the broker answers a metadata request."""
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.to_thread(producer.list_topics, timeout=2)
            return True
        except confluent_kafka.KafkaException:
            return False

    async def stop(self) -> None:
        if self._producer is None:
            return
        await asyncio.to_thread(self._producer.flush, 10)
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join, 5)
        # librdkafka's own threads live as long as the Producer object: without this they kept
        # reconnecting to a broker that had gone, in a process that went on (tests).
        self._producer = None

    def _poll_forever(self) -> None:
        producer, loop = self._producer, self._loop
        assert producer is not None and loop is not None
        while not self._stopping.is_set():
            producer.poll(_POLL_SECONDS)
            if self._reports:
                # Only this thread appends (callbacks run inside poll()), so the swap is safe.
                served, self._reports = self._reports, []
                loop.call_soon_threadsafe(_settle, served)


def _settle(reports: list[tuple[asyncio.Future[None], Any]]) -> None:
    for delivered, error in reports:
        if delivered.done():
            continue  # its caller went away (cancelled)
        if error is None:
            delivered.set_result(None)
        else:
            delivered.set_exception(_unavailable(error))
