"""Clocks the simulator reads time from.

Everything time-dependent (token buckets, windows, webhook schedules) reads one injected clock, so
tests can freeze and jump time instead of sleeping, and the control API can fast-forward a running
simulator (e.g. past a 24 h customer-service window).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SystemClock:
    """Real time plus an offset that `advance` can only grow."""

    is_manual = False

    def __init__(self) -> None:
        self._offset = 0.0
        self._listeners: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def wall(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += seconds
        for listener in self._listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Called after every jump, so sleepers can re-check their deadlines."""
        self._listeners.append(listener)


class ManualClock:
    """Frozen time that moves only when a test (or the control API) advances it."""

    is_manual = True

    def __init__(self, monotonic: float = 1_000.0, wall: float = 1_767_225_600.0) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._listeners: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._monotonic += seconds
        self._wall += seconds
        for listener in self._listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)


Clock = SystemClock | ManualClock
