"""ingest on the real broker and database: what a 202 leaves behind, what a refusal doesn't,
idempotency, and that accounts never see each other."""

from __future__ import annotations

from typing import Any

import orjson

from services.admin import commands
from shared.collections import BALANCES, IDEMPOTENCY_KEYS, LEDGER, MESSAGES
from shared.messages import SEND_REQUESTED
from tests.integration.ingest.conftest import PHONE_A, PHONE_B, Platform
from tests.integration.ingest.kafka_probe import published_count, read_published


def reminder(phone: str = PHONE_A, **overrides: Any) -> dict[str, Any]:
    return {
        "from": phone,
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
        "client_reference": "appt-1",
        **overrides,
    }


async def _post(p: Platform, body: Any, headers: dict[str, str]) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await p.client.post(
        "/v1/messages", data=data, headers={**headers, "Content-Type": "application/json"}
    )


async def _published(p: Platform) -> int:
    return await published_count(p.kafka, SEND_REQUESTED, p.prefix)


async def test_a_valid_request_is_stored_and_published_once_keyed_by_account(
    platform: Platform,
) -> None:
    p = platform
    resp = await _post(p, reminder(), p.a.auth)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()

    [record] = await read_published(p.kafka, SEND_REQUESTED, p.prefix)
    assert record.key == p.a.account_id.encode()
    event = SEND_REQUESTED.decode(record.value)
    assert event.message_id == answer["id"] and event.account_id == p.a.account_id
    assert event.category == "utility" and event.recipient == "+447912345678"
    assert event.recipient_region == "GB" and event.portfolio_id == "880011223344556"
    assert event.client_reference == "appt-1"

    # A keyless request writes nothing to the database; status makes the document.
    assert await p.db[IDEMPOTENCY_KEYS].count_documents({}) == 0
    assert await p.db[MESSAGES].count_documents({}) == 0
    await p.store_published()
    doc = await p.db[MESSAGES].find_one({"_id": answer["id"]})
    assert doc is not None and doc["status"] == "accepted"
    assert doc["account_id"] == p.a.account_id and doc["history"][0]["status"] == "accepted"


async def test_no_refused_request_publishes_or_stores_anything(platform: Platform) -> None:
    p = platform
    await p.db[BALANCES].update_one({"_id": p.b.account_id}, {"$set": {"available": 5}})
    not_approved = reminder(
        template={
            "name": "holiday_promo",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
        }
    )
    cases = [
        (b"{", p.a.auth, "malformed_json"),
        (b"[]", p.a.auth, "invalid_request"),
        (reminder(colour="red"), p.a.auth, "unknown_field"),
        (reminder(validity_seconds=1), p.a.auth, "invalid_field"),
        (reminder(to="+1"), p.a.auth, "invalid_phone_number"),
        (reminder(), {"Authorization": "Bearer hw_live_nobody"}, "unauthorized"),
        (reminder(phone=PHONE_B), p.a.auth, "foreign_phone_number"),
        (
            reminder(template={"name": "nope", "language": {"code": "en_US"}}),
            p.a.auth,
            "unknown_template",
        ),
        (not_approved, p.a.auth, "template_not_approved"),
        (
            reminder(template={"name": "appointment_reminder", "language": {"code": "en_US"}}),
            p.a.auth,
            "template_parameter_mismatch",
        ),
        (
            {"from": PHONE_B, "to": "+447912345678", "type": "text", "text": {"body": "hi"}},
            p.b.auth,
            "insufficient_credit",
        ),
        (reminder(client_reference="x" * 70_000), p.a.auth, "payload_too_large"),
    ]
    for body, headers, code in cases:
        resp = await _post(p, body, headers)
        assert (await resp.json())["error"]["code"] == code, code
    assert await _published(p) == 0
    assert await p.db[IDEMPOTENCY_KEYS].count_documents({}) == 0


async def test_a_replay_answers_the_same_and_names_the_same_single_message(
    platform: Platform,
) -> None:
    p = platform
    headers = {**p.a.auth, "Idempotency-Key": "appt-1-try"}
    first = await _post(p, reminder(), headers)
    second = await _post(p, reminder(), headers)
    assert first.status == second.status == 202
    assert await first.json() == await second.json()
    assert second.headers["Idempotent-Replay"] == "true"
    assert await p.db[IDEMPOTENCY_KEYS].count_documents({}) == 1
    # No document from status yet, so the replay re-published; consumers see one event id.
    events = [
        SEND_REQUESTED.decode(r.value)
        for r in await read_published(p.kafka, SEND_REQUESTED, p.prefix)
    ]
    assert {e.event_id for e in events} == {(await first.json())["id"]}

    # Once status has the message, a replay publishes nothing more.
    await p.store_published()
    before = await _published(p)
    assert (await _post(p, reminder(), headers)).status == 202
    assert await _published(p) == before


