"""The process's memory as glibc's allocator sees it (Linux, glibc), and the
allocator options a service may set at start-up.

`malloc_totals()` (glibc's `mallinfo2`) splits the allocator's part of the resident set into
bytes in use and bytes free but kept. A large "kept" beside a small traced-Python figure is
fragmentation, not objects.

`tune_allocator()` calls `mallopt` through ctypes. On another libc (musl, macOS) it does
nothing and says so: the options are an optimisation, never a condition to run.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

# glibc's mallopt parameter numbers (malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@dataclass(frozen=True)
class MallocTotals:
    """glibc's mallinfo2, summed over every arena."""

    arena_bytes: int  # obtained from the kernel for the heaps (brk and arena heaps)
    mmapped_bytes: int  # in chunks mmapped on their own (above the mmap threshold)
    mmapped_blocks: int  # how many: one growing buffer or many large ones
    in_use_bytes: int  # allocated from the heaps
    free_bytes: int  # free in the heaps, kept by the allocator


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "mallinfo2"):
        return None  # not glibc (>= 2.33)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.mallinfo2.argtypes = []
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def malloc_totals() -> MallocTotals | None:
    """glibc's view of its heaps, None on another libc."""
    libc = _libc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return MallocTotals(
        arena_bytes=info.arena,
        mmapped_bytes=info.hblkhd,
        mmapped_blocks=info.hblks,
        in_use_bytes=info.uordblks,
        free_bytes=info.fordblks,
    )


def mallopt(option: int, value: int) -> bool:
    """glibc's mallopt: True when applied, False on another libc or a refused value."""
    libc = _libc()
    return libc is not None and libc.mallopt(option, value) == 1


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): every whole free page of the heaps goes back to the kernel (not
    only the top of the heap). True when some memory was released."""
    libc = _libc()
    return libc is not None and libc.malloc_trim(0) == 1


@dataclass(frozen=True)
class AllocatorTuning:
    """glibc options for a long-running asyncio service (0: leave glibc's default).

    - `mmap_threshold_bytes`: allocations this large get their own mapping, unmapped when freed.
      Set explicitly, it also turns off glibc's dynamic threshold, which rises to the size of
      every large block freed (up to 32 MiB): after that, Kafka fetch responses and TLS
      buffers of a few hundred KiB to a few MiB are carved from the heap and leave it
      fragmented once freed.
    - `arena_max`: at most this many heaps. The event loop allocates from one; the few helper
      threads (DNS, the database driver's monitors) would otherwise each get an arena of
      their own that stays partly used.
    - `trim_interval_s`: how often `malloc_trim` hands the heaps' whole free pages back.
    """

    mmap_threshold_bytes: int = 128 * 1024
    arena_max: int = 2
    trim_interval_s: float = 10.0


def tune_allocator(tuning: AllocatorTuning) -> dict[str, bool]:
    """Apply the options (at start-up, before the service allocates much): which were set."""
    applied: dict[str, bool] = {}
    if tuning.mmap_threshold_bytes:
        applied["mmap_threshold"] = mallopt(M_MMAP_THRESHOLD, tuning.mmap_threshold_bytes)
    if tuning.arena_max:
        applied["arena_max"] = mallopt(M_ARENA_MAX, tuning.arena_max)
    return applied


async def trim_heap_forever(interval_s: float) -> None:
    """A worker: `malloc_trim` every `interval_s`. Freed memory in the middle of the heap is
    otherwise kept (glibc only gives back the top of the heap); a trim of a 24 MB heap with 16 MB
    free in ~1 KB holes took 0.2-0.4 ms of the event loop."""
    while True:
        await asyncio.sleep(interval_s)
        malloc_trim()
