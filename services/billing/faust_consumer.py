"""faust's aiokafka consumer, with two changes billing's per-partition back-pressure needs.

Installed through faust's public `App.transport` setter (app.py `create_app`); everything else
is faust-streaming's own driver.

1. Pausing a partition keeps the records already fetched for it. faust's `pause_partitions`
   removes the partition from the set of active partitions in place, and `Consumer.getmany`
   (faust/transport/consumer.py) filters the records of the poll it is handing over against
   that same set, record by record, while it waits for the stream to take each one. So a
   partition paused while its poll was being handed over would lose the rest of that poll:
   aiokafka's position has already moved past those records, and faust, seeing the next
   offset it hands over jump, records the skipped ones as a gap that its commit steps over
   (`Consumer._drain_messages`, `_add_gap`): never applied, yet committed. Here a pause
   replaces the set instead of changing it: the poll in hand
   keeps the set it was fetched with and hands over every record fetched; the next poll asks
   for the active partitions without the paused one. A paused partition thus holds at most
   what was fetched for it: aiokafka keeps at most one fetch result per partition, which
   faust does not ask for while the partition is paused (`Fetcher.fetched_records(partitions)`).
   faust's own flow control (`on_buffer_drop`, when a stream's buffer drains) puts a partition
   back into the active set: not one we paused.

2. `fetch_max_wait_ms`, hard-coded to 1,500 ms by faust's `_create_worker_consumer`, comes
   from billing's settings. aiokafka has one fetch in flight per broker: a partition resumed
   while a long poll of the idle ones is in flight is fetched only when that poll returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class BillingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        if isinstance(transport, BillingTransport):
            # aiokafka reads it when it builds its Fetcher, in start(): not started yet.
            consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class BillingConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> BillingConsumerThread:
        return BillingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        paused = set(tps)
        # A new set: a poll being handed over keeps the one it was fetched with (see above).
        self._active_partitions = self._get_active_partitions() - paused
        self._paused_partitions.update(paused)

    def on_buffer_drop(self, tp: TP) -> None:
        if tp in self._paused_partitions:
            self._buffered_partitions.discard(tp)
            return
        super().on_buffer_drop(tp)


class BillingTransport(faust_aiokafka.Transport):
    Consumer = BillingConsumer
    fetch_max_wait_ms = 1500  # faust's


def install(app: Any, fetch_max_wait_ms: int) -> BillingTransport:
    """Use this driver for `app`'s consumer: before anything has built its transport (its
    topics, agents or consumer)."""
    transport = BillingTransport(app.conf.broker_consumer, app)
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = transport
    return transport
