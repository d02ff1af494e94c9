"""The lookup cache: answers within the TTL come from memory, then from the source again."""

import asyncio

from services.ingest.cache import MISSING, TtlCache
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
