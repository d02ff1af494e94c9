"""The lookup cache: answers within the TTL come from memory, then from the source again; the
memory of recently accepted messages, bounded by time, count and bytes."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.ingest.cache import ENTRY_OVERHEAD, MISSING, RecentMessages, TtlCache
from services.ingest.repository import CachedDirectory
from shared.clock import FakeClock
from tests.unit.ingest.fakes import two_accounts


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int | None] = TtlCache(clock, ttl_seconds=5)
    cache.put("a", 1)
    cache.put("none", None)
    clock.advance(4.9)
    assert cache.get("a") == 1 and cache.get("none") is None
    clock.advance(0.1)
    assert cache.get("a") is MISSING and cache.get("none") is MISSING


def test_a_zero_ttl_caches_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(FakeClock(), ttl_seconds=0)
    cache.put("a", 1)
    assert cache.get("a") is MISSING


async def test_unknown_keys_are_cached_too_so_retries_spare_the_database() -> None:
    source = two_accounts()
    directory = CachedDirectory(source, FakeClock(), ttl_seconds=5)
    assert await directory.api_key("nope") is None
    assert await directory.api_key("nope") is None
    assert source.reads == 1


async def test_a_fresh_balance_read_bypasses_and_refreshes_the_cache() -> None:
    source = two_accounts()
    directory = CachedDirectory(source, FakeClock(), ttl_seconds=5)
    assert (await directory.balance("acc_a"))["available"] == 50_000_000
    source.balances["acc_a"]["available"] = 7
    assert (await directory.balance("acc_a"))["available"] == 50_000_000
    assert (await directory.balance("acc_a", fresh=True))["available"] == 7
    assert (await directory.balance("acc_a"))["available"] == 7


async def test_spending_lowers_only_the_cached_copy() -> None:
    source = two_accounts()
    directory = CachedDirectory(source, FakeClock(), ttl_seconds=5)
    await directory.balance("acc_a")
    directory.note_spent("acc_a", 1_000)
    assert (await directory.balance("acc_a"))["available"] == 50_000_000 - 1_000
    assert source.balances["acc_a"]["available"] == 50_000_000


class _GatedSource:
    """A directory whose reads wait for a gate, so that requests can miss concurrently."""

    def __init__(self) -> None:
        self.inner = two_accounts()
        self.gate = asyncio.Event()

    @property
    def reads(self) -> int:
        return self.inner.reads

    async def api_key(self, key_hash: str):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        return await self.inner.api_key(key_hash)

    async def balance(self, account_id: str):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        return await self.inner.balance(account_id)


async def test_concurrent_misses_share_one_read() -> None:
    source = _GatedSource()
    directory = CachedDirectory(source, FakeClock(), ttl_seconds=5)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(directory.api_key("nope")) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == [None] * 20
    assert source.reads == 1


async def test_a_fresh_balance_read_never_joins_an_older_read() -> None:
    source = _GatedSource()
    directory = CachedDirectory(source, FakeClock(), ttl_seconds=5)  # type: ignore[arg-type]
    cached = asyncio.ensure_future(directory.balance("acc_a"))
    fresh = asyncio.ensure_future(directory.balance("acc_a", fresh=True))
    await asyncio.sleep(0)
    source.gate.set()
    await asyncio.gather(cached, fresh)
    assert source.reads == 2


def _accepted(message_id: str, account_id: str = "acc_a") -> dict[str, Any]:
    at = datetime(2026, 12, 7, 1, 2, 3, 456_000, tzinfo=UTC)
    return {
        "_id": message_id,
        "account_id": account_id,
        "recipient": "+447400000001",
        "content": '{"name":"receipt"}',
        "history": [{"status": "accepted", "at": at, "source": "ingest"}],
        "created_at": at,
        "expires_at": at,
    }


def test_a_recent_message_reads_back_as_accepted_for_its_account_only() -> None:
    recent = RecentMessages(FakeClock(), ttl_seconds=30)
    doc = _accepted("msg_1")
    recent.remember(doc)
    back = recent.get("acc_a", "msg_1")
    assert back == doc and back is not doc
    assert back is not None and back["created_at"].tzinfo is UTC  # iso() needs UTC datetimes
    assert recent.get("acc_b", "msg_1") is None
    assert recent.get("acc_a", "msg_2") is None


def test_recent_messages_expire_after_their_ttl() -> None:
    clock = FakeClock()
    recent = RecentMessages(clock, ttl_seconds=30)
    recent.remember(_accepted("msg_1"))
    clock.advance(29.9)
    assert recent.get("acc_a", "msg_1") is not None
    clock.advance(0.1)
    assert recent.get("acc_a", "msg_1") is None
    assert len(recent) == 0 and recent.size_bytes == 0


def test_recent_messages_are_bounded_by_bytes_oldest_out_first() -> None:
    one = len(msgspec.msgpack.encode(_accepted("msg_0000"))) + ENTRY_OVERHEAD
    recent = RecentMessages(FakeClock(), ttl_seconds=30, max_entries=1_000, max_bytes=10 * one)
    for i in range(25):
        recent.remember(_accepted(f"msg_{i:04d}"))
    assert len(recent) == 10 and recent.size_bytes == 10 * one
    assert recent.get("acc_a", "msg_0014") is None
    assert recent.get("acc_a", "msg_0015") is not None
    assert recent.get("acc_a", "msg_0024") is not None


def test_recent_messages_are_bounded_by_count_and_count_a_repeat_once() -> None:
    recent = RecentMessages(FakeClock(), ttl_seconds=30, max_entries=3)
    for i in range(5):
        recent.remember(_accepted(f"msg_{i}"))
    recent.remember(_accepted("msg_4"))
    one = len(msgspec.msgpack.encode(_accepted("msg_0"))) + ENTRY_OVERHEAD
    assert len(recent) == 3 and recent.size_bytes == 3 * one
    assert recent.get("acc_a", "msg_1") is None and recent.get("acc_a", "msg_2") is not None
