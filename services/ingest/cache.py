"""A small in-memory cache with a time to live, on an injected clock (fake in tests)."""

from __future__ import annotations

from typing import Generic, TypeVar

from shared.clock import Clock

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class TtlCache(Generic[K, V]):
    """Entries expire `ttl_seconds` after they were stored. `None` is a value like any other:
    caching "not found" spares the database from callers retrying with a wrong key."""

    def __init__(self, clock: Clock, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | object:
        """The cached value, or `MISSING`."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        expires, value = entry
        if self._clock.monotonic() >= expires:
            del self._entries[key]
            return _MISSING
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude, but bounded; a full cache only costs lookups
        self._entries[key] = (self._clock.monotonic() + self._ttl, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)


MISSING = _MISSING
