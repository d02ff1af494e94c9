"""Request rate limits per account and per key: the token-bucket arithmetic (no real time: `now`
is passed in), which limit applies, the IETF fields, and the answers on both send routes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.ingest.core import hash_api_key
from services.ingest.limiter import RequestLimiter
from services.ingest.rate_limits import (
    ACCOUNT,
    KEY,
    Bucket,
    Limit,
    Rate,
    account_rate,
    admit,
    headers,
    key_rate,
    rate_of,
)
from shared.clock import FakeClock
from tests.unit.ingest.fakes import KEY_A, KEY_B, PHONE_A, World, auth, text_body

# --- the arithmetic --------------------------------------------------------------------------


def _one(rate: Rate, bucket: Bucket, now: float) -> Any:
    return admit([Limit(ACCOUNT, rate, bucket)], now)


def test_a_full_bucket_lets_its_burst_through_then_refuses_until_a_token_comes_back() -> None:
    rate = Rate(per_second=2, burst=4)
    bucket = Bucket.full(rate, 0.0)
    remaining = [_one(rate, bucket, 0.0).states[0].remaining for _ in range(4)]
    assert remaining == [3, 2, 1, 0]
    refused = _one(rate, bucket, 0.0)
    assert not refused.allowed and refused.violated == ACCOUNT
    assert refused.retry_after_seconds == 1  # half a second to the next token, in whole seconds
    assert not _one(rate, bucket, 0.4).allowed
    assert _one(rate, bucket, 0.5).allowed  # 0.5 s at 2/s: one token
    assert not _one(rate, bucket, 0.5).allowed


def test_a_refusal_takes_nothing_and_a_bucket_never_holds_more_than_its_burst() -> None:
    rate = Rate(per_second=10, burst=3)
    bucket = Bucket.full(rate, 0.0)
    for _ in range(3):
        assert _one(rate, bucket, 0.0).allowed
    for _ in range(50):  # hammering while empty does not push the next token further away
        assert not _one(rate, bucket, 0.05).allowed
    assert _one(rate, bucket, 0.1).allowed
    # An hour idle refills to the burst, not to 36,000 tokens.
    results = [_one(rate, bucket, 3600.0).allowed for _ in range(4)]
    assert results == [True, True, True, False]


def test_a_slow_limit_says_how_many_seconds_until_the_next_request() -> None:
    rate = Rate(per_second=0.1, burst=1)  # 6 per minute
    bucket = Bucket.full(rate, 0.0)
    assert _one(rate, bucket, 0.0).allowed
    refused = _one(rate, bucket, 2.0)
    assert refused.retry_after_seconds == 8
    assert headers(refused) == {
        "RateLimit-Policy": '"account";q=1;w=10',
        "RateLimit": '"account";r=0;t=8',
        "Retry-After": "8",
    }


def test_a_request_goes_only_when_both_its_account_and_its_key_have_a_token() -> None:
    account, key = Rate(100, 100), Rate(1, 2)
    account_bucket, key_bucket = Bucket.full(account, 0.0), Bucket.full(key, 0.0)

    def both(now: float) -> Any:
        return admit([Limit(ACCOUNT, account, account_bucket), Limit(KEY, key, key_bucket)], now)

    assert both(0.0).allowed and both(0.0).allowed
    refused = both(0.0)
    assert not refused.allowed and refused.violated == KEY
    assert refused.retry_after_seconds == 1
    assert account_bucket.tokens == 98  # the key's refusal took nothing from the account
    assert headers(refused)["RateLimit"] == '"account";r=98;t=1, "key";r=0;t=1'


def test_fields_of_an_allowed_request_name_each_policy_its_quota_and_when_it_is_full() -> None:
    rate = Rate(per_second=100, burst=200)
    bucket = Bucket.full(rate, 0.0)
    for _ in range(49):
        _one(rate, bucket, 0.0)
    fields = headers(_one(rate, bucket, 0.0))
    assert fields == {"RateLimit-Policy": '"account";q=200;w=2', "RateLimit": '"account";r=150;t=1'}


@pytest.mark.parametrize(
    "value",
    [
        None,
        "50/s",
        {"per_second": 5},
        {"burst": 3},
        {"per_second": 0, "burst": 3},
        {"per_second": -1, "burst": 3},
        {"per_second": 5, "burst": 0},
        {"per_second": True, "burst": 3},
        {"per_second": 5, "burst": 2.5},
        {"per_second": float("nan"), "burst": 3},
    ],
)
def test_an_unreadable_override_is_ignored_and_the_default_applies(value: Any) -> None:
    assert rate_of(value) is None
    default = Rate(100, 200)
    assert account_rate({"rate_limit": value}, default) == default
    assert key_rate({"rate_limit": value}, None) is None


def test_an_override_on_the_account_or_the_key_replaces_the_default() -> None:
    own = {"rate_limit": {"per_second": 2.5, "burst": 5}}
    assert account_rate(own, Rate(100, 200)) == Rate(2.5, 5)
    assert key_rate(own, None) == Rate(2.5, 5)
    assert key_rate({}, Rate(1, 1)) == Rate(1, 1)
    assert account_rate(None, Rate(100, 200)) == Rate(100, 200)


def test_the_limiter_keeps_a_bounded_number_of_buckets() -> None:
    clock = FakeClock()
    limiter = RequestLimiter(clock, account_default=Rate(1, 1), max_buckets=100)
    for i in range(1000):
        assert limiter.check(f"acc_{i}", None, f"key_{i}", None).allowed
    assert len(limiter) == 100
    # The most recent callers keep their (empty) buckets.
    assert not limiter.check("acc_999", None, "key_999", None).allowed


# --- over HTTP ---------------------------------------------------------------------------------


async def _post(world: World, body: Any, key: str = KEY_A) -> Any:
    return await world.client.post(
        "/v1/messages",
        data=orjson.dumps(body),
        headers={**auth(key), "Content-Type": "application/json"},
    )


async def _post_meta(world: World, key: str = KEY_A) -> Any:
    body = {
        "messaging_product": "whatsapp",
        "to": "447912345678",
        "type": "text",
        "text": {"body": "hi"},
    }
    return await world.client.post(
        f"/v24.0/{PHONE_A}/messages",
        data=orjson.dumps(body),
        headers={**auth(key), "Content-Type": "application/json"},
    )


async def test_an_account_over_its_rate_gets_429_with_retry_after_and_the_ietf_fields() -> None:
    async with World(rate_limit=Rate(per_second=1, burst=2)) as world:
        first, second = await _post(world, text_body()), await _post(world, text_body())
        assert (first.status, second.status) == (202, 202)
        assert first.headers["RateLimit-Policy"] == '"account";q=2;w=2'
        assert first.headers["RateLimit"] == '"account";r=1;t=1'
        assert second.headers["RateLimit"] == '"account";r=0;t=1'
        assert "Retry-After" not in second.headers
        refused = await _post(world, text_body())
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["RateLimit"] == '"account";r=0;t=1'
        error = (await refused.json())["error"]
        assert error["code"] == "rate_limited"
        assert error["details"] == {
            "policy": "account",
            "limit_per_second": 1.0,
            "burst": 2,
            "retry_after_seconds": 1,
        }
        assert len(world.publisher.events) == 2  # the refused request published nothing
        world.clock.advance(1.0)
        assert (await _post(world, text_body())).status == 202


async def test_accounts_have_their_own_buckets_and_an_override_changes_only_its_account() -> None:
    async with World(rate_limit=Rate(per_second=100, burst=100)) as world:
        world.directory.accounts["acc_a"]["rate_limit"] = {"per_second": 0.5, "burst": 1}
        assert (await _post(world, text_body())).status == 202
        refused = await _post(world, text_body())
        assert refused.status == 429 and refused.headers["Retry-After"] == "2"
        body_b = text_body(**{"from": "118243906275101"})
        answers = [(await _post(world, body_b, KEY_B)).status for _ in range(20)]
        assert answers == [202] * 20


async def test_a_key_with_its_own_limit_is_held_to_it_within_its_accounts_limit() -> None:
    async with World(rate_limit=Rate(per_second=100, burst=100)) as world:
        world.directory.api_keys[hash_api_key(KEY_A)]["rate_limit"] = {"per_second": 1, "burst": 1}
        ok = await _post(world, text_body())
        assert ok.headers["RateLimit-Policy"] == '"account";q=100;w=1, "key";q=1;w=1'
        refused = await _post(world, text_body())
        assert refused.status == 429
        assert (await refused.json())["error"]["details"]["policy"] == "key"


async def test_the_meta_route_refuses_in_metas_envelope_with_80007_and_the_same_fields() -> None:
    async with World(rate_limit=Rate(per_second=1, burst=1)) as world:
        ok = await _post_meta(world)
        assert ok.status == 200 and ok.headers["RateLimit"] == '"account";r=0;t=1'
        refused = await _post_meta(world)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["RateLimit-Policy"] == '"account";q=1;w=1'
        error = (await refused.json())["error"]
        assert error["code"] == 80007 and error["type"] == "OAuthException"
        assert error["error_data"]["details"].startswith("rate_limited: ")
        assert len(world.publisher.events) == 1


async def test_every_authenticated_route_counts_and_its_errors_carry_the_fields_too() -> None:
    async with World(rate_limit=Rate(per_second=1, burst=3)) as world:
        balance = await world.client.get("/v1/balance", headers=auth())
        assert balance.status == 200 and balance.headers["RateLimit"] == '"account";r=2;t=1'
        bad = await _post(world, text_body(to="not a number"))
        assert bad.status == 400 and bad.headers["RateLimit"] == '"account";r=1;t=2'
        listed = await world.client.get("/v1/webhook-endpoints", headers=auth())
        assert listed.status == 200 and listed.headers["RateLimit"] == '"account";r=0;t=1'
        refused = await world.client.get("/v1/messages", headers=auth())
        assert refused.status == 429


async def test_requests_without_a_valid_key_are_refused_as_before_without_fields() -> None:
    async with World(rate_limit=Rate(per_second=1, burst=1)) as world:
        for headers_ in ({}, {"Authorization": "Bearer hw_live_unknown"}):
            for _ in range(3):
                resp = await world.client.post("/v1/messages", data=b"{}", headers=headers_)
                assert resp.status == 401
                assert "RateLimit" not in resp.headers
        assert (await _post(world, text_body())).status == 202  # nothing taken from acc_a


# --- the cap on messages in flight (billing's count, read with the balance) --------------------


async def test_at_its_in_flight_cap_an_account_is_refused_429_too_many_in_flight() -> None:
    async with World() as world:
        world.directory.balances["acc_a"].update(in_flight=5, in_flight_limit=5)
        refused = await _post(world, text_body())
        assert refused.status == 429 and refused.headers["Retry-After"] == "5"
        error = (await refused.json())["error"]
        assert error["code"] == "too_many_in_flight"
        assert error["details"] == {"in_flight": 5, "limit": 5, "retry_after_seconds": 5}
        meta = await _post_meta(world)
        assert meta.status == 429 and (await meta.json())["error"]["code"] == 80007
        assert world.publisher.events == []
        balance = await (await world.client.get("/v1/balance", headers=auth())).json()
        assert (balance["in_flight"], balance["max_in_flight"]) == (5, 5)
        # B has no cap set by billing: unaffected.
        ok = await _post(world, text_body(**{"from": "118243906275101"}), KEY_B)
        assert ok.status == 202


async def test_messages_this_process_accepted_count_until_billings_figure_is_read_again() -> None:
    async with World(ttl_seconds=5.0) as world:
        world.directory.balances["acc_a"].update(in_flight=1, in_flight_limit=3)
        answers = [(await _post(world, text_body())).status for _ in range(3)]
        assert answers == [202, 202, 429]
        # billing's next figure (two of them settled meanwhile) replaces the local count.
        world.directory.balances["acc_a"].update(in_flight=1)
        world.clock.advance(5.0)
        assert (await _post(world, text_body())).status == 202


async def test_routes_that_take_no_key_are_not_limited_even_with_one() -> None:
    async with World(rate_limit=Rate(per_second=1, burst=1)) as world:
        for path in ("/openapi.json", "/openapi.yaml", "/openapi.json"):
            resp = await world.client.get(path, headers=auth())
            assert resp.status == 200 and "RateLimit" not in resp.headers
        assert (await _post(world, text_body())).status == 202  # its one token is still there
