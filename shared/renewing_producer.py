"""An aiokafka producer that replaces itself when the broker no longer accepts it.

An idempotent producer (every one of ours: shared/kafka.py `make_producer`) can't go on after
the errors in `PRODUCER_STATE_ERRORS`: the broker no longer knows its producer id or its
sequence numbers, which a broker restart can lose. Every later send of that producer fails the
same way, so a service that retries in place would retry for ever. A new producer (a new id)
recovers.

`RenewingProducer` stands in for the `AIOKafkaProducer` a service uses (`send`,
`send_and_wait`, `start`, `stop`, `client`; anything else goes to the current producer). A send
whose delivery fails with one of those errors still fails (the caller's rule for a broker
failure applies: retry, or give up the record), and a new producer is made and started in the
background in place of the broken one; sends wait for it, so the caller's retry goes out on
the new one. A send that fails for any other reason (the broker away, a timeout) keeps the
producer: aiokafka reconnects by itself.

The normal path costs no task: the delivery future is returned as it is, with a done callback
that looks at its error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from prometheus_client import Counter

from shared.logging import get_logger

log = get_logger(__name__)

# The producer can't go on after these (see the module's docstring).
PRODUCER_STATE_ERRORS: tuple[type[KafkaError], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)

PRODUCER_RENEWALS = Counter(
    "hala_kafka_producer_renewals_total",
    "Kafka producers replaced after the broker stopped accepting them (a lost producer id or "
    "sequence, e.g. after a broker restart).",
)

STOP_OLD_TIMEOUT_S = 10.0


async def _start(producer: AIOKafkaProducer) -> None:
    await producer.start()


class RenewingProducer:
    """See the module's docstring. `make` builds a new, unstarted producer (the same settings
    each time); `start` starts one (the services': shared/runtime.py `start_with_retry`)."""

    def __init__(
        self,
        make: Callable[[], AIOKafkaProducer],
        start: Callable[[AIOKafkaProducer], Awaitable[None]] = _start,
    ) -> None:
        self._make = make
        self._start = start
        self._producer = make()
        self._renewal: asyncio.Future[None] | None = None
        self.renewals = 0

    @property
    def current(self) -> AIOKafkaProducer:
        """The producer sends go to now."""
        return self._producer

    @property
    def client(self) -> Any:
        return self._producer.client

    async def start(self) -> None:
        await self._start(self._producer)

    async def stop(self) -> None:
        if self._renewal is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._renewal)
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        """As AIOKafkaProducer.send: enqueue, and return the delivery's future."""
        if self._renewal is not None:  # a new producer is on its way: send there
            await asyncio.shield(self._renewal)
        producer = self._producer
        try:
            future = await producer.send(
                topic,
                value=value,
                key=key,
                partition=partition,
                timestamp_ms=timestamp_ms,
                headers=headers,
            )
        except PRODUCER_STATE_ERRORS:
            self._renew(producer)
            raise
        future.add_done_callback(lambda done: self._look_at(producer, done))
        return cast("asyncio.Future[Any]", future)

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> Any:
        future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await future

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller uses (create_batch, partitions_for, ...): the current producer.
        return getattr(self._producer, name)

    def _look_at(self, producer: AIOKafkaProducer, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        if isinstance(done.exception(), PRODUCER_STATE_ERRORS):
            self._renew(producer)

    def _renew(self, broken: AIOKafkaProducer) -> None:
        """Replace `broken` unless it was replaced already or a replacement is on its way."""
        if broken is not self._producer or self._renewal is not None:
            return
        self._renewal = asyncio.ensure_future(self._replace(broken))

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        try:
            fresh = self._make()
            await self._start(fresh)
        except Exception as exc:  # the next send that fails this way tries again
            log.error("kafka_producer_renewal_failed", error=repr(exc))
            return
        else:
            self._producer = fresh
        finally:
            self._renewal = None
        self.renewals += 1
        PRODUCER_RENEWALS.inc()
        log.warning("kafka_producer_renewed")
        with contextlib.suppress(Exception):  # the old one is broken: it may fail to close
            async with asyncio.timeout(STOP_OLD_TIMEOUT_S):
                await broken.stop()


def renewing_producer(
    make: Callable[[], AIOKafkaProducer],
    start: Callable[[AIOKafkaProducer], Awaitable[None]] = _start,
) -> AIOKafkaProducer:
    """A `RenewingProducer`, typed as the AIOKafkaProducer it stands in for, so that the
    services' code that takes a producer is unchanged."""
    return cast(AIOKafkaProducer, RenewingProducer(make, start))
