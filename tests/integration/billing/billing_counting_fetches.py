"""billing as `python -m services.billing` runs it, with the cyclic garbage collector off and
two test-only samples on its /metrics (tests only; run as
`python -m tests.integration.billing.billing_counting_fetches`):

- `billing_test_fetches_alive`: aiokafka's fetch results (`PartitionRecords`) alive in the
  process, counted in `gc.get_objects()` when /metrics is read. aiokafka keeps at most one per
  partition; one dropped before it was read to its end is a reference cycle (the record
  generator's frame holds the fetch) that only the collector frees: with it off, every one
  dropped is still there to count.
- `billing_test_partitions_paused_total`: partitions billing's intake paused (faust's
  `pause_partitions`), so a test knows back-pressure was exercised.

BILLING_TEST_MAX_POLL_RECORDS caps the records one poll takes (faust's `max_poll_records`,
billing leaves it unset: a poll takes each fetch whole), so that a fetch is mostly half-read
when its partition is paused.

BILLING_TEST_PAUSE=aiokafka is the control: the intake's pauses and resumes go to aiokafka's
`consumer.pause`/`resume` instead of faust's, while faust keeps polling the partition, as a
consumer holding partitions back with aiokafka's pause does. aiokafka then drops a paused
partition's fetch unread, and the count shows those fetches (the probe can see a leak)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.billing.__main__ import main
from services.billing.faust_consumer import BillingConsumer, BillingConsumerThread
from tests.integration.fetch_probe import fetches_alive

PAUSE_IN = os.environ.get("BILLING_TEST_PAUSE", "faust")
MAX_POLL_RECORDS = int(os.environ.get("BILLING_TEST_MAX_POLL_RECORDS", "0")) or None
paused = 0


class FetchesAlive:
    def collect(self) -> Iterator[Metric]:
        alive = fetches_alive()
        yield GaugeMetricFamily(
            "billing_test_fetches_alive", "aiokafka fetch results alive", value=alive
        )
        yield CounterMetricFamily(
            "billing_test_partitions_paused", "Partitions the intake paused", value=paused
        )


create_worker_consumer = BillingConsumerThread._create_worker_consumer


def with_small_polls(self: BillingConsumerThread, transport: Any) -> Any:
    consumer = create_worker_consumer(self, transport)
    consumer._max_poll_records = MAX_POLL_RECORDS  # faust's getmany passes it to aiokafka
    return consumer


faust_pause = BillingConsumer.pause_partitions
faust_resume = BillingConsumer.resume_partitions


def _in_aiokafka(consumer: BillingConsumer, method: str, tps: Iterable[Any]) -> None:
    """Call aiokafka's consumer's `method` on `tps`, in faust's consumer thread (its loop)."""
    thread = consumer._thread
    partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    thread.thread_loop.call_soon_threadsafe(lambda: getattr(thread._consumer, method)(*partitions))


def pause_partitions(self: BillingConsumer, tps: Iterable[Any]) -> None:
    global paused
    tps = set(tps)
    paused += len(tps)
    if PAUSE_IN == "aiokafka":
        _in_aiokafka(self, "pause", tps)
    else:
        faust_pause(self, tps)


def resume_partitions(self: BillingConsumer, tps: Iterable[Any]) -> None:
    if PAUSE_IN == "aiokafka":
        _in_aiokafka(self, "resume", tps)
    else:
        faust_resume(self, tps)


BillingConsumerThread._create_worker_consumer = with_small_polls  # type: ignore[method-assign]
BillingConsumer.pause_partitions = pause_partitions  # type: ignore[method-assign]
BillingConsumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
REGISTRY.register(FetchesAlive())  # type: ignore[arg-type]

if __name__ == "__main__":
    gc.collect()
    gc.disable()
    main()
