"""ingest's request rate limits and its early refusal at the cap on messages in flight, on the
real broker and database: limits set as `hala` sets them, balances as billing writes them, and
nothing published for a refused request."""

from __future__ import annotations

from typing import Any

import orjson

from services.admin import commands, core
from shared.collections import BALANCES
from shared.messages import SEND_REQUESTED
from tests.integration.ingest.conftest import PHONE_A, Platform
from tests.integration.ingest.kafka_probe import published_count


def reminder() -> dict[str, Any]:
    return {
        "from": PHONE_A,
        "to": "+447912345678",
        "type": "template",
        "template": {
            "name": "appointment_reminder",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Monday"},
                        {"type": "text", "text": "10:00"},
                    ],
                }
            ],
        },
    }


async def _post(p: Platform, path: str = "/v1/messages", body: Any = None) -> Any:
    return await p.client.post(
        path,
        data=orjson.dumps(body or reminder()),
        headers={**p.a.auth, "Content-Type": "application/json"},
    )


async def _meta_post(p: Platform) -> Any:
    body = {
        "messaging_product": "whatsapp",
        "to": "447912345678",
        "type": "text",
        "text": {"body": "hello"},
    }
    return await _post(p, f"/v24.0/{PHONE_A}/messages", body)


async def test_an_accounts_own_rate_limit_refuses_the_excess_and_publishes_none_of_it(
    platform: Platform,
) -> None:
    p = platform
    # A slow refill: the test never earns a second token while it runs.
    await commands.update_account(p.db, p.a.account_id, rate_limit=core.rate_limit("1/min", 2))
    answers = [await _post(p) for _ in range(3)]
    assert [r.status for r in answers] == [202, 202, 429]
    assert answers[0].headers["RateLimit-Policy"] == '"account";q=2;w=120'
    assert answers[1].headers["RateLimit"].startswith('"account";r=0;t=')
    refused = answers[2]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["RateLimit"] == f'"account";r=0;t={retry_after}'
    assert (await refused.json())["error"]["code"] == "rate_limited"
    meta = await _meta_post(p)
    assert meta.status == 429 and (await meta.json())["error"]["code"] == 80007
    assert await published_count(p.kafka, SEND_REQUESTED, p.prefix) == 2
    # The other account is not held back by this one.
    other = await p.client.get("/v1/balance", headers=p.b.auth)
    assert other.status == 200 and other.headers["RateLimit"].startswith('"account";r=9999;')


async def test_a_keys_own_limit_holds_that_key_only(platform: Platform) -> None:
    p = platform
    slow_key, _ = await commands.issue_key(
        p.db, account_id=p.a.account_id, name="batch", rate_limit=core.rate_limit("1/min", 1)
    )
    slow = {"Authorization": f"Bearer {slow_key}", "Content-Type": "application/json"}
    first = await p.client.post("/v1/messages", data=orjson.dumps(reminder()), headers=slow)
    second = await p.client.post("/v1/messages", data=orjson.dumps(reminder()), headers=slow)
    assert (first.status, second.status) == (202, 429)
    assert (await second.json())["error"]["details"]["policy"] == "key"
    assert (await _post(p)).status == 202  # the account's other key still goes


async def test_at_the_cap_billing_keeps_ingest_answers_429_before_publishing(
    platform: Platform,
) -> None:
    p = platform
    # billing's count and cap, as it writes them on the balance.
    await p.db[BALANCES].update_one(
        {"_id": p.a.account_id}, {"$set": {"in_flight": 3, "in_flight_limit": 3}}
    )
    refused = await _post(p)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    error = (await refused.json())["error"]
    assert error["code"] == "too_many_in_flight"
    assert (error["details"]["in_flight"], error["details"]["limit"]) == (3, 3)
    assert await published_count(p.kafka, SEND_REQUESTED, p.prefix) == 0
    await p.db[BALANCES].update_one({"_id": p.a.account_id}, {"$set": {"in_flight": 2}})
    assert (await _post(p)).status == 202
