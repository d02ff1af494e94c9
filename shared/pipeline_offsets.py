"""The pipeline's step for effects that finish out of order: commit the contiguous finished
prefix of each partition.

`shared/pipeline.py` commits a batch once its effect returned. A consumer that hands records
over to work finishing later and in any order (the sender's lanes: a message waits for its
number's pacing while later ones go out) cannot: the offset it may commit is the lowest one not
finished yet. `PartitionOffsets` keeps that per partition, `OffsetTracker` for every partition
assigned. Pure: no clock, no I/O (the consumer that uses it commits `committable()` at its
cadence and tells `mark_committed` what the broker took).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """Offsets of one partition in flight. Records finish in any order; what may be committed is
    the lowest offset not finished yet (a record parked for pacing holds the commit back: it is
    never skipped)."""

    def __init__(self) -> None:
        self._order: list[int] = []  # offsets as consumed (increasing), a queue with a head index
        self._head = 0
        self._done: set[int] = set()
        self._next_after_last: int | None = None
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        if self._next_after_last is not None and offset < self._next_after_last:
            raise ValueError(f"offset {offset} consumed out of order")
        self._order.append(offset)
        self._next_after_last = offset + 1

    def done(self, offset: int) -> None:
        self._done.add(offset)

    def pending(self) -> int:
        return len(self._order) - self._head

    def committable(self) -> int | None:
        """The offset to commit (Kafka's "next to read"), or None when nothing new is finished."""
        order, done = self._order, self._done
        while self._head < len(order) and order[self._head] in done:
            done.discard(order[self._head])
            self._head += 1
        if self._head > 1024 and self._head * 2 > len(order):
            del order[: self._head]
            self._head = 0
        if self._next_after_last is None:
            return None
        position = order[self._head] if self._head < len(order) else self._next_after_last
        return None if position == self._committed else position

    def committed(self, offset: int) -> None:
        self._committed = offset


class OffsetTracker(Generic[K]):
    """`PartitionOffsets` per partition key (any hashable, e.g. aiokafka's TopicPartition)."""

    def __init__(self) -> None:
        self._partitions: dict[K, PartitionOffsets] = {}

    def assign(self, partition: K) -> PartitionOffsets:
        offsets = self._partitions[partition] = PartitionOffsets()
        return offsets

    def forget(self, partition: K) -> None:
        self._partitions.pop(partition, None)

    def get(self, partition: K) -> PartitionOffsets | None:
        return self._partitions.get(partition)

    def committable(self) -> dict[K, int]:
        ready: dict[K, int] = {}
        for partition, offsets in self._partitions.items():
            position = offsets.committable()
            if position is not None:
                ready[partition] = position
        return ready

    def mark_committed(self, positions: dict[K, int]) -> None:
        for partition, position in positions.items():
            offsets = self._partitions.get(partition)
            if offsets is not None:
                offsets.committed(position)

    def partitions(self) -> list[K]:
        return list(self._partitions)


__all__ = ["OffsetTracker", "PartitionOffsets"]
