"""A small in-memory cache with a time to live, on an injected clock (fake in tests)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

import msgspec

from shared.clock import Clock

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class TtlCache(Generic[K, V]):
    """Entries expire `ttl_seconds` after they were stored. `None` is a value like any other:
    caching "not found" spares the database from callers retrying with a wrong key."""

    def __init__(
        self,
        clock: Clock,
        ttl_seconds: float,
        max_entries: int = 100_000,
        max_ttl_seconds: float = 24 * 3600,
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._max_ttl = max_ttl_seconds
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

    def put(self, key: K, value: V, ttl_seconds: float | None = None) -> None:
        """Store `value` for the cache's time to live, or for `ttl_seconds` when given (an
        entry whose lifetime depends on its value, e.g. a window until it closes)."""
        ttl = self._ttl if ttl_seconds is None else min(ttl_seconds, self._max_ttl)
        if ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude, but bounded; a full cache only costs lookups
        self._entries[key] = (self._clock.monotonic() + ttl, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)


MISSING = _MISSING


# What an entry of RecentMessages costs beyond its payload: the id string, the tuple, the
# float and the ordered dict's slot (tracemalloc over 20,000 entries: ~290 bytes).
ENTRY_OVERHEAD = 288
DEFAULT_RECENT_MAX_BYTES = 8 * 1024 * 1024
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def _cost(entry: tuple[float, str, bytes]) -> int:
    return len(entry[2]) + ENTRY_OVERHEAD


class RecentMessages:
    """The messages this process accepted in the last `ttl_seconds`, so that a client reading
    its message right after the 202 sees it before status has stored the document (status
    creates it from the published event, normally within milliseconds). Oldest out first;
    bounded in count and in bytes, since a burst must not cost unbounded memory.

    Each is kept as its msgpack bytes (datetimes round-trip exactly), decoded only when read:
    ~730 bytes a message against ~1.9 KB as a dict (and no containers for the garbage
    collector to walk). A campaign accepted at ~630/s filled the 20,000 of the count bound and
    put ingest's peak at 145 MB, 50 MB above its e2e peak (bench/README.md, "campaign")."""

    def __init__(
        self,
        clock: Clock,
        ttl_seconds: float,
        max_entries: int = 20_000,
        max_bytes: int = DEFAULT_RECENT_MAX_BYTES,
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        # message id -> (expires, account id, the document's msgpack bytes)
        self._entries: OrderedDict[str, tuple[float, str, bytes]] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        """What the entries are counted as against `max_bytes` (payload + ENTRY_OVERHEAD each)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, doc: dict[str, Any]) -> None:
        now = self._clock.monotonic()
        payload = _ENCODER.encode(doc)
        earlier = self._entries.pop(doc["_id"], None)
        if earlier is not None:
            self._bytes -= _cost(earlier)
        entry = (now + self._ttl, doc["account_id"], payload)
        self._entries[doc["_id"]] = entry
        self._bytes += _cost(entry)
        self._drop_old(now)

    def get(self, account_id: str, message_id: str) -> dict[str, Any] | None:
        self._drop_old(self._clock.monotonic())
        entry = self._entries.get(message_id)
        if entry is None or entry[1] != account_id:
            return None
        doc: dict[str, Any] = _DECODER.decode(entry[2])
        return doc

    def _drop_old(self, now: float) -> None:
        entries = self._entries
        while entries and (
            len(entries) > self._max
            or self._bytes > self._max_bytes
            or next(iter(entries.values()))[0] <= now
        ):
            _, entry = entries.popitem(last=False)
            self._bytes -= _cost(entry)
