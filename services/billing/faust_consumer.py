"""faust's aiokafka consumer, with two changes billing's per-partition back-pressure needs.

Installed through faust's public `App.transport` setter (app.py `create_app`); everything else
is faust-streaming's own driver.

1. Pausing a partition keeps the records already fetched for it. faust's `Consumer.getmany`
   (faust/transport/consumer.py) filters the records of the poll it is handing over against
   the live set of active partitions, record by record, while it waits for the stream to take
   each one; `pause_partitions` removes the partition from that set. So a partition paused
   while its poll was being handed over would lose the rest of that poll: aiokafka's position
   has already moved past those records, and faust, seeing the next offset it hands over
   jump, records the skipped ones as a gap that its commit steps over
   (`Consumer._drain_messages`, `_add_gap`): never applied, yet committed. Here the poll is
   filtered against a copy taken when it was fetched, with the partitions it holds records of
   that were paused since (a revoked one is no longer paused, and a rebalance stops the
   hand-over anyway: faust compares generations). The next poll asks for the active
   partitions without the paused one, so a paused partition holds at most what was fetched
   for it: aiokafka keeps at most one fetch result per partition, which faust does not ask
   for while the partition is paused (`Fetcher.fetched_records(partitions)`): not asked
   for, that fetch is neither dropped nor fetched again, and is read on from where it was
   once the partition is resumed (aiokafka's own `consumer.pause` would drop it unread at the
   next poll, a reference cycle for the garbage collector: test_backpressure_memory.py in
   tests/integration/billing counts them). faust's own
   flow control (`on_buffer_drop`, when a stream's buffer drains) puts a partition back into
   the active set: not one we paused.

   A resume wakes the poll in progress: `fetched_records` waits (up to faust's 1 s) for a
   fetch to bring new records, and the resumed partition's records may be in aiokafka's
   buffer already, so nothing else would wake it.

2. `fetch_max_wait_ms`, hard-coded to 1,500 ms by faust's `_create_worker_consumer`, comes
   from billing's settings. aiokafka has one fetch in flight per broker: a partition resumed
   while a long poll of the idle ones is in flight is fetched only when that poll returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiokafka
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

# What faust's `_wait_next_records` returns: the records fetched, and the partitions whose
# records are handed over.
Poll = tuple[RecordMap | None, set[TP] | None]


class BillingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        if isinstance(transport, BillingTransport):
            # aiokafka reads it when it builds its Fetcher, in start(): not started yet.
            consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer

    def wake_fetch_waiters(self) -> None:
        """From faust's loop: a poll waiting in the consumer thread for new records looks at
        what is buffered again."""
        self.thread_loop.call_soon_threadsafe(self._wake_fetch_waiters)

    def _wake_fetch_waiters(self) -> None:
        consumer = self._consumer
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None:  # not started yet, or stopped
            return
        for waiter in list(fetcher._fetch_waiters):
            if not waiter.done():
                waiter.set_result(None)


class BillingConsumer(faust_aiokafka.Consumer):
    _thread: BillingConsumerThread

    def _new_consumer_thread(self) -> BillingConsumerThread:
        return BillingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Poll:  # noqa: ASYNC109 (faust's)
        records, active = await super()._wait_next_records(timeout)
        if not records or active is None:
            return records, active
        # A copy, so that a pause while this poll is handed over does not drop its records.
        return records, active | (records.keys() & self._paused_partitions)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        super().resume_partitions(tps)
        self._thread.wake_fetch_waiters()

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
