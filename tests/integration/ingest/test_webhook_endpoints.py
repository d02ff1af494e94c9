"""The webhook endpoint API on the real database and broker: an endpoint's life (create, list,
patch, rotate, delete) as stored, accounts kept apart, notify's health and attempts read from
its collections, and test/replay requests published to notify's topic."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.conversations import Cursor
from services.ingest.endpoint_store import MongoEndpointStore
from shared.collections import DELIVERY_ATTEMPTS, ENDPOINT_STATES, WEBHOOK_ENDPOINTS
from shared.messages import NOTIFY_REQUESTED
from tests.integration.ingest.conftest import Platform, Tenant
from tests.integration.ingest.kafka_probe import read_published

pytestmark = pytest.mark.integration

BASE = "/v1/webhook-endpoints"
DAY_MS = 24 * 3600 * 1000


async def _json(
    platform: Platform, method: str, path: str, tenant: Tenant, body: Any = None, status: int = 200
) -> Any:
    resp = await platform.client.request(method, path, json=body, headers=tenant.auth)
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


async def test_an_endpoints_life_through_the_api_as_stored(platform: Platform) -> None:
    a = platform.a
    created = await _json(
        platform,
        "POST",
        BASE,
        a,
        {
            "url": "http://127.0.0.1:9/hook",
            "events": ["message.*", "balance.low"],
            "description": "CRM",
        },
        status=201,
    )
    endpoint_id, secret = created["endpoint"]["id"], created["secret"]
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None
    assert (stored["account_id"], stored["url"], stored["events"], stored["format"]) == (
        a.account_id,
        "http://127.0.0.1:9/hook",
        ["message.*", "balance.low"],
        "standard",
    )
    assert stored["enabled"] is True and stored["deleted_at"] is None
    assert isinstance(stored["enabled_at"], int) and stored["enabled_at"] == stored["created_at"]
    [entry] = stored["secrets"]
    assert platform.vault.decrypt(entry["encrypted"]) == secret
    assert secret not in repr(stored)

    listed = await _json(platform, "GET", BASE, a)
    assert [e["id"] for e in listed["data"]] == [endpoint_id]
    assert listed["data"][0] == created["endpoint"]

    changed = await _json(
        platform, "PATCH", f"{BASE}/{endpoint_id}", a, {"events": ["*"], "enabled": False}
    )
    assert changed["events"] == ["*"] and changed["enabled"] is False
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None and stored["events"] == ["*"] and stored["enabled"] is False

    rotated = await _json(platform, "POST", f"{BASE}/{endpoint_id}/rotate-secret", a)
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None
    old, new = stored["secrets"]
    assert [platform.vault.decrypt(s["encrypted"]) for s in (old, new)] == [
        secret,
        rotated["secret"],
    ]
    assert old["expires_at"] == new["created_at"] + DAY_MS and new["expires_at"] is None

    await _json(platform, "DELETE", f"{BASE}/{endpoint_id}", a, status=204)
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None and stored["deleted_at"] is not None
    assert stored["enabled"] is False
    await _json(platform, "GET", f"{BASE}/{endpoint_id}", a, status=404)
    assert (await _json(platform, "GET", BASE, a))["data"] == []


async def test_accounts_never_see_each_others_endpoints(platform: Platform) -> None:
    a, b = platform.a, platform.b
    mine = (
        await _json(
            platform,
            "POST",
            BASE,
            a,
            {"url": "https://hooks.example.com/a", "events": ["*"]},
            status=201,
        )
    )["endpoint"]
    theirs = (
        await _json(
            platform,
            "POST",
            BASE,
            b,
            {"url": "https://hooks.example.com/b", "events": ["*"]},
            status=201,
        )
    )["endpoint"]
    assert [e["id"] for e in (await _json(platform, "GET", BASE, a))["data"]] == [mine["id"]]
    assert [e["id"] for e in (await _json(platform, "GET", BASE, b))["data"]] == [theirs["id"]]
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"enabled": False}),
        ("DELETE", "", None),
        ("POST", "/test", None),
        ("POST", "/rotate-secret", None),
        ("GET", "/deliveries", None),
        ("POST", "/replay", {"event_id": "evt_1"}),
    ):
        await _json(platform, method, f"{BASE}/{theirs['id']}{suffix}", a, body, status=404)
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": theirs["id"]})
    assert stored is not None and stored["enabled"] is True and len(stored["secrets"]) == 1
    assert await read_published(platform.kafka, NOTIFY_REQUESTED, platform.prefix) == []


async def test_test_and_replay_requests_reach_notifys_topic(platform: Platform) -> None:
    a = platform.a
    endpoint_id = (
        await _json(
            platform,
            "POST",
            BASE,
            a,
            {"url": "https://hooks.example.com/a", "events": ["message.*"]},
            status=201,
        )
    )["endpoint"]["id"]
    test = await _json(platform, "POST", f"{BASE}/{endpoint_id}/test", a, status=202)
    ranged = await _json(
        platform,
        "POST",
        f"{BASE}/{endpoint_id}/replay",
        a,
        {"since": "2025-11-24T10:00:00Z", "until": "2025-11-24T11:00:00Z"},
        status=202,
    )
    one = await _json(
        platform,
        "POST",
        f"{BASE}/{endpoint_id}/replay",
        a,
        {"event_id": "evt_01jf8z3v9j6q8w4t"},
        status=202,
    )
    records = await read_published(platform.kafka, NOTIFY_REQUESTED, platform.prefix)
    events = sorted(
        (NOTIFY_REQUESTED.decode(r.value) for r in records), key=lambda e: e.requested_at
    )
    assert {r.key for r in records} == {a.account_id.encode()}  # one account, in order
    assert [e.event_id for e in events] == [
        test["request_id"],
        ranged["request_id"],
        one["request_id"],
    ]
    assert [(e.kind, e.endpoint_id, e.account_id) for e in events] == [
        ("test", endpoint_id, a.account_id),
        ("replay", endpoint_id, a.account_id),
        ("replay", endpoint_id, a.account_id),
    ]
    assert (events[1].since, events[1].until) == (1_763_978_400_000, 1_763_982_000_000)
    assert events[2].replay_event_id == "evt_01jf8z3v9j6q8w4t"


async def test_health_and_attempts_are_read_from_notifys_collections(platform: Platform) -> None:
    a = platform.a
    endpoint_id = (
        await _json(
            platform,
            "POST",
            BASE,
            a,
            {"url": "https://hooks.example.com/a", "events": ["*"]},
            status=201,
        )
    )["endpoint"]["id"]
    stored = await platform.db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id})
    assert stored is not None
    enabled_at = stored["enabled_at"]
    # what notify writes when the endpoint answers 410, and its attempts
    await platform.db[ENDPOINT_STATES].insert_one(
        {
            "_id": endpoint_id,
            "disabled_at": enabled_at + 1,
            "disabled_reason": "gone",
            "failing_since": enabled_at,
            "last_success_at": None,
        }
    )
    await platform.db[DELIVERY_ATTEMPTS].insert_many(
        [
            {
                "_id": f"{endpoint_id}:evt_{n}:1",
                "endpoint_id": endpoint_id,
                "account_id": a.account_id,
                "event_id": f"evt_{n}",
                "event_type": "message.sent",
                "attempt": 1,
                "at": enabled_at + 1000 * n,
                "outcome": "failed",
                "http_status": 410 if n == 5 else 500,
                "latency_ms": 12.5,
                "error": "HTTP error",
            }
            for n in range(1, 6)
        ]
    )
    shown = await _json(platform, "GET", f"{BASE}/{endpoint_id}", a)
    assert shown["receiving"] is False and shown["health"]["disabled_reason"] == "gone"
    page = await _json(platform, "GET", f"{BASE}/{endpoint_id}/deliveries?limit=3", a)
    assert [d["event_id"] for d in page["data"]] == ["evt_5", "evt_4", "evt_3"]
    assert page["data"][0]["http_status"] == 410
    rest = await _json(
        platform, "GET", f"{BASE}/{endpoint_id}/deliveries?limit=3&cursor={page['next_cursor']}", a
    )
    assert [d["event_id"] for d in rest["data"]] == ["evt_2", "evt_1"]
    assert rest["next_cursor"] is None
    # the client enables it again: receiving, without any write to notify's state
    again = await _json(platform, "PATCH", f"{BASE}/{endpoint_id}", a, {"enabled": True})
    assert again["receiving"] is True and again["health"]["disabled"] is False
    assert await platform.db[ENDPOINT_STATES].find_one({"_id": endpoint_id}) is not None


async def test_the_store_pages_by_time_then_id(platform: Platform) -> None:
    """The store's cursor queries on the real database (FerretDB), as the fake does them."""
    store = MongoEndpointStore(platform.db)
    docs = [
        {
            "_id": f"we_{n:026d}",
            "account_id": "acc_x",
            "created_at": 1000 + n // 2,
            "deleted_at": None,
            "secrets": [],
        }
        for n in range(6)
    ]
    docs.append(
        {"_id": "we_" + "9" * 26, "account_id": "acc_x", "created_at": 5000, "deleted_at": 6000}
    )
    for doc in docs:
        await store.insert(doc)
    assert await store.count_in_use("acc_x") == 6
    first = await store.page("acc_x", 4, None)
    assert [d["_id"][-1] for d in first] == ["5", "4", "3", "2", "1"]
    rest = await store.page("acc_x", 4, Cursor(first[3]["created_at"], first[3]["_id"]))
    assert [d["_id"][-1] for d in rest] == ["1", "0"]
    assert await store.states([d["_id"] for d in docs]) == {}
