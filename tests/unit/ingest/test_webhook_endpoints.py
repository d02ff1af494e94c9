"""The webhook endpoint API through HTTP, over in-memory adapters: each rule answers with its
own code, secrets are shown once and stored encrypted, accounts never see each other's
endpoints, and test events and replays are published for notify."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
import pytest

from services.ingest import endpoint_schemas as schemas
from services.ingest.errors import ERROR_CODES
from services.ingest.openapi import EVENT_TYPES, event_schema_name, generated_schemas
from shared import webhook_endpoints as rules
from shared.client_events import EVENT_DATA
from tests.unit.ingest.fakes import KEY_A, KEY_B, KEY_REVOKED, VAULT, World, auth

BASE = "/v1/webhook-endpoints"
HOOK = "https://hooks.example.com/in"
DAY_MS = 24 * 3600 * 1000


async def _call(world: World, method: str, path: str, body: Any = None, key: str = KEY_A) -> Any:
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    return await world.client.request(
        method, path, data=data, headers={**auth(key), "Content-Type": "application/json"}
    )


async def _create(world: World, key: str = KEY_A, **overrides: Any) -> dict[str, Any]:
    resp = await _call(
        world, "POST", BASE, {"url": HOOK, "events": ["message.*"], **overrides}, key
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    msgspec.convert(created, schemas.WebhookEndpointWithSecret)  # the declared answer
    return created


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    error: dict[str, Any] = (await resp.json())["error"]
    return error


async def test_a_created_endpoint_shows_its_secret_once_and_stores_it_encrypted() -> None:
    async with World() as world:
        created = await _create(
            world, events=["message.*", "balance.low"], description="CRM", format="meta"
        )
        secret, view = created["secret"], created["endpoint"]
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
        assert re.fullmatch(r"we_[0-9a-z]{26}", view["id"])
        assert view["url"] == HOOK and view["events"] == ["message.*", "balance.low"]
        assert view["format"] == "meta" and view["description"] == "CRM"
        assert view["enabled"] is True and view["receiving"] is True
        assert view["created_at"] == "2025-11-24T16:00:00.000Z"
        assert view["health"]["disabled"] is False
        stored = world.endpoints.endpoints[view["id"]]
        assert stored["account_id"] == "acc_a" and stored["enabled_at"] == world.clock.now_ms()
        [entry] = stored["secrets"]
        assert secret not in repr(stored)  # only encrypted
        assert VAULT.decrypt(entry["encrypted"]) == secret
        assert view["secrets"] == [
            {"id": entry["id"], "created_at": view["created_at"], "expires_at": None}
        ]
        # never again: not in a read, not in the list
        shown = await (await _call(world, "GET", f"{BASE}/{view['id']}")).json()
        listed = await (await _call(world, "GET", BASE)).json()
        assert secret not in repr(shown) + repr(listed)
        assert entry["encrypted"] not in repr(shown) + repr(listed)
        assert shown == view


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{nope", 400, "malformed_json", None),
        ({"events": ["*"]}, 400, "invalid_field", "url"),
        ({"url": HOOK}, 400, "invalid_field", "events"),
        ({"url": HOOK, "events": []}, 400, "invalid_field", "events"),
        ({"url": HOOK, "events": ["*"], "colour": "red"}, 400, "unknown_field", "colour"),
        ({"url": HOOK, "events": ["*"], "format": "xml"}, 400, "invalid_field", "format"),
        ({"url": HOOK, "events": ["message.seen"]}, 400, "unknown_event_type", "events[0]"),
        ({"url": HOOK, "events": ["*", "bills.*"]}, 400, "unknown_event_type", "events[1]"),
        ({"url": "http://hooks.example.com/in", "events": ["*"]}, 400, "insecure_url", "url"),
        ({"url": "https://192.168.1.20/in", "events": ["*"]}, 400, "private_address", "url"),
        (
            {"url": "https://[::ffff:169.254.169.254]/", "events": ["*"]},
            400,
            "private_address",
            "url",
        ),
        ({"url": "https://a:b@hooks.example.com/", "events": ["*"]}, 400, "invalid_url", "url"),
        (
            {"url": HOOK, "events": ["*"], "description": "x" * 501},
            400,
            "invalid_field",
            "description",
        ),
    ],
)
async def test_a_bad_endpoint_is_refused_with_its_code(
    body: Any, status: int, code: str, field: str | None
) -> None:
    async with World() as world:
        error = await _error(await _call(world, "POST", BASE, body), status)
        assert error["code"] == code
        if field is not None:
            assert error["details"]["field"] == field
        assert world.endpoints.endpoints == {}


async def test_loopback_http_is_refused_outside_development() -> None:
    async with World() as world:
        assert (await _create(world, url="http://127.0.0.1:9000/hook"))["endpoint"]["url"]
        world.webhooks.allow_loopback_http = False
        resp = await _call(
            world, "POST", BASE, {"url": "http://127.0.0.1:9000/hook", "events": ["*"]}
        )
        assert (await _error(resp, 400))["code"] == "insecure_url"


async def test_an_account_keeps_at_most_twenty_endpoints() -> None:
    async with World() as world:
        for _ in range(rules.MAX_ENDPOINTS_PER_ACCOUNT):
            await _create(world)
        resp = await _call(world, "POST", BASE, {"url": HOOK, "events": ["*"]})
        assert (await _error(resp, 409))["code"] == "endpoint_limit_reached"
        # a deleted one makes room
        some = next(iter(world.endpoints.endpoints))
        assert (await _call(world, "DELETE", f"{BASE}/{some}")).status == 204
        await _create(world)


async def test_the_list_is_newest_first_in_pages_without_deleted_endpoints() -> None:
    async with World() as world:
        ids = []
        for _ in range(5):
            ids.append((await _create(world))["endpoint"]["id"])
            world.clock.advance(1)
        await _create(world, key=KEY_B)  # another account's
        assert (await _call(world, "DELETE", f"{BASE}/{ids[2]}")).status == 204
        first = await (await _call(world, "GET", f"{BASE}?limit=2")).json()
        msgspec.convert(first, schemas.WebhookEndpointPage)
        assert [e["id"] for e in first["data"]] == [ids[4], ids[3]]
        second = await (
            await _call(world, "GET", f"{BASE}?limit=2&cursor={first['next_cursor']}")
        ).json()
        assert [e["id"] for e in second["data"]] == [ids[1], ids[0]]
        assert second["next_cursor"] is None
        for query, code in (
            ("limit=0", "invalid_field"),
            ("cursor=zzz", "invalid_cursor"),
            ("page=2", "unknown_field"),
        ):
            assert (await _error(await _call(world, "GET", f"{BASE}?{query}"), 400))["code"] == code


async def test_the_health_notify_keeps_shows_until_the_client_enables_the_endpoint() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        world.clock.advance(60)
        world.endpoints.state_docs[endpoint_id] = {
            "_id": endpoint_id,
            "disabled_at": world.clock.now_ms(),
            "disabled_reason": "gone",
            "failing_since": world.clock.now_ms() - 30_000,
            "last_success_at": None,
        }
        shown = await (await _call(world, "GET", f"{BASE}/{endpoint_id}")).json()
        assert shown["enabled"] is True and shown["receiving"] is False
        assert shown["health"] == {
            "disabled": True,
            "disabled_reason": "gone",
            "disabled_at": "2025-11-24T16:01:00.000Z",
            "failing_since": "2025-11-24T16:00:30.000Z",
            "last_success_at": None,
        }
        listed = await (await _call(world, "GET", BASE)).json()
        assert listed["data"][0]["health"]["disabled"] is True
        world.clock.advance(1)
        resp = await _call(world, "PATCH", f"{BASE}/{endpoint_id}", {"enabled": True})
        assert resp.status == 200
        again = await resp.json()
        msgspec.convert(again, schemas.WebhookEndpointView)
        assert again["receiving"] is True and again["health"]["disabled"] is False
        assert world.endpoints.endpoints[endpoint_id]["enabled_at"] == world.clock.now_ms()


async def test_a_patch_changes_only_what_it_gives() -> None:
    async with World() as world:
        endpoint_id = (await _create(world, description="first"))["endpoint"]["id"]
        created_ms = world.clock.now_ms()
        world.clock.advance(5)
        resp = await _call(
            world,
            "PATCH",
            f"{BASE}/{endpoint_id}",
            {
                "events": ["balance.*", "template.status_changed"],
                "url": "https://other.example.com/h",
                "enabled": False,
            },
        )
        changed = await resp.json()
        assert resp.status == 200
        assert changed["events"] == ["balance.*", "template.status_changed"]
        assert changed["url"] == "https://other.example.com/h"
        assert changed["enabled"] is False and changed["receiving"] is False
        assert changed["description"] == "first" and changed["format"] == "standard"
        assert changed["updated_at"] == "2025-11-24T16:00:05.000Z"
        # switching off leaves enabled_at alone
        assert world.endpoints.endpoints[endpoint_id]["enabled_at"] == created_ms
        assert changed == await (await _call(world, "GET", f"{BASE}/{endpoint_id}")).json()
        for body, code in (
            ({}, "invalid_request"),
            ({"format": "meta"}, "unknown_field"),
            ({"events": ["x.*"]}, "unknown_event_type"),
            ({"url": "https://10.1.1.1/"}, "private_address"),
            ({"enabled": "yes"}, "invalid_field"),
            (b"", "malformed_json"),
        ):
            resp = await _call(world, "PATCH", f"{BASE}/{endpoint_id}", body)
            assert (await _error(resp, 400))["code"] == code, body


async def test_a_deleted_endpoint_is_gone_from_every_route() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        assert (await _call(world, "DELETE", f"{BASE}/{endpoint_id}")).status == 204
        stored = world.endpoints.endpoints[endpoint_id]
        assert stored["deleted_at"] == world.clock.now_ms() and stored["enabled"] is False
        for method, suffix, body in _ROUTES:
            resp = await _call(world, method, f"{BASE}/{endpoint_id}{suffix}", body)
            assert (await _error(resp, 404))["code"] == "not_found", (method, suffix)
        assert world.publisher.notify_requests == []


_ROUTES = [
    ("GET", "", None),
    ("PATCH", "", {"enabled": True}),
    ("DELETE", "", None),
    ("POST", "/test", None),
    ("POST", "/rotate-secret", None),
    ("GET", "/deliveries", None),
    ("POST", "/replay", {"event_id": "evt_1"}),
]


async def test_accounts_never_see_or_touch_each_others_endpoints() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        before = dict(world.endpoints.endpoints[endpoint_id])
        for method, suffix, body in _ROUTES:
            resp = await _call(world, method, f"{BASE}/{endpoint_id}{suffix}", body, key=KEY_B)
            assert (await _error(resp, 404))["code"] == "not_found", (method, suffix)
        assert (await (await _call(world, "GET", BASE, key=KEY_B)).json())["data"] == []
        assert world.endpoints.endpoints[endpoint_id] == before
        assert world.publisher.notify_requests == []
        # an id that cannot be an endpoint's, and callers without a valid key
        assert (await _call(world, "GET", f"{BASE}/we_nope")).status == 404
        assert (await _error(await _call(world, "GET", BASE, key=KEY_REVOKED), 401))[
            "code"
        ] == "api_key_revoked"
        resp = await world.client.get(BASE)
        assert (await _error(resp, 401))["code"] == "unauthorized"


async def test_rotation_shows_the_new_secret_once_and_keeps_the_old_one_for_a_day() -> None:
    async with World() as world:
        created = await _create(world)
        endpoint_id, old_secret = created["endpoint"]["id"], created["secret"]
        world.clock.advance(3600)
        resp = await _call(world, "POST", f"{BASE}/{endpoint_id}/rotate-secret")
        assert resp.status == 200
        rotated = await resp.json()
        msgspec.convert(rotated, schemas.WebhookEndpointWithSecret)
        new_secret = rotated["secret"]
        assert new_secret != old_secret and new_secret.startswith("whsec_")
        now = world.clock.now_ms()
        stored = world.endpoints.endpoints[endpoint_id]["secrets"]
        assert [VAULT.decrypt(s["encrypted"]) for s in stored] == [old_secret, new_secret]
        assert [s["expires_at"] for s in stored] == [now + DAY_MS, None]
        assert [s["expires_at"] for s in rotated["endpoint"]["secrets"]] == [
            "2025-11-25T17:00:00.000Z",
            None,
        ]
        # a day on, only the new one is listed (and signs)
        world.clock.advance(24 * 3600)
        shown = await (await _call(world, "GET", f"{BASE}/{endpoint_id}")).json()
        assert [s["id"] for s in shown["secrets"]] == [stored[1]["id"]]


async def test_without_encryption_keys_no_secret_is_made() -> None:
    async with World() as world:
        world.webhooks.vault = None
        resp = await _call(world, "POST", BASE, {"url": HOOK, "events": ["*"]})
        assert (await _error(resp, 500))["code"] == "internal_error"
        assert world.endpoints.endpoints == {}


async def test_a_test_event_is_published_for_notify_and_answered_202() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        resp = await _call(world, "POST", f"{BASE}/{endpoint_id}/test")
        assert resp.status == 202
        answer = await resp.json()
        msgspec.convert(answer, schemas.NotifyRequestAccepted)
        [request] = world.publisher.notify_requests
        assert (request.kind, request.account_id, request.endpoint_id) == (
            "test",
            "acc_a",
            endpoint_id,
        )
        assert request.requested_at == world.clock.now_ms()
        assert answer == {
            "request_id": request.event_id,
            "endpoint_id": endpoint_id,
            "kind": "test",
            "requested_at": "2025-11-24T16:00:00.000Z",
        }
        assert request.event_id.startswith("nreq_")


async def test_a_replay_names_one_event_or_a_time_range() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        path = f"{BASE}/{endpoint_id}/replay"
        ten, eleven, nine = 1_763_978_400_000, 1_763_982_000_000, 1_763_974_800_000
        resp = await _call(
            world,
            "POST",
            path,
            {"since": "2025-11-24T10:00:00Z", "until": "2025-11-24T13:00:00+02:00"},
        )
        assert resp.status == 202
        answer = await resp.json()
        msgspec.convert(answer, schemas.NotifyRequestAccepted)
        assert (answer["kind"], answer["since"], answer["until"], answer["event_id"]) == (
            "replay",
            "2025-11-24T10:00:00.000Z",
            "2025-11-24T11:00:00.000Z",
            None,
        )
        assert (await _call(world, "POST", path, {"since": "2025-11-24T09:00:00Z"})).status == 202
        resp = await _call(world, "POST", path, {"event_id": "evt_01jf8z3v9j6q8w4t"})
        assert resp.status == 202
        one = await resp.json()
        assert one["event_id"] == "evt_01jf8z3v9j6q8w4t" and one["kind"] == "replay"
        assert one["since"] is None and one["until"] is None
        ranged, since_only, by_id = world.publisher.notify_requests
        assert {r.kind for r in world.publisher.notify_requests} == {"replay"}
        assert {r.endpoint_id for r in world.publisher.notify_requests} == {endpoint_id}
        assert (ranged.since, ranged.until, ranged.replay_event_id) == (ten, eleven, None)
        assert (since_only.since, since_only.until) == (nine, world.clock.now_ms())
        assert (by_id.replay_event_id, by_id.since, by_id.until) == (
            "evt_01jf8z3v9j6q8w4t",
            None,
            None,
        )


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "invalid_field", "since"),
        ({"until": "2025-11-24T12:00:00Z"}, "invalid_field", "since"),
        (
            {"since": "2025-11-24T12:00:00Z", "until": "2025-11-24T11:00:00Z"},
            "invalid_field",
            "since",
        ),
        ({"since": "2025-11-25T12:00:00Z"}, "invalid_field", "since"),
        ({"since": "2025-11-24T10:00:00"}, "invalid_field", "since"),  # no time zone
        ({"since": "yesterday"}, "invalid_field", "since"),
        ({"event_id": "evt_1", "since": "2025-11-24T10:00:00Z"}, "invalid_request", None),
        ({"event_id": ""}, "invalid_field", "event_id"),
        ({"event_id": "evt 1"}, "invalid_field", "event_id"),
        ({"events": ["evt_1"]}, "unknown_field", "events"),
    ],
)
async def test_a_bad_replay_is_refused_and_nothing_is_published(
    body: Any, code: str, field: str | None
) -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        resp = await _call(world, "POST", f"{BASE}/{endpoint_id}/replay", body)
        error = await _error(resp, 400)
        assert error["code"] == code
        if field is not None:
            assert error["details"]["field"] == field
        assert world.publisher.notify_requests == []


async def test_a_broker_outage_answers_503_and_publishes_nothing() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        world.publisher.fail = True
        resp = await _call(world, "POST", f"{BASE}/{endpoint_id}/test")
        assert (await _error(resp, 503))["code"] == "dependency_unavailable"


async def test_deliveries_list_every_attempt_newest_first_in_pages() -> None:
    async with World() as world:
        endpoint_id = (await _create(world))["endpoint"]["id"]
        other_id = (await _create(world))["endpoint"]["id"]
        start = world.clock.now_ms()
        for n, (status, error) in enumerate(
            [(None, "timeout"), (500, "HTTP 500"), (200, None)], start=1
        ):
            world.endpoints.attempt_docs[f"{endpoint_id}:evt_1:{n}"] = {
                "_id": f"{endpoint_id}:evt_1:{n}",
                "endpoint_id": endpoint_id,
                "account_id": "acc_a",
                "event_id": "evt_1",
                "event_type": "message.sent",
                "attempt": n,
                "at": start + n * 1000,
                "http_status": status,
                "latency_ms": 10.04 * n,
                "error": error,
                "outcome": "delivered" if status == 200 else "failed",
            }
        world.endpoints.attempt_docs["x"] = {"_id": "x", "endpoint_id": other_id, "at": start}
        first = await (await _call(world, "GET", f"{BASE}/{endpoint_id}/deliveries?limit=2")).json()
        msgspec.convert(first, schemas.DeliveryAttemptPage)
        assert [(a["attempt"], a["http_status"], a["error"]) for a in first["data"]] == [
            (3, 200, None),
            (2, 500, "HTTP 500"),
        ]
        assert first["data"][0] == {
            "id": f"{endpoint_id}:evt_1:3",
            "event_id": "evt_1",
            "event_type": "message.sent",
            "attempt": 3,
            "attempted_at": "2025-11-24T16:00:03.000Z",
            "outcome": "delivered",
            "http_status": 200,
            "latency_ms": 30.1,
            "error": None,
        }
        rest = await (
            await _call(
                world,
                "GET",
                f"{BASE}/{endpoint_id}/deliveries?limit=2&cursor={first['next_cursor']}",
            )
        ).json()
        assert [(a["attempt"], a["http_status"]) for a in rest["data"]] == [(1, None)]
        assert rest["next_cursor"] is None


def test_every_code_a_shared_endpoint_rule_raises_is_one_of_ingests() -> None:
    from pathlib import Path

    source = (
        Path(rules.__file__).read_text()
        + Path(rules.__file__).with_name("webhook_urls.py").read_text()
    )
    codes = set(re.findall(r'EndpointRuleError\(\s*"(\w+)"', source))
    codes |= set(re.findall(r'UnacceptableUrl\(\s*"(\w+)"', source))
    assert codes and codes <= set(ERROR_CODES), codes - set(ERROR_CODES)


def test_the_document_has_a_schema_and_a_webhook_for_every_event_type() -> None:
    components = generated_schemas()
    assert set(EVENT_TYPES) == set(EVENT_DATA)
    for event_type in EVENT_TYPES:
        schema = components[event_schema_name(event_type)]
        assert schema["properties"]["type"]["const"] == event_type
        data = schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
        assert data == EVENT_DATA[event_type].__name__ and data in components
    assert components["ClientEventType"]["enum"] == list(EVENT_TYPES)
