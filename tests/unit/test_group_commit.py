"""shared.group_commit: callers of one moment share a write, and each gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.group_commit import GroupCommit


class Recorder:
    def __init__(self, fail: set[str] | None = None, raise_all: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail or set()
        self.raise_all = raise_all

    async def write(self, items: list[str]) -> Sequence[str | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(0.01)  # the next callers arrive while this batch is written
        if self.raise_all:
            raise ConnectionError("down")
        return [ValueError(i) if i in self.fail else i.upper() for i in items]


async def test_callers_of_one_moment_share_one_write_and_get_their_own_result() -> None:
    recorder = Recorder()
    commit: GroupCommit[str, str] = GroupCommit(recorder.write, max_batch=10)
    assert await asyncio.gather(*(commit.submit(x) for x in "abc")) == ["A", "B", "C"]
    assert recorder.batches == [["a", "b", "c"]]


async def test_callers_arriving_during_a_write_go_together_in_the_next_one() -> None:
    recorder = Recorder()
    commit: GroupCommit[str, str] = GroupCommit(recorder.write, max_batch=10)
    first = asyncio.ensure_future(commit.submit("a"))
    await asyncio.sleep(0.005)  # the first batch is being written
    later = await asyncio.gather(commit.submit("b"), commit.submit("c"))
    assert (await first, later) == ("A", ["B", "C"])
    assert recorder.batches == [["a"], ["b", "c"]]


async def test_a_batch_never_exceeds_its_maximum() -> None:
    recorder = Recorder()
    commit: GroupCommit[str, str] = GroupCommit(recorder.write, max_batch=2)
    await asyncio.gather(*(commit.submit(x) for x in "abcde"))
    assert recorder.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_an_item_that_failed_fails_only_its_caller() -> None:
    commit: GroupCommit[str, str] = GroupCommit(Recorder(fail={"b"}).write, max_batch=10)
    results = await asyncio.gather(*(commit.submit(x) for x in "abc"), return_exceptions=True)
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)


async def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_batch_still_runs() -> (
    None
):
    recorder = Recorder(raise_all=True)
    commit: GroupCommit[str, str] = GroupCommit(recorder.write, max_batch=10)
    results = await asyncio.gather(commit.submit("a"), commit.submit("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    recorder.raise_all = False
    assert await commit.submit("c") == "C"


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    commit: GroupCommit[str, str] = GroupCommit(Recorder().write, max_batch=10)
    gone = asyncio.ensure_future(commit.submit("a"))
    stays = asyncio.ensure_future(commit.submit("b"))
    await asyncio.sleep(0.002)
    gone.cancel()
    assert await stays == "B"
    with pytest.raises(asyncio.CancelledError):
        await gone
