"""Count aiokafka's fetch results (`PartitionRecords`) alive in this process. aiokafka keeps at
most one per partition in use; one dropped half-read (`consumer.pause`) is a reference cycle that
only the cyclic collector frees, so with the collector off every such fetch is still there to
count. Used by the backpressure tests of the shared pipeline, the sender and billing."""

from __future__ import annotations

import gc

from aiokafka.consumer.fetcher import PartitionRecords


def fetches_alive(topic: str | None = None) -> int:
    """The fetch results alive now, of `topic` only when it is given."""
    return sum(
        1
        for o in gc.get_objects()
        if type(o) is PartitionRecords and (topic is None or o._tp.topic == topic)
    )
