"""`tier_usage` knows a recipient by a keyed hash, never by the number: the tier window counts
hashes, what is stored is a hash, and the sender refuses to start outside development mode
without its own key."""

from __future__ import annotations

from functools import partial

import pytest
from pydantic import ValidationError

from services.sender.engine import EngineConfig
from services.sender.retention import sweep_tier_usage_once
from services.sender.settings import SenderSettings
from shared.clock import FakeClock
from shared.pseudonyms import keyed_hash
from shared.secrets import new_key
from tests.unit.sender.fakes import NUMBER_ID, Harness, phone_number

KEY = b"unit-tier-key"


async def test_the_tier_stores_and_counts_keyed_hashes_not_numbers() -> None:
    h = Harness(
        phone_number(messaging_limit="TIER_50"),
        config=EngineConfig(tier_key=partial(keyed_hash, key=KEY)),
    )
    try:
        numbers = [f"+4479{i:08}" for i in range(3)]
        await h.admit(*(h.event(n) for n in numbers), h.event(numbers[0]))
        await h.timer.advance(10.0)
        assert len(h.statuses("sent")) == 4
        stored = {recipient for _, recipient, _ in h.store.tier_usage.values()}
        assert stored == {keyed_hash(n, KEY) for n in numbers}  # one place per recipient
        assert not any(
            n in key or n.lstrip("+") in key for key in h.store.tier_usage for n in numbers
        )
    finally:
        await h.close()


async def test_places_another_sender_stored_as_hashes_count_for_the_same_recipients() -> None:
    h = Harness(
        phone_number(messaging_limit="TIER_50"),
        config=EngineConfig(tier_key=partial(keyed_hash, key=KEY)),
    )
    try:
        portfolio = h.phone_numbers.numbers[NUMBER_ID].portfolio_id
        taken = [f"+1555{i:07}" for i in range(50)]
        for number in taken:
            await h.store.record_tier_use(
                portfolio, keyed_hash(number, KEY), h.clock.now_ms() - 1000
            )
        # A recipient already in the window goes; a new one would need a 51st place.
        await h.admit(
            h.event(taken[7]), h.event("+447700000001", expires_at=h.clock.now_ms() + 60_000)
        )
        await h.timer.advance(90.0)
        assert sorted(c.status for c in h.published) == ["expired", "sent"]
    finally:
        await h.close()


def test_the_recipient_hash_key_has_a_default_only_in_development() -> None:
    assert SenderSettings(HALA_ENV="development").recipient_hash_key_bytes()
    with pytest.raises(ValidationError, match="SENDER_RECIPIENT_HASH_KEY is a known default"):
        SenderSettings(HALA_ENV="production")
    given = SenderSettings(
        HALA_ENV="production",
        recipient_hash_key="k" * 32,
        HALA_TOKEN_KEYS=new_key(),
        KAFKA_SASL_USERNAME="hala-sender",
        KAFKA_SASL_PASSWORD="a-sender-password-0123456789",
    )
    assert given.recipient_hash_key_bytes() == b"k" * 32


class _Store:
    def __init__(self) -> None:
        self.cutoffs: list[int] = []

    async def delete_tier_usage_before(self, cutoff_ms: int) -> int:
        self.cutoffs.append(cutoff_ms)
        return 3


async def test_entries_past_the_window_are_deleted() -> None:
    store, clock = _Store(), FakeClock(start_ms=1_764_000_000_000)
    assert await sweep_tier_usage_once(store, clock, 25 * 3_600_000) == 3
    assert store.cutoffs == [1_764_000_000_000 - 25 * 3_600_000]
