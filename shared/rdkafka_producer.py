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

librdkafka reports deliveries only from `poll()`, and runs the callbacks in the thread that polls.
The event loop polls it itself, without blocking (`poll(0)`): every `poll_interval_s` while
records wait for their acknowledgement, every `IDLE_POLL_S` otherwise (its error callback, e.g.
"all brokers down", is served then too). A thread that blocked in `poll()` and handed the reports
to the loop cost each request a GIL hand-over and a wake-up of the loop; polling from the loop
costs a timer and a C call per interval, whatever the number of reports it serves
(bench/README.md, "ingest CPU per request").

A broker that is unreachable is known at once, not learnt by each request after
`message.timeout.ms`: when librdkafka reports that every broker is down, when a delivery fails,
or when an acknowledgement takes longer than `ack_timeout_s`, the producer marks the broker
down, purges what it has not sent yet (those records can then never be written: their senders
are told so), and refuses new records at once (DependencyUnavailable) instead of queueing them.
A probe asks the broker for metadata every `probe_interval_s` meanwhile, and the first answer
reopens it: the producer recovers by itself. Only a record already on the wire when the broker
went silent has an unknown fate (a retry with the same Idempotency-Key is safe): its sender's
DependencyUnavailable says so (`details.record_written`: "unknown", else "no").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import confluent_kafka

from shared.errors import RECORD_NOT_WRITTEN, RECORD_WRITTEN_UNKNOWN, DependencyUnavailable
from shared.kafka import KafkaConfig
from shared.logging import get_logger

log = get_logger(__name__)

# Each request waits for its record's acknowledgement, so the linger is in every answer's
# latency (not in the pipeline's after the 202), and with a fixed number of client connections
# latency caps throughput. On the secure broker (SASL_SSL: every broker request is TLS work in
# librdkafka's thread and in the broker) ingest at 32 connections spent 189 vs 251 us of CPU per
# request at 3 vs 1 ms, at the same rate (3,369 vs 3,409 req/s; medians of 6 interleaved pairs;
# bench/README.md); 5 ms saved no more and lowered the rate. (On the plaintext broker of an
# earlier session 1 ms had been best: then CPU, not the round trip, bound the rate.)
LINGER_MS = 3.0
# While records wait for their acknowledgement the loop polls every POLL_INTERVAL_S: the most
# an acknowledgement waits to be seen (1 ms instead cost no less CPU per request).
POLL_INTERVAL_S = 0.0005
IDLE_POLL_S = 0.1  # nothing outstanding: only the error callback (a broker gone) to serve
# librdkafka before 2.6.1 answered Kafka 4's SCRAM challenge wrongly (it re-appended the client
# nonce; Kafka 4 checks it strictly since CVE-2024-56128): login fails. libversion() is
# 0xMMmmrrpp.
MIN_SCRAM_LIBVERSION = 0x020601FF
PROBE_INTERVAL_S = 0.5
FLUSH_TIMEOUT_S = 10.0
# Delivery failures that mean the broker is gone (not: the record was refused).
_OUTAGE_ERRORS = frozenset({"_MSG_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT"})
# Delivery failures after which the record may have been written all the same: it may have been
# on the wire when the connection failed or the time ran out.
_FATE_UNKNOWN_ERRORS = frozenset({"_MSG_TIMED_OUT", "_TRANSPORT", "_TIMED_OUT"})


def _unavailable(error: object, written: str = RECORD_NOT_WRITTEN) -> DependencyUnavailable:
    details: dict[str, Any] = {"dependency": "kafka", "record_written": written}
    if isinstance(error, confluent_kafka.KafkaError):
        details["kafka_error"] = error.name()
    return DependencyUnavailable(f"kafka unavailable: {error}", details=details)


def _delivery_failed(error: Any) -> DependencyUnavailable:
    unknown = isinstance(error, confluent_kafka.KafkaError) and (
        error.name() in _FATE_UNKNOWN_ERRORS
    )
    return _unavailable(error, RECORD_WRITTEN_UNKNOWN if unknown else RECORD_NOT_WRITTEN)


