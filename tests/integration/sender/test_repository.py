"""The sender's repository against the real database, and the unit tests' FakeStore held to the
same contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.sender.repository import PhoneNumberDirectory, SenderRepository
from shared.clock import FakeClock
from shared.collections import PHONE_NUMBERS
from shared.secrets import TokenVault, new_key
from tests.unit.sender.fakes import FakeStore

KEY = new_key()


@pytest.fixture(params=["mongodb", "fake"])
async def store(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeStore()
        return
    name = f"it_{unique}"
    yield SenderRepository(mongo[name], TokenVault(KEY))
    await mongo.drop_database(name)


async def test_the_first_start_wins_and_later_ones_see_its_record(store: Any) -> None:
    assert await store.start_send("m1", phone_number_id="p", account_id="a", now_ms=1) is None
    again = await store.start_send("m1", phone_number_id="p", account_id="a", now_ms=2)
    assert again is not None and again.state == "sending"
    await store.update_send("m1", state="sent", attempts=1, now_ms=3, wamid="wamid.1")
    record = await store.find_send("m1")
    assert record is not None and (record.state, record.wamid, record.attempts) == (
        "sent",
        "wamid.1",
        1,
    )
    replay = await store.start_send("m1", phone_number_id="p", account_id="a", now_ms=4)
    assert replay is not None and replay.state == "sent"


async def test_concurrent_starts_of_one_message_let_exactly_one_through(store: Any) -> None:
    results = await asyncio.gather(
        *(store.start_send("m2", phone_number_id="p", account_id="a", now_ms=i) for i in range(20))
    )
    assert sum(1 for r in results if r is None) == 1


async def test_an_abandoned_start_can_be_started_again_but_an_outcome_is_never_abandoned(
    store: Any,
) -> None:
    await store.start_send("m3", phone_number_id="p", account_id="a", now_ms=1)
    await store.abandon_send("m3")
    assert await store.find_send("m3") is None
    assert await store.start_send("m3", phone_number_id="p", account_id="a", now_ms=2) is None
    await store.update_send(
        "m3",
        state="failed",
        attempts=1,
        now_ms=3,
        error={"code": 132001, "title": "t", "details": "d"},
    )
    await store.abandon_send("m3")
    record = await store.find_send("m3")
    assert record is not None and record.error == {"code": 132001, "title": "t", "details": "d"}


async def test_an_attempts_outcome_is_what_its_record_says_and_only_unknown_gives_way(
    store: Any,
) -> None:
    assert await store.start_send("m5", phone_number_id="p", account_id="a", now_ms=1) is None
    assert (
        await store.record_outcome(
            "m5",
            "unknown",
            phone_number_id="p",
            account_id="a",
            attempts=1,
            now_ms=2,
            reason="meta_outcome_ambiguous",
        )
        is None
    )
    assert (
        await store.record_outcome(
            "m5", "sent", phone_number_id="p", account_id="a", attempts=1, now_ms=3, wamid="wamid.5"
        )
        is None
    )
    kept = await store.record_outcome(
        "m5",
        "failed",
        phone_number_id="p",
        account_id="a",
        attempts=2,
        now_ms=4,
        error={"code": 131000, "title": "t", "details": "d"},
    )
    assert kept is not None and (kept.state, kept.wamid) == ("sent", "wamid.5")
    record = await store.find_send("m5")
    assert record is not None and (record.state, record.wamid, record.attempts) == (
        "sent",
        "wamid.5",
        1,
    )
    replay = await store.start_send("m5", phone_number_id="p", account_id="a", now_ms=5)
    assert replay is not None and replay.state == "sent"


async def test_concurrent_outcomes_of_many_messages_are_each_recorded(store: Any) -> None:
    ids = [f"m6-{i}" for i in range(150)]
    await asyncio.gather(
        *(store.start_send(m, phone_number_id="p", account_id="a", now_ms=1) for m in ids)
    )
    results = await asyncio.gather(
        *(
            store.record_outcome(
                m,
                "sent",
                phone_number_id="p",
                account_id="a",
                attempts=1,
                now_ms=2,
                wamid=f"wamid.{m}",
            )
            for m in ids
        )
    )
    assert results == [None] * len(ids)
    records = await asyncio.gather(*(store.find_send(m) for m in ids))
    assert [(r.state, r.wamid) for r in records] == [("sent", f"wamid.{m}") for m in ids]


async def test_an_unsent_outcome_is_recorded_once(store: Any) -> None:
    assert (
        await store.record_unsent_outcome(
            "m4",
            "expired",
            phone_number_id="p",
            account_id="a",
            now_ms=1,
            reason="validity_expired",
        )
        is None
    )
    earlier = await store.record_unsent_outcome(
        "m4", "failed", phone_number_id="p", account_id="a", now_ms=2
    )
    assert earlier is not None and (earlier.state, earlier.reason) == (
        "expired",
        "validity_expired",
    )


async def test_tier_usage_past_the_window_is_deleted(store: Any) -> None:
    await store.record_tier_use("pf1", "hmac-sha256:aa", 100)
    await store.record_tier_use("pf1", "hmac-sha256:bb", 300)
    await store.record_tier_use("pf2", "hmac-sha256:cc", 99)
    assert await store.delete_tier_usage_before(200) == 2
    assert await store.load_tier_usage("pf1", since_ms=0) == [("hmac-sha256:bb", 300)]
    assert await store.load_tier_usage("pf2", since_ms=0) == []
    assert await store.delete_tier_usage_before(200) == 0


async def test_tier_usage_is_per_portfolio_and_keeps_the_latest_time(store: Any) -> None:
    await store.record_tier_use("pf1", "+1", 100)
    await store.record_tier_use("pf1", "+1", 300)
    await store.record_tier_use("pf1", "+2", 50)
    await store.record_tier_use("pf2", "+3", 500)
    assert sorted(await store.load_tier_usage("pf1", since_ms=60)) == [("+1", 300)]
    assert sorted(await store.load_tier_usage("pf1", since_ms=0)) == [("+1", 300), ("+2", 50)]


@pytest.fixture
async def database(mongo: AsyncMongoClient[dict[str, Any]], unique: str) -> AsyncIterator[Any]:
    name = f"it_{unique}"
    yield mongo[name]
    await mongo.drop_database(name)


async def test_phone_numbers_are_read_with_their_token_decrypted_and_defaults_applied(
    database: Any,
) -> None:
    vault = TokenVault(KEY)
    await database[PHONE_NUMBERS].insert_many(
        [
            {
                "_id": "1",
                "account_id": "acc",
                "waba_id": "w",
                "portfolio_id": "pf",
                "access_token_encrypted": vault.encrypt("EAA-secret"),
            },
            {
                "_id": "2",
                "account_id": "acc",
                "waba_id": "w",
                "portfolio_id": "pf",
                "access_token_encrypted": TokenVault(new_key()).encrypt("other"),
                "throughput_mps": 20,
                "messaging_limit": "TIER_2K",
                "status": "held",
            },
        ]
    )
    repository = SenderRepository(database, vault)
    first = await repository.load_phone_number("1")
    assert first is not None
    assert (first.access_token, first.throughput_mps, first.messaging_limit, first.status) == (
        "EAA-secret",
        80,
        "TIER_UNLIMITED",
        "active",
    )
    assert "EAA-secret" not in repr(first)
    second = await repository.load_phone_number("2")
    assert second is not None and second.access_token is None
    assert second.token_problem == "token_key_mismatch"
    assert (second.throughput_mps, second.messaging_limit, second.status) == (20, "TIER_2K", "held")
    assert await repository.load_phone_number("3") is None


async def test_the_directory_sees_a_replaced_token_after_its_refresh_interval(
    database: Any,
) -> None:
    vault = TokenVault(KEY)
    await database[PHONE_NUMBERS].insert_one(
        {"_id": "1", "portfolio_id": "pf", "access_token_encrypted": vault.encrypt("old")}
    )
    clock = FakeClock()
    directory = PhoneNumberDirectory(SenderRepository(database, vault), clock, refresh_seconds=30)
    assert (await directory.get("1")).access_token == "old"  # type: ignore[union-attr]
    await database[PHONE_NUMBERS].update_one(
        {"_id": "1"}, {"$set": {"access_token_encrypted": vault.encrypt("new")}}
    )
    clock.advance(10)
    assert (await directory.get("1")).access_token == "old"  # type: ignore[union-attr]
    clock.advance(25)
    assert (await directory.get("1")).access_token == "new"  # type: ignore[union-attr]