async def test_the_same_key_with_another_body_is_a_conflict(platform: Platform) -> None:
    p = platform
    headers = {**p.a.auth, "Idempotency-Key": "k-1"}
    assert (await _post(p, reminder(), headers)).status == 202
    resp = await _post(p, reminder(client_reference="other"), headers)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "idempotency_key_reused"
    assert await p.db[IDEMPOTENCY_KEYS].count_documents({}) == 1
    assert await _published(p) == 1


async def test_a_revoked_key_and_a_suspended_account_are_refused(platform: Platform) -> None:
    p = platform
    assert (await _post(p, reminder(), p.a.auth)).status == 202
    await commands.revoke_key(p.db, p.a.api_key[:16])
    resp = await _post(p, reminder(), p.a.auth)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "api_key_revoked"

    body = {"from": PHONE_B, "to": "+447912345678", "type": "text", "text": {"body": "hi"}}
    await commands.set_account_status(p.db, p.b.account_id, "suspended")
    resp = await _post(p, body, p.b.auth)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "account_suspended"
    await commands.set_account_status(p.db, p.b.account_id, "active")
    assert (await _post(p, body, p.b.auth)).status == 202
    assert await _published(p) == 2


async def test_another_accounts_number_and_an_unknown_number_look_the_same(
    platform: Platform,
) -> None:
    p = platform
    foreign = await (await _post(p, reminder(phone=PHONE_B), p.a.auth)).json()
    unknown = await (await _post(p, reminder(phone="100000000000001"), p.a.auth)).json()
    assert foreign["error"]["code"] == unknown["error"]["code"] == "foreign_phone_number"
    assert foreign["error"]["message"].replace(PHONE_B, "N") == unknown["error"]["message"].replace(
        "100000000000001", "N"
    )


async def test_accounts_never_see_each_others_messages_or_balances(platform: Platform) -> None:
    p = platform
    a_msg = await (await _post(p, reminder(), p.a.auth)).json()
    b_body = {"from": PHONE_B, "to": "+447912345678", "type": "text", "text": {"body": "hi"}}
    b_msg = await (await _post(p, b_body, p.b.auth)).json()

    # Before status stored it, the accepting process shows it; after, the database does.
    early = await p.client.get(f"/v1/messages/{a_msg['id']}", headers=p.a.auth)
    assert early.status == 200 and (await early.json())["status"] == "accepted"
    assert (await p.client.get(f"/v1/messages/{a_msg['id']}", headers=p.b.auth)).status == 404
    await p.store_published()
    own = await p.client.get(f"/v1/messages/{a_msg['id']}", headers=p.a.auth)
    assert own.status == 200
    view = await own.json()
    assert view["status"] == "accepted" and view["history"][0]["source"] == "ingest"
    assert view["content"]["name"] == "appointment_reminder"
    assert (await p.client.get(f"/v1/messages/{a_msg['id']}", headers=p.b.auth)).status == 404

    a_list = await (await p.client.get("/v1/messages", headers=p.a.auth)).json()
    b_list = await (await p.client.get("/v1/messages", headers=p.b.auth)).json()
    assert [m["id"] for m in a_list["data"]] == [a_msg["id"]]
    assert [m["id"] for m in b_list["data"]] == [b_msg["id"]]

    await p.db[BALANCES].update_one({"_id": p.b.account_id}, {"$set": {"available": 123}})
    a_balance = await (await p.client.get("/v1/balance", headers=p.a.auth)).json()
    b_balance = await (await p.client.get("/v1/balance", headers=p.b.auth)).json()
    assert a_balance == {
        "available": 10_000_000,
        "reserved": 0,
        "currency": "USD",
        "unit": "micros",
        "in_flight": 0,
        "max_in_flight": 0,
    }
    assert b_balance["available"] == 123


async def test_listing_pages_through_the_database_newest_first(platform: Platform) -> None:
    p = platform
    ids = []
    for i in range(5):
        resp = await _post(p, reminder(client_reference=f"r{i}"), p.a.auth)
        ids.append((await resp.json())["id"])
    await p.store_published()
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await p.client.get(f"/v1/messages?{query}", headers=p.a.auth)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Requests a millisecond apart may share a timestamp: order is by (time, id), newest first.
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    docs = await p.db[MESSAGES].find({}).to_list(None)
    by_id = {d["_id"]: d for d in docs}
    keys = [(by_id[i]["created_at"], i) for i in seen]
    assert keys == sorted(keys, reverse=True)
    delivered = await p.client.get("/v1/messages?status=delivered", headers=p.a.auth)
    assert (await delivered.json())["data"] == []


async def test_the_meta_route_sends_through_the_same_flow(platform: Platform) -> None:
    p = platform
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16502530000",
        "type": "text",
        "text": {"body": "hello"},
        "biz_opaque_callback_data": "cb-1",
    }
    resp = await p.client.post(f"/v24.0/{PHONE_A}/messages", json=body, headers=p.a.auth)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    [record] = await read_published(p.kafka, SEND_REQUESTED, p.prefix)
    event = SEND_REQUESTED.decode(record.value)
    assert answer["messages"][0]["id"] == event.message_id
    assert answer["contacts"] == [{"input": "16502530000", "wa_id": "16502530000"}]
    assert event.recipient == "+16502530000" and event.callback_data == "cb-1"
    assert event.client_reference is None

    resp = await p.client.post(f"/v24.0/{PHONE_B}/messages", json=body, headers=p.a.auth)
    error = (await resp.json())["error"]
    assert error["code"] == 100 and error["error_data"]["details"].startswith(
        "foreign_phone_number"
    )
    assert await _published(p) == 1


