"""The send API through HTTP, over in-memory adapters: each check answers with its own code, and
nothing is published for a rejected request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.ingest.core import MAX_BODY_BYTES, hash_api_key
from tests.unit.ingest.fakes import (
    KEY_A,
    KEY_B,
    KEY_REVOKED,
    KEY_SUSPENDED,
    PHONE_A,
    PHONE_B,
    World,
    auth,
    template_body,
    text_body,
)


async def _post(world: World, body: Any, key: str = KEY_A, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await world.client.post(
        "/v1/messages",
        data=data,
        headers={**auth(key), "Content-Type": "application/json", **headers},
    )


async def _error(resp: Any) -> dict[str, Any]:
    return (await resp.json())["error"]


async def test_a_valid_text_request_is_stored_published_and_answered_202() -> None:
    async with World() as world:
        resp = await _post(world, text_body(client_reference="order-1"))
        assert resp.status == 202
        body = await resp.json()
        assert body["status"] == "accepted" and body["id"].startswith("msg_")
        assert body["from"] == PHONE_A and body["to"] == "+447912345678"
        assert body["type"] == "text" and body["client_reference"] == "order-1"
        assert body["accepted_at"] == "2025-11-24T16:00:00.000Z"
        assert body["expires_at"] == "2025-11-25T16:00:00.000Z"
        [event] = world.publisher.events
        assert event.message_id == body["id"] == event.event_id
        assert event.account_id == "acc_a" and event.category == "service"
        assert event.recipient_region == "GB" and event.waba_id == "102290129340398"
        assert event.portfolio_id == "880011223344556"
        assert event.accepted_at == world.clock.now_ms()
        assert world.idempotency.records == {}  # a keyless request writes nothing
        # Until status has stored the document, the accepting process shows the message.
        shown = await (await world.client.get(f"/v1/messages/{body['id']}", headers=auth())).json()
        assert shown["status"] == "accepted" and shown["history"][0]["status"] == "accepted"
        assert shown["content"] == {"body": "Your order shipped"}
        world.store_published()
        doc = world.messages.docs[body["id"]]
        assert doc["status"] == "accepted" and doc["history"][0]["source"] == "ingest"


async def test_a_template_request_carries_the_templates_category_in_lower_case() -> None:
    async with World() as world:
        resp = await _post(world, template_body())
        assert resp.status == 202
        [event] = world.publisher.events
        assert event.category == "utility" and event.message_type == "template"
        assert event.content["name"] == "reservation_confirmation"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"[1, 2]", 400, "invalid_request"),
        (text_body(colour="blue"), 400, "unknown_field"),
        (text_body(to="07911123456"), 400, "invalid_phone_number"),
        (text_body(to="+4479"), 400, "invalid_phone_number"),
        (text_body(type="video"), 400, "invalid_field"),
        (text_body(validity_seconds=5), 400, "invalid_field"),
        (text_body(**{"from": "999999999"}), 403, "foreign_phone_number"),
        (text_body(**{"from": PHONE_B}), 403, "foreign_phone_number"),
        (
            template_body(template={"name": "nope", "language": {"code": "en_US"}}),
            422,
            "unknown_template",
        ),
        (
            template_body(
                template={
                    "name": "holiday_promo",
                    "language": {"code": "en_US"},
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
                }
            ),
            422,
            "template_not_approved",
        ),
        (
            template_body(
                template={"name": "reservation_confirmation", "language": {"code": "en_US"}}
            ),
            422,
            "template_parameter_mismatch",
        ),
    ],
)
async def test_each_rejection_has_its_code_and_publishes_nothing(
    body: Any, status: int, code: str
) -> None:
    async with World() as world:
        resp = await _post(world, body)
        assert resp.status == status
        assert (await _error(resp))["code"] == code
        assert world.publisher.events == [] and world.idempotency.records == {}


async def test_unknown_field_names_the_field() -> None:
    async with World() as world:
        resp = await _post(world, text_body(text={"body": "hi", "font": "bold"}))
        assert await _error(resp) == {
            "code": "unknown_field",
            "message": "unknown field `text.font`",
            "details": {"field": "text.font"},
        }


async def test_a_body_over_64_kib_is_refused_with_413() -> None:
    async with World() as world:
        resp = await _post(world, text_body(client_reference="x" * MAX_BODY_BYTES))
        assert resp.status == 413
        assert (await _error(resp))["code"] == "payload_too_large"
        assert world.publisher.events == []


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer hw_live_unknown"}, 401, "unauthorized"),
        (auth(KEY_REVOKED), 401, "api_key_revoked"),
        (auth(KEY_SUSPENDED), 403, "account_suspended"),
    ],
)
async def test_callers_without_a_working_key_are_refused(
    headers: dict[str, str], status: int, code: str
) -> None:
    async with World() as world:
        resp = await world.client.post(
            "/v1/messages", data=orjson.dumps(text_body()), headers=headers
        )
        assert resp.status == status
        assert (await _error(resp))["code"] == code
        assert world.publisher.events == []


async def test_a_balance_below_the_price_is_refused_with_402() -> None:
    async with World() as world:
        world.directory.balances["acc_a"]["available"] = 10
        resp = await _post(world, text_body())
        assert resp.status == 402
        error = await _error(resp)
        assert error["code"] == "insufficient_credit" and error["details"]["price"] > 10
        assert world.publisher.events == []


async def test_an_account_without_a_balance_document_has_no_credit() -> None:
    async with World() as world:
        del world.directory.balances["acc_a"]
        assert (await _post(world, text_body())).status == 402


async def test_a_top_up_counts_at_once_even_when_a_low_balance_is_cached() -> None:
    async with World() as world:
        world.directory.balances["acc_a"]["available"] = 10
        assert (await _post(world, text_body())).status == 402
        world.directory.balances["acc_a"]["available"] = 50_000_000  # billing applied a top-up
        assert (await _post(world, text_body())).status == 202


async def test_accepted_messages_lower_the_cached_balance_until_it_is_refreshed() -> None:
    async with World() as world:
        price = world.ingest.rate_card.price("service", "GB")
        world.directory.balances["acc_a"]["available"] = price * 2
        assert (await _post(world, text_body())).status == 202
        assert (await _post(world, text_body())).status == 202
        # The database still says 2 x price (billing has not reserved yet), but this process
        # already accepted that much: the third request is checked against a fresh read.
        world.directory.balances["acc_a"]["available"] = 0
        assert (await _post(world, text_body())).status == 402


async def test_same_key_and_same_body_replays_the_original_response() -> None:
    async with World() as world:
        first = await _post(world, text_body(), **{"Idempotency-Key": "order-1"})
        world.clock.advance(60)
        second = await _post(world, text_body(), **{"Idempotency-Key": "order-1"})
        assert first.status == second.status == 202
        assert await first.json() == await second.json()
        assert second.headers["Idempotent-Replay"] == "true"
        assert "Idempotent-Replay" not in first.headers
        assert len(world.idempotency.records) == 1


async def test_a_replay_of_a_message_status_has_not_stored_publishes_again_for_safety() -> None:
    async with World() as world:
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        assert [e.message_id for e in world.publisher.events] == [
            world.publisher.events[0].message_id
        ] * 2


async def test_a_replay_of_a_message_status_has_stored_publishes_nothing() -> None:
    async with World() as world:
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        world.store_published()
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        assert len(world.publisher.events) == 1


async def test_a_replay_is_answered_even_when_the_balance_has_been_spent_since() -> None:
    async with World() as world:
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        world.directory.balances["acc_a"]["available"] = 0
        world.clock.advance(10)  # past the cache
        assert (await _post(world, text_body(), **{"Idempotency-Key": "k"})).status == 202


async def test_same_key_with_a_different_body_is_a_conflict() -> None:
    async with World() as world:
        await _post(world, text_body(), **{"Idempotency-Key": "k"})
        resp = await _post(world, text_body(text={"body": "other"}), **{"Idempotency-Key": "k"})
        assert resp.status == 409
        assert (await _error(resp))["code"] == "idempotency_key_reused"
        assert len(world.publisher.events) == 1


async def test_a_key_older_than_24_hours_makes_a_new_message() -> None:
    async with World() as world:
        first = await (await _post(world, text_body(), **{"Idempotency-Key": "k"})).json()
        world.clock.advance(24 * 3600 + 1)
        resp = await _post(world, text_body(text={"body": "next day"}), **{"Idempotency-Key": "k"})
        assert resp.status == 202
        second = await resp.json()
        assert second["id"] != first["id"] and "Idempotent-Replay" not in resp.headers
        assert len(world.idempotency.records) == 2


async def test_a_key_23_hours_old_across_a_day_boundary_still_replays() -> None:
    async with World() as world:
        world.clock.advance(7 * 3600 + 59 * 60)  # 23:59 UTC: the 24 h bucket ends in a minute
        first = await (await _post(world, text_body(), **{"Idempotency-Key": "k"})).json()
        world.clock.advance(23 * 3600)
        resp = await _post(world, text_body(), **{"Idempotency-Key": "k"})
        assert resp.headers.get("Idempotent-Replay") == "true"
        assert (await resp.json())["id"] == first["id"]


async def test_the_same_key_in_two_accounts_names_two_messages() -> None:
    async with World() as world:
        a = await (await _post(world, text_body(), **{"Idempotency-Key": "k"})).json()
        b = await (
            await _post(
                world, text_body(**{"from": PHONE_B}), key=KEY_B, **{"Idempotency-Key": "k"}
            )
        ).json()
        assert a["id"] != b["id"]


async def test_a_publish_failure_answers_503_and_a_retry_with_the_key_publishes() -> None:
    async with World() as world:
        world.publisher.fail = True
        resp = await _post(world, text_body(), **{"Idempotency-Key": "k"})
        assert resp.status == 503
        assert (await _error(resp))["code"] == "dependency_unavailable"
        world.publisher.fail = False
        resp = await _post(world, text_body(), **{"Idempotency-Key": "k"})
        assert resp.status == 202
        assert len(world.publisher.events) == 1 and len(world.idempotency.records) == 1


async def test_an_invalid_idempotency_key_is_refused() -> None:
    async with World() as world:
        resp = await _post(world, text_body(), **{"Idempotency-Key": "x" * 300})
        assert resp.status == 400
        assert await _error(resp) == {
            "code": "invalid_field",
            "details": {"field": "Idempotency-Key"},
            "message": "the Idempotency-Key header must be 1 to 255 printable characters",
        }


async def test_a_revoked_key_keeps_working_only_until_the_cache_expires() -> None:
    async with World(ttl_seconds=5) as world:
        assert (await _post(world, text_body())).status == 202
        world.directory.api_keys[hash_api_key(KEY_A)]["revoked_at"] = "now"
        world.clock.advance(4)
        assert (await _post(world, text_body())).status == 202
        world.clock.advance(1.5)
        resp = await _post(world, text_body())
        assert (await _error(resp))["code"] == "api_key_revoked"


async def test_lookups_are_served_from_the_cache_within_the_ttl() -> None:
    async with World() as world:
        await _post(world, template_body())
        reads = world.directory.reads
        await _post(world, template_body())
        assert world.directory.reads == reads


# --- the Meta-compatible route ---------------------------------------------------------------


def meta_body(**overrides: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "type": "text",
        "text": {"body": "hello"},
        **overrides,
    }


async def test_the_meta_route_answers_in_metas_shape_with_our_message_id() -> None:
    async with World() as world:
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/messages",
            json=meta_body(biz_opaque_callback_data="ref-7"),
            headers=auth(),
        )
        assert resp.status == 200
        body = await resp.json()
        [event] = world.publisher.events
        assert body == {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": event.message_id, "message_status": "accepted"}],
        }
        assert event.callback_data == "ref-7" and event.client_reference is None
        assert event.phone_number_id == PHONE_A


async def test_the_meta_route_reads_a_number_without_plus_in_the_business_numbers_country() -> None:
    async with World() as world:
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/messages", json=meta_body(to="(650) 555-1234"), headers=auth()
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["contacts"] == [{"input": "(650) 555-1234", "wa_id": "16505551234"}]


@pytest.mark.parametrize(
    ("phone", "body", "key", "meta_code", "http", "code"),
    [
        (PHONE_A, meta_body(messaging_product="sms"), KEY_A, 100, 400, "invalid_field"),
        (PHONE_A, meta_body(context={"id": "x"}), KEY_A, 100, 400, "unknown_field"),
        (PHONE_A, meta_body(recipient_type="group"), KEY_A, 100, 400, "unsupported"),
        (
            PHONE_A,
            meta_body(context={"message_id": "msg_nope"}),
            KEY_A,
            131009,
            400,
            "unknown_context_message",
        ),
        (PHONE_A, meta_body(), "hw_live_nope", 190, 401, "unauthorized"),
        (PHONE_A, meta_body(), KEY_REVOKED, 190, 401, "api_key_revoked"),
        (PHONE_B, meta_body(), KEY_A, 100, 400, "foreign_phone_number"),
        (
            PHONE_A,
            meta_body(
                type="template", text=None, template={"name": "nope", "language": {"code": "en_US"}}
            ),
            KEY_A,
            132001,
            404,
            "unknown_template",
        ),
        (
            PHONE_A,
            meta_body(
                type="template",
                text=None,
                template={"name": "delivery_update", "language": {"code": "en_US"}},
            ),
            KEY_A,
            132015,
            404,
            "template_not_approved",
        ),
        (
            PHONE_A,
            meta_body(
                type="template",
                text=None,
                template={"name": "summer_sale", "language": {"code": "en_US"}},
            ),
            KEY_A,
            132000,
            400,
            "template_parameter_mismatch",
        ),
    ],
)
async def test_meta_route_errors_use_metas_envelope_with_our_code_in_details(
    phone: str, body: dict[str, Any], key: str, meta_code: int, http: int, code: str
) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    async with World() as world:
        resp = await world.client.post(f"/v24.0/{phone}/messages", json=body, headers=auth(key))
        assert resp.status == http
        error = (await resp.json())["error"]
        assert error["code"] == meta_code and error["type"] == "OAuthException"
        assert error["message"].startswith(f"(#{meta_code}) ")
        assert error["error_data"]["messaging_product"] == "whatsapp"
        assert error["error_data"]["details"].startswith(f"{code}: ")
        assert error["fbtrace_id"]
        assert world.publisher.events == []


async def test_meta_route_malformed_json_is_code_100() -> None:
    async with World() as world:
        resp = await world.client.post(f"/v24.0/{PHONE_A}/messages", data=b"{", headers=auth())
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == 100
        assert error["error_data"]["details"].startswith("malformed_json")


# --- reading ---------------------------------------------------------------------------------


async def test_get_message_shows_status_history_and_hides_other_accounts_messages() -> None:
    async with World() as world:
        sent = await (await _post(world, text_body(client_reference="r1"))).json()
        resp = await world.client.get(f"/v1/messages/{sent['id']}", headers=auth())
        assert resp.status == 200
        view = await resp.json()
        assert view["id"] == sent["id"] and view["status"] == "accepted"
        assert view["history"] == [
            {"status": "accepted", "at": sent["accepted_at"], "source": "ingest"}
        ]
        assert view["wamid"] is None and view["price"] is None and view["error"] is None
        assert view["content"] == {"body": "Your order shipped"}
        other = await world.client.get(f"/v1/messages/{sent['id']}", headers=auth(KEY_B))
        assert other.status == 404
        assert (await _error(other))["code"] == "not_found"


async def test_get_message_shows_the_price_billing_reserved_then_charged() -> None:
    async with World() as world:
        sent = await (await _post(world, text_body())).json()
        world.messages.ledger[f"{sent['id']}:reserve"] = {"kind": "reserve", "amount": 4400}
        view = await (await world.client.get(f"/v1/messages/{sent['id']}", headers=auth())).json()
        assert view["price"] == {
            "state": "reserved",
            "amount": 4400,
            "currency": "USD",
            "unit": "micros",
        }
        world.messages.ledger[f"{sent['id']}:settle"] = {"kind": "charge", "amount": 27500}
        view = await (await world.client.get(f"/v1/messages/{sent['id']}", headers=auth())).json()
        assert view["price"]["state"] == "charged" and view["price"]["amount"] == 27500
        world.messages.ledger[f"{sent['id']}:settle"] = {"kind": "release", "amount": 4400}
        view = await (await world.client.get(f"/v1/messages/{sent['id']}", headers=auth())).json()
        assert view["price"]["state"] == "released" and view["price"]["amount"] == 0


async def test_list_messages_pages_newest_first_with_an_opaque_cursor() -> None:
    async with World() as world:
        ids = []
        for i in range(5):
            resp = await _post(world, text_body(client_reference=str(i)))
            ids.append((await resp.json())["id"])
            world.clock.advance(1)
        world.store_published()
        await _post(world, text_body(**{"from": PHONE_B}), key=KEY_B)
        seen: list[str] = []
        cursor = None
        while True:
            query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = await (await world.client.get(f"/v1/messages{query}", headers=auth())).json()
            seen += [m["id"] for m in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))


async def test_list_messages_filters_by_status_and_time() -> None:
    async with World() as world:
        early = await (await _post(world, text_body())).json()
        world.clock.advance(3600)
        late = await (await _post(world, text_body())).json()
        world.store_published()
        world.messages.docs[early["id"]]["status"] = "delivered"

        async def ids(query: str) -> list[str]:
            resp = await world.client.get(f"/v1/messages?{query}", headers=auth())
            assert resp.status == 200, await resp.text()
            return [m["id"] for m in (await resp.json())["data"]]

        assert await ids("status=delivered") == [early["id"]]
        assert await ids(f"since={late['accepted_at']}") == [late["id"]]
        assert await ids(f"until={late['accepted_at']}") == [early["id"]]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=101", "invalid_field"),
        ("limit=0", "invalid_field"),
        ("status=lost", "invalid_field"),
        ("since=yesterday", "invalid_field"),
        ("cursor=%%%", "invalid_cursor"),
        ("colour=red", "unknown_field"),
    ],
)
async def test_list_messages_rejects_bad_parameters(query: str, code: str) -> None:
    async with World() as world:
        resp = await world.client.get(f"/v1/messages?{query}", headers=auth())
        assert resp.status == 400
        assert (await _error(resp))["code"] == code


async def test_balance_is_the_callers_own() -> None:
    async with World() as world:
        world.directory.balances["acc_b"] = {"available": 7, "reserved": 3, "currency": "USD"}
        resp = await world.client.get("/v1/balance", headers=auth(KEY_B))
        assert await resp.json() == {
            "available": 7,
            "reserved": 3,
            "currency": "USD",
            "unit": "micros",
            "in_flight": 0,
            "max_in_flight": 0,
        }
        resp = await world.client.get("/v1/balance", headers=auth(KEY_A))
        assert (await resp.json())["available"] == 50_000_000


async def test_reads_need_a_working_key_too() -> None:
    async with World() as world:
        for path in ("/v1/balance", "/v1/messages", "/v1/messages/msg_x"):
            resp = await world.client.get(path, headers=auth(KEY_SUSPENDED))
            assert resp.status == 403


async def test_the_openapi_document_is_served_as_json_and_yaml() -> None:
    async with World() as world:
        doc = await (await world.client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        resp = await world.client.get("/openapi.yaml")
        assert resp.status == 200 and "openapi: 3.1" in await resp.text()


DEEP = 10_000


def _with_nested(body: dict[str, Any], depth: int, *, objects: bool = False) -> bytes:
    """`body` with "__NESTED__" replaced by arrays (or objects) nested `depth` deep (orjson
    itself will not write one that deep)."""
    nested = (b'{"a":' * depth + b"1" + b"}" * depth) if objects else (b"[" * depth + b"]" * depth)
    return orjson.dumps(body).replace(b'"__NESTED__"', nested)


def _flow(data: Any) -> dict[str, Any]:
    return {
        "type": "flow",
        "body": {"text": "Pick a slot"},
        "action": {
            "name": "flow",
            "parameters": {
                "flow_message_version": "3",
                "flow_id": "123456",
                "flow_cta": "Book!",
                "flow_token": "opaque-id",
                "mode": "published",
                "flow_action": "navigate",
                "flow_action_payload": {"screen": "SLOTS", "data": data},
            },
        },
    }


async def test_deeply_nested_json_in_any_field_is_refused_with_400_not_a_crash() -> None:
    template = template_body()
    template["template"]["components"][0]["parameters"][0]["text"] = "__NESTED__"
    flow = {
        "from": PHONE_A,
        "to": "+447912345678",
        "type": "interactive",
        "interactive": _flow({"slots": "__NESTED__"}),
    }
    async with World() as world:
        for body in (template, flow):
            resp = await _post(world, _with_nested(body, DEEP))
            assert resp.status == 400
            assert await _error(resp) == {
                "code": "nesting_too_deep",
                "message": "arrays and objects in the body are nested more than 64 levels deep",
                "details": {"limit": 64},
            }
        # Meta's own route answers in Meta's envelope.
        meta = {
            "messaging_product": "whatsapp",
            "to": "447912345678",
            "type": "interactive",
            "interactive": _flow({"slots": "__NESTED__"}),
        }
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/messages",
            data=_with_nested(meta, DEEP),
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == 100 and "nesting_too_deep" in error["error_data"]["details"]
        assert world.publisher.events == []


async def test_a_flows_data_nested_within_the_limit_is_accepted() -> None:
    body = {
        "from": PHONE_A,
        "to": "+447912345678",
        "type": "interactive",
        "interactive": _flow({"slots": "__NESTED__"}),
    }
    async with World() as world:
        resp = await _post(world, _with_nested(body, 50, objects=True))
        assert resp.status == 202, await resp.text()
        [event] = world.publisher.events
        assert event.content["action"]["parameters"]["flow_action_payload"]["data"]["slots"]
