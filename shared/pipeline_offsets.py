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

from collections import deque
from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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


class InOrderRelease(Generic[K, V]):
    """Items of ordered streams (Kafka partitions) finished in any order, released in their
    stream's offset order: an item is released once its offset is below the stream's
    committable position (`PartitionOffsets`: every record tracked before it is finished too).
    For a consumer that takes records fairly across keys but must ack them in offset order:
    faust 0.15's commit of acked offsets (`Consumer._new_offset`) steps over a single unacked
    offset at the head of a partition (it compares with the committed offset as if that were
    the last one read), so billing never acks out of order."""

    def __init__(self) -> None:
        self._offsets: OffsetTracker[K] = OffsetTracker()
        self._items: dict[K, deque[tuple[int, V]]] = {}  # per stream, in offset order
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def track(self, stream: K, offset: int, item: V) -> None:
        """Raises ValueError for an offset not after the stream's last (forget() it first)."""
        (self._offsets.get(stream) or self._offsets.assign(stream)).track(offset)
        self._items.setdefault(stream, deque()).append((offset, item))
        self._count += 1

    def finish(self, stream: K, offset: int) -> list[V]:
        """Mark the record finished; returns the items now released, in offset order. A record
        not tracked (its stream forgotten: the partition was revoked) releases nothing."""
        offsets = self._offsets.get(stream)
        waiting = self._items.get(stream)
        # Only an offset among those waiting: a late finish from before the stream was
        # forgotten and read again must not mark a record of the new read done in advance.
        if offsets is None or not waiting or not waiting[0][0] <= offset <= waiting[-1][0]:
            return []
        offsets.done(offset)
        position = offsets.committable()
        if position is None:
            return []
        offsets.committed(position)
        released: list[V] = []
        while waiting and waiting[0][0] < position:
            released.append(waiting.popleft()[1])
        self._count -= len(released)
        return released

    def forget(self, streams: Collection[K]) -> int:
        """Forget what is tracked for these streams (revoked); returns how many records."""
        forgotten = 0
        for stream in streams:
            self._offsets.forget(stream)
            forgotten += len(self._items.pop(stream, ()))
        self._count -= forgotten
        return forgotten


__all__ = ["InOrderRelease", "OffsetTracker", "PartitionOffsets"]
