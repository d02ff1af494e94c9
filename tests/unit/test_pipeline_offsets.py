"""The shared step for out-of-order completions (shared/pipeline_offsets.py): each partition
commits its contiguous finished prefix, never past a record still in flight."""

from __future__ import annotations

import random

import pytest

from shared.pipeline_offsets import InOrderRelease, OffsetTracker, PartitionOffsets


def test_the_commit_stops_at_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for offset in range(10, 15):
        offsets.track(offset)
    assert offsets.committable() is None or offsets.committable() == 10
    offsets.done(11)
    offsets.done(12)
    assert offsets.committable() == 10  # 10 is parked: nothing after it is committed
    offsets.done(10)
    assert offsets.committable() == 13
    offsets.committed(13)
    assert offsets.committable() is None  # nothing new
    offsets.done(14)
    offsets.done(13)
    assert offsets.committable() == 15
    assert offsets.pending() == 0


def test_offsets_with_gaps_commit_past_the_last_finished_one() -> None:
    offsets = PartitionOffsets()
    offsets.track(3)
    offsets.track(7)  # compaction or transaction markers leave gaps
    offsets.done(7)
    assert offsets.committable() == 3
    offsets.done(3)
    assert offsets.committable() == 8


def test_offsets_must_be_consumed_in_order() -> None:
    offsets = PartitionOffsets()
    offsets.track(5)
    with pytest.raises(ValueError):
        offsets.track(4)


def test_many_out_of_order_completions_commit_exactly_once_everything_is_done() -> None:
    offsets = PartitionOffsets()
    for offset in range(5000):
        offsets.track(offset)
    order = list(range(5000))
    random.Random(3).shuffle(order)
    finished: set[int] = set()
    for offset in order:
        offsets.done(offset)
        finished.add(offset)
        position = offsets.committable()
        if position is not None:
            assert all(o in finished for o in range(position))
            assert position == 5000 or position not in finished
            offsets.committed(position)
    assert offsets.committable() is None
    assert offsets.pending() == 0


def test_the_tracker_reports_only_partitions_with_progress_and_forgets_revoked_ones() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    a = tracker.assign("a")
    b = tracker.assign("b")
    a.track(0)
    b.track(0)
    a.done(0)
    assert tracker.committable() == {"a": 1, "b": 0}
    tracker.mark_committed({"a": 1, "b": 0})
    assert tracker.committable() == {}
    tracker.forget("b")
    assert tracker.partitions() == ["a"]
    assert tracker.get("b") is None


def test_a_record_finished_twice_or_before_it_is_tracked_moves_nothing_wrong() -> None:
    offsets = PartitionOffsets()
    offsets.track(0)
    offsets.track(1)
    offsets.done(1)
    offsets.done(1)  # a duplicate completion (a message and its redelivered copy)
    assert offsets.committable() == 0
    offsets.done(0)
    assert offsets.committable() == 2
    assert offsets.pending() == 0


def test_records_finished_out_of_order_are_released_in_each_partitions_offset_order() -> None:
    release: InOrderRelease[str, str] = InOrderRelease()
    for offset, item in ((5, "campaign-5"), (6, "other-6"), (7, "campaign-7")):
        release.track("p0", offset, item)
    release.track("p1", 2, "other-2")
    assert release.finish("p0", 6) == []  # offset 5 is not finished: 6 waits for it
    assert release.finish("p1", 2) == ["other-2"]  # another partition does not wait
    assert release.finish("p0", 5) == ["campaign-5", "other-6"]
    assert len(release) == 1
    assert release.forget({"p0"}) == 1 and len(release) == 0
    assert release.finish("p0", 7) == []  # forgotten (revoked): releases nothing
    release.track("p2", 3, "x")
    with pytest.raises(ValueError):
        release.track("p2", 3, "again")
