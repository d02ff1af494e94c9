"""The account's rules on the send path, over in-memory adapters: a held account is refused
(403 account_held, with its rules); a blocked number gets nothing (422 recipient_blocked); a
marketing template to a contact who opted out of the number's marketing is refused (422
recipient_opted_out, Meta's 131050 on Meta's route) while utility templates and service
messages still go; each answer is remembered for the cache time and no longer."""

from __future__ import annotations

from typing import Any

import orjson

from shared import contact_lists
from tests.unit.ingest.fakes import PHONE_A, PHONE_B, World, auth, template_body, text_body

TO = "+447912345678"


def marketing_body(**overrides: Any) -> dict[str, Any]:
    return template_body(
        template={
            "name": "summer_sale",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "20%"},
                    ],
                }
            ],
        },
        **overrides,
    )


async def post(world: World, body: Any) -> tuple[int, Any]:
    resp = await world.client.post(
        "/v1/messages",
        data=orjson.dumps(body),
        headers={**auth(), "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


def opted_out(
    world: World,
    wa_id: str = "447912345678",
    *,
    suppressed: bool = True,
    account_id: str = "acc_a",
    phone: str = PHONE_A,
) -> None:
    doc = contact_lists.suppression_doc(
        account_id=account_id,
        phone_number_id=phone,
        wa_id=wa_id,
        suppressed=suppressed,
        source="keyword",
        at=world.clock.now_ms() - 1000,
        now_ms=world.clock.now_ms(),
        keyword="stop",
    )
    world.contacts.suppression_docs[doc["_id"]] = doc


async def test_an_opted_out_contact_gets_no_marketing_but_utility_and_service_still_go() -> None:
    async with World() as world:
        opted_out(world)
        status, body = await post(world, marketing_body())
        assert status == 422 and body["error"]["code"] == "recipient_opted_out"
        assert body["error"]["details"]["source"] == "keyword"
        assert (await post(world, template_body()))[0] == 202  # utility
        assert (await post(world, text_body()))[0] == 202  # service
        assert [e.category for e in world.publisher.events] == ["utility", "service"]


async def test_the_opt_out_is_per_number_and_a_resubscribed_contact_gets_marketing() -> None:
    async with World(send_rules_cache_seconds=0) as world:
        opted_out(world, phone=PHONE_B, account_id="acc_b")  # another number's list
        assert (await post(world, marketing_body()))[0] == 202
        opted_out(world, suppressed=False)  # a START: the document stays, not suppressed
        assert (await post(world, marketing_body()))[0] == 202


async def test_a_contact_known_to_meta_by_another_spelling_is_found() -> None:
    async with World() as world:
        opted_out(world, wa_id="551187654321")  # Meta's older spelling, without the ninth digit
        status, body = await post(world, marketing_body(to="+5511987654321"))
        assert (status, body["error"]["code"]) == (422, "recipient_opted_out")


async def test_a_blocked_number_gets_nothing_of_any_type() -> None:
    async with World() as world:
        doc = contact_lists.blocked_doc(
            account_id="acc_a", e164=TO, note="", source="api", now_ms=1
        )
        await world.contacts.block(doc)
        for body in (text_body(), template_body(), marketing_body()):
            status, answer = await post(world, body)
            assert (status, answer["error"]["code"]) == (422, "recipient_blocked")
        assert (await post(world, text_body(to="+447911123457")))[0] == 202
        assert len(world.publisher.events) == 1


async def test_an_account_that_never_blocked_anyone_costs_no_lookup_per_recipient() -> None:
    async with World() as world:
        for i in range(5):
            assert (await post(world, text_body(to=f"+44791112345{i}")))[0] == 202
        # the hold and the block marker, once each (cached), and nothing per recipient
        assert world.contacts.reads == 2
        # a block written behind ingest's back (as by hala) is found once the marker is
        doc = contact_lists.blocked_doc(
            account_id="acc_a", e164="+447911123459", note="", source="operator", now_ms=1
        )
        await world.contacts.block(doc)
        world.clock.advance(2.0)
        status, body = await post(world, text_body(to="+447911123459"))
        assert (status, body["error"]["code"]) == (422, "recipient_blocked")


async def test_a_held_account_is_refused_with_the_rules_and_released_by_a_later_release() -> None:
    async with World() as world:
        now = world.clock.now_ms()
        world.contacts.holds["acc_a"] = {
            "_id": "acc_a",
            "holds": {"failure_rate": {"at": now - 5000, "reason": "62% of 80 failed"}},
        }
        status, body = await post(world, text_body())
        assert status == 403 and body["error"]["code"] == "account_held"
        assert "62% of 80 failed" in body["error"]["message"]
        assert body["error"]["details"]["rules"][0]["rule"] == "failure_rate"
        world.contacts.holds["acc_a"]["released_at"] = now - 1000  # an operator released it
        assert (await post(world, text_body()))[0] == 403  # still remembered
        world.clock.advance(2.1)
        assert (await post(world, text_body()))[0] == 202
        assert len(world.publisher.events) == 1


async def test_a_new_opt_out_applies_once_the_cache_time_has_passed() -> None:
    async with World(send_rules_cache_seconds=2.0) as world:
        assert (await post(world, marketing_body()))[0] == 202
        opted_out(world)
        assert (await post(world, marketing_body()))[0] == 202  # within the 2 s
        world.clock.advance(2.0)
        assert (await post(world, marketing_body()))[0] == 422


async def test_metas_route_answers_with_metas_codes() -> None:
    async with World() as world:
        opted_out(world)
        body = marketing_body()
        meta_body = {
            "messaging_product": "whatsapp",
            "to": body["to"],
            "type": "template",
            "template": body["template"],
        }
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/messages",
            data=orjson.dumps(meta_body),
            headers={**auth(), "Content-Type": "application/json"},
        )
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == 131050
        assert error["error_data"]["details"].startswith("recipient_opted_out:")
