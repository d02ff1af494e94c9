"""Deferred work (status webhooks, retries, upgrades, reviews) run at due times on the injected
clock.

One background task pops a heap; with a manual clock it sleeps until the clock is advanced, with the
system clock until the head item is due. Callbacks are plain functions and must not block.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import structlog

from tools.metasim.clock import Clock

log = structlog.get_logger("metasim.timeline")


class Timeline:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        clock.on_advance(self._wake.set)

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, due: float, fn: Callable[..., Any], *args: Any) -> None:
        item = (due, next(self._seq), fn, args)
        heapq.heappush(self._heap, item)
        if self._heap[0] is item:
            self._wake.set()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.call_at(self._clock.monotonic() + delay, fn, *args)

    def clear(self) -> None:
        self._heap.clear()

    async def run(self) -> None:
        heap = self._heap
        ran = 0
        while True:
            if heap and heap[0][0] <= self._clock.monotonic():
                _, _, fn, args = heapq.heappop(heap)
                try:
                    fn(*args)
                except Exception:  # a bug in one callback must not stop every later webhook
                    log.exception("timeline_callback_failed", callback=getattr(fn, "__name__", "?"))
                ran += 1
                if ran % 200 == 0:
                    await asyncio.sleep(0)  # let request handlers run during a large backlog
                continue
            self._wake.clear()
            timeout = None
            if heap and not self._clock.is_manual:
                timeout = heap[0][0] - self._clock.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