async def test_every_kind_of_message_goes_through_to_status_s_document(platform: Platform) -> None:
    p = platform
    objects = {
        "contacts": [
            {
                "name": {"formatted_name": "Ana B", "first_name": "Ana"},
                "phones": [{"phone": "+447912345678", "wa_id": "447912345678"}],
            }
        ],
        "interactive": {
            "type": "list",
            "body": {"text": "Pick one"},
            "action": {"button": "Options", "sections": [{"rows": [{"id": "a", "title": "A"}]}]},
        },
        "location": {"latitude": 51.5, "longitude": -0.12, "name": None, "address": None},
        "document": {"link": "https://example.com/i.pdf", "filename": "i.pdf"},
    }
    answers = []
    for kind, obj in objects.items():
        body = {
            "messaging_product": "whatsapp",
            "to": "447912345678",
            "type": kind,
            kind: obj,
            "biz_opaque_callback_data": f"crm-{kind}",
        }
        resp = await p.client.post(f"/v24.0/{PHONE_A}/messages", json=body, headers=p.a.auth)
        assert resp.status == 200, await resp.text()
        answers.append((kind, obj, (await resp.json())["messages"][0]["id"]))
    await p.store_published()
    for kind, obj, message_id in answers:
        view = await (await p.client.get(f"/v1/messages/{message_id}", headers=p.a.auth)).json()
        assert view["type"] == kind and view["content"] == obj, kind
        assert view["biz_opaque_callback_data"] == f"crm-{kind}"
        assert view["to"] == "+447912345678" and view["category"] == "service"


async def test_replies_name_our_messages_by_id_and_go_out_with_their_wamid(
    platform: Platform,
) -> None:
    p = platform
    text = {"from": PHONE_A, "to": "+447912345678", "type": "text", "text": {"body": "hi"}}
    quoted = (await (await _post(p, text, p.a.auth)).json())["id"]
    await p.store_published()
    # status records the wamid once Meta accepted the message
    await p.db[MESSAGES].update_one({"_id": quoted}, {"$set": {"wamid": "wamid.Q1"}})
    reply = await _post(p, {**text, "context": {"message_id": quoted}}, p.a.auth)
    assert reply.status == 202, await reply.text()
    reaction = await _post(
        p,
        {
            "from": PHONE_A,
            "to": "+447912345678",
            "type": "reaction",
            "reaction": {"message_id": quoted, "emoji": "\u2764"},
        },
        p.a.auth,
    )
    assert reaction.status == 202, await reaction.text()
    events = {
        e.message_id: e
        for e in (
            SEND_REQUESTED.decode(r.value)
            for r in await read_published(p.kafka, SEND_REQUESTED, p.prefix)
        )
    }
    assert events[(await reply.json())["id"]].reply_to == "wamid.Q1"
    assert events[(await reaction.json())["id"]].content == {
        "message_id": "wamid.Q1",
        "emoji": "\u2764",
    }
    # another account cannot name it
    b_text = {**text, "from": PHONE_B, "context": {"message_id": quoted}}
    refused = await _post(p, b_text, p.b.auth)
    assert refused.status == 422
    assert (await refused.json())["error"]["code"] == "unknown_context_message"
    assert await _published(p) == 3


async def test_the_list_shows_the_price_billing_charged(platform: Platform) -> None:
    p = platform
    first = (await (await _post(p, reminder(), p.a.auth)).json())["id"]
    second = (await (await _post(p, reminder(), p.a.auth)).json())["id"]
    await p.store_published()
    # billing's entries, as billing writes them
    await p.db[LEDGER].insert_many(
        [
            {
                "_id": f"{first}:reserve",
                "kind": "reserve",
                "amount": 24200,
                "account_id": p.a.account_id,
            },
            {
                "_id": f"{first}:settle",
                "kind": "charge",
                "amount": 24200,
                "account_id": p.a.account_id,
            },
            {
                "_id": f"{second}:reserve",
                "kind": "reserve",
                "amount": 24200,
                "account_id": p.a.account_id,
            },
        ]
    )
    listed = await (await p.client.get("/v1/messages", headers=p.a.auth)).json()
    prices = {m["id"]: m["price"] for m in listed["data"]}
    assert prices[first] == {
        "state": "charged",
        "amount": 24200,
        "currency": "USD",
        "unit": "micros",
    }
    assert prices[second]["state"] == "reserved"
    detail = await (await p.client.get(f"/v1/messages/{first}", headers=p.a.auth)).json()
    assert detail["price"] == prices[first]
