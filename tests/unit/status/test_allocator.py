"""glibc's allocator options and heap trims (shared/memory.py) as status applies them. The
allocator's behaviour is checked in a fresh interpreter each time, so that what one test sets
(mallopt lasts for the process) cannot decide another's outcome."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.status.__main__ import allocator_tuning
from services.status.settings import StatusSettings
from shared import memory
from shared.memory import AllocatorTuning, malloc_totals

ROOT = Path(__file__).resolve().parents[3]
glibc_only = pytest.mark.skipif(malloc_totals() is None, reason="glibc's mallopt/mallinfo2")


def _run(code: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


# A 1 MiB block freed raises glibc's dynamic mmap threshold to 1 MiB: a 512 KiB block is then
# carved from the heap (mmapped_bytes does not move); with the threshold set it is mapped.
_THRESHOLD_PROBE = """
import json, sys
from shared.memory import AllocatorTuning, malloc_totals, tune_allocator
applied = tune_allocator(AllocatorTuning(trim_interval_s=0)) if sys.argv[-1] == "tune" else {}
big = bytearray(1024 * 1024)
del big
before = malloc_totals().mmapped_bytes
block = bytearray(512 * 1024)
grew = malloc_totals().mmapped_bytes - before
print(json.dumps({"grew": grew, **{k: int(v) for k, v in applied.items()}}))
"""


@glibc_only
def test_the_mmap_threshold_set_keeps_large_blocks_out_of_the_heap() -> None:
    dynamic = _run(_THRESHOLD_PROBE.replace('sys.argv[-1] == "tune"', "False"))
    tuned = _run(_THRESHOLD_PROBE.replace('sys.argv[-1] == "tune"', "True"))
    assert dynamic["grew"] == 0  # glibc's default: the freed 1 MiB moved the threshold
    assert tuned == {"grew": tuned["grew"], "mmap_threshold": 1, "arena_max": 1}
    assert tuned["grew"] >= 512 * 1024


# 60,000 blocks of ~1 KB (the size of a Kafka record's value), 7 in 8 freed: the heap's free
# pages stay resident until malloc_trim hands them back.
_TRIM_PROBE = """
import json, os
from shared.memory import malloc_trim
def rss_bytes():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
keep, junk = [], []
for i in range(60_000):
    (keep if i % 8 == 0 else junk).append(bytes(1000 + i % 100))
del junk
before = rss_bytes()
released = malloc_trim()
print(json.dumps({"before": before, "after": rss_bytes(), "released": int(released)}))
"""


@glibc_only
def test_malloc_trim_gives_the_heaps_free_pages_back() -> None:
    result = _run(_TRIM_PROBE)
    assert result["released"] == 1
    # ~52 MB freed in the middle of the heap: most of its pages go back.
    assert result["before"] - result["after"] > 20 * 1024 * 1024


def test_status_settings_give_the_allocator_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator_tuning(StatusSettings()) == AllocatorTuning(
        mmap_threshold_bytes=128 * 1024, arena_max=2, trim_interval_s=10.0
    )
    monkeypatch.setenv("STATUS_MALLOC_TRIM_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("STATUS_MALLOC_ARENA_MAX", "0")
    tuning = allocator_tuning(StatusSettings())
    assert (tuning.trim_interval_s, tuning.arena_max) == (0, 0)


def test_tune_allocator_leaves_zeroes_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(memory, "mallopt", lambda option, value: calls.append((option, value)))
    memory.tune_allocator(AllocatorTuning(mmap_threshold_bytes=0, arena_max=3))
    assert calls == [(memory.M_ARENA_MAX, 3)]


async def test_the_trim_worker_trims_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    third = asyncio.Event()

    def trim() -> bool:
        trims.append(time.monotonic())
        if len(trims) == 3:
            third.set()
        return True

    monkeypatch.setattr(memory, "malloc_trim", trim)
    worker = asyncio.create_task(memory.trim_heap_forever(0.01))
    try:
        await asyncio.wait_for(third.wait(), timeout=5)
    finally:
        worker.cancel()
    assert trims[2] - trims[0] >= 0.015  # an interval apart, not in a burst