class RdKafkaProducer:
    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        linger_ms: float = LINGER_MS,
        delivery_timeout_ms: int = 15000,
        ack_timeout_s: float | None = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        if (
            kafka.uses_sasl
            and kafka.sasl_mechanism.startswith("SCRAM")
            and confluent_kafka.libversion()[1] < MIN_SCRAM_LIBVERSION
        ):
            raise RuntimeError(
                f"librdkafka {confluent_kafka.libversion()[0]} cannot log in "
                "to Kafka 4 with SCRAM: 2.6.1 or later is needed"
            )
        self._ack_timeout_s = ack_timeout_s
        self._probe_interval_s = probe_interval_s
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
            "error_cb": self._on_error,
        }
        self._poll_interval_s = poll_interval_s
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outstanding = 0  # records produced whose report has not been served yet
        self._poll_timer: asyncio.TimerHandle | None = None
        # (when, future) of the records waiting for an acknowledgement, in the order sent: all
        # have the same timeout, so the first is the first to expire.
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._poll_at = float("inf")  # when the timer fires
        self._up = False
        self._prober: asyncio.Task[None] | None = None

    @property
    def broker_up(self) -> bool:
        return self._up

    async def start(self, deadline_s: float = 60.0, *, wait: bool = True) -> None:
        """Connect, waiting for a broker that is still starting (`wait`), or not: the producer
        then refuses records until its probe reaches a broker."""
        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer(self._config)
        self._schedule_poll(IDLE_POLL_S)
        if not wait:
            self._mark_down("starting")
            return
        loop_deadline = self._loop.time() + deadline_s
        while not await self.ready():
            if self._loop.time() > loop_deadline:
                raise _unavailable("no broker answered")
            await asyncio.sleep(1)
        self._up = True

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Write one record and return once the broker acknowledged it (acks=all). Refused at
        once while the broker is known to be down."""
        assert self._producer is not None and self._loop is not None, "start() first"
        if not self._up:
            raise _unavailable("the broker is unreachable")
        delivered: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(error: Any, _: Any) -> None:
            # Runs inside poll(), which only the loop calls (_poll, stop).
            self._outstanding -= 1
            _settle(delivered, error)

        try:
            self._producer.produce(topic, value, key, on_delivery=on_delivery)
        except (BufferError, confluent_kafka.KafkaException) as exc:
            raise _unavailable(exc) from exc
        self._outstanding += 1
        if self._poll_at - self._loop.time() > self._poll_interval_s:
            self._schedule_poll(self._poll_interval_s)
        if self._ack_timeout_s is not None:
            # Checked by _poll (a timer per record cost more than the rest of send()).
            self._deadlines.append((self._loop.time() + self._ack_timeout_s, delivered))
        try:
            await delivered
        except TimeoutError:
            self._mark_down("acknowledgement timed out")
            # Perhaps still queued (then purged just now), perhaps on the wire: unknown.
            unconfirmed = "the broker did not acknowledge in time"
            raise _unavailable(unconfirmed, RECORD_WRITTEN_UNKNOWN) from None
        except DependencyUnavailable as exc:
            if exc.details.get("kafka_error") in _OUTAGE_ERRORS:
                self._mark_down(str(exc.details["kafka_error"]))
            raise

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        """librdkafka's error callback (inside poll(), in the loop; or a thread's list_topics)."""
        if error.code() == confluent_kafka.KafkaError._ALL_BROKERS_DOWN and self._loop:
            self._loop.call_soon_threadsafe(self._mark_down, "all brokers down")

    def _schedule_poll(self, delay_s: float) -> None:
        assert self._loop is not None
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        self._poll_at = self._loop.time() + delay_s
        self._poll_timer = self._loop.call_at(self._poll_at, self._poll)

    def _poll(self) -> None:
        """Serve the reports (and errors) librdkafka has: their callbacks run here."""
        self._poll_timer, self._poll_at = None, float("inf")
        if self._producer is None:
            return
        self._producer.poll(0)
        self._expire(self._loop.time() if self._loop is not None else 0.0)
        self._schedule_poll(self._poll_interval_s if self._outstanding > 0 else IDLE_POLL_S)

    def _expire(self, now: float) -> None:
        """Fail the records whose acknowledgement is overdue (TimeoutError to their senders; a
        report that comes later is dropped by _settle), and forget those settled."""
        deadlines = self._deadlines
        while deadlines:
            when, delivered = deadlines[0]
            if not delivered.done():
                if when > now:
                    return
                delivered.set_exception(TimeoutError())
            deadlines.popleft()

    def _mark_down(self, reason: str) -> None:
        """Refuse new records, fail those not sent yet, and probe until a broker answers."""
        if self._producer is None:
            return
        if self._up or reason == "starting":
            log.warning("kafka_producer_broker_down", reason=reason)
        self._up = False
        # Not on the wire yet: never written now, and their senders learn it.
        self._producer.purge(in_queue=True, in_flight=False, blocking=False)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.ensure_future(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        while not self._up and self._producer is not None:
            if await self._answers(self._probe_interval_s):
                self._up = True
                log.info("kafka_producer_broker_up")
                return
            await asyncio.sleep(self._probe_interval_s)

    async def _answers(self, timeout_s: float) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.to_thread(producer.list_topics, timeout=timeout_s)
            return True
        except confluent_kafka.KafkaException:
            return False

    async def ready(self) -> bool:
        """True when the broker answers a metadata request."""
        return await self._answers(2)

    async def stop(self) -> None:
        if self._producer is None:
            return
        if self._prober is not None:
            self._prober.cancel()
        # What was accepted is delivered (or fails) before the producer goes: polled here, in
        # the loop, so that the callbacks settle their futures in the loop's thread.
        producer, deadline = self._producer, time.monotonic() + FLUSH_TIMEOUT_S
        while len(producer) > 0 and time.monotonic() < deadline:
            producer.poll(0)
            await asyncio.sleep(0.01)
        producer.poll(0)
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        # librdkafka's own threads live as long as the Producer object: without this they kept
        # reconnecting to a broker that had gone, in a process that went on (tests).
        self._producer = None


def _settle(delivered: asyncio.Future[None], error: Any) -> None:
    if delivered.done():
        return  # its caller went away (cancelled)
    if error is None:
        delivered.set_result(None)
    else:
        delivered.set_exception(_delivery_failed(error))
