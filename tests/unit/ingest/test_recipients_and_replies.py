"""`to` in every form Meta accepts, the client's own callback data kept and shown back, replies
and reactions naming our message ids, and prices in the message list."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.ingest import core
from shared.errors import ServiceError
from tests.unit.ingest.fakes import KEY_B, PHONE_A, PHONE_B, World, auth, text_body


async def _post(world: World, body: Any, key: str | None = None, **headers: str) -> Any:
    return await world.client.post(
        "/v1/messages",
        data=orjson.dumps(body),
        headers={**(auth(key) if key else auth()), **headers},
    )


async def _meta_post(world: World, body: dict[str, Any], phone: str = PHONE_A) -> Any:
    return await world.client.post(
        f"/v24.0/{phone}/messages", json={"messaging_product": "whatsapp", **body}, headers=auth()
    )


# --- to ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "e164", "region"),
    [
        ("+447912345678", "+447912345678", "GB"),
        ("447912345678", "+447912345678", "GB"),  # wa_id digits: what most clients send
        ("+44 7912 345678", "+447912345678", "GB"),
        ("+44-7912-345678", "+447912345678", "GB"),
        (" 44 (7912) 345.678 ", "+447912345678", "GB"),
        ("16505551234", "+16505551234", "US"),
        ("(650) 555-1234", "+16505551234", "US"),  # national: the business number is American
        ("650-555-1234", "+16505551234", "US"),
    ],
)
async def test_to_is_read_in_every_form_meta_accepts_on_both_routes(
    to: str, e164: str, region: str
) -> None:
    async with World() as world:
        resp = await _post(world, text_body(to=to))
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["to"] == e164
        resp = await _meta_post(world, {"to": to, "text": {"body": "hi"}})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["contacts"] == [{"input": to, "wa_id": e164[1:]}]
        assert [(e.recipient, e.recipient_region) for e in world.publisher.events] == [
            (e164, region)
        ] * 2


@pytest.mark.parametrize(
    "to", ["+1", "12", "abc", "+44 7912 CALL", "44+7912345678", "", "0791 234 5678"]
)
async def test_a_to_that_is_no_number_in_any_reading_is_refused(to: str) -> None:
    async with World() as world:
        resp = await _post(world, text_body(to=to))
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_phone_number"
        resp = await _meta_post(world, {"to": to, "text": {"body": "hi"}})
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == 100
        assert error["error_data"]["details"].startswith("invalid_phone_number: ")
        assert world.publisher.events == []


def test_a_national_number_is_read_in_the_business_numbers_country() -> None:
    request = core.parse_send_request(text_body(to="07912 345678"))
    assert request.recipient is None  # not international: wait for the number's country
    assert core.with_recipient(request, "GB").recipient == "+447912345678"
    with pytest.raises(ServiceError) as info:
        core.with_recipient(request, "US")
    assert info.value.code == "invalid_phone_number"


# --- the client's callback data -----------------------------------------------------------------


async def test_the_clients_callback_data_is_kept_and_shown_back_everywhere() -> None:
    async with World() as world:
        resp = await _post(
            world, text_body(biz_opaque_callback_data="crm-7", client_reference="order-1")
        )
        answer = await resp.json()
        assert resp.status == 202 and answer["biz_opaque_callback_data"] == "crm-7"
        [event] = world.publisher.events
        assert event.callback_data == "crm-7" and event.client_reference == "order-1"
        shown = await (
            await world.client.get(f"/v1/messages/{answer['id']}", headers=auth())
        ).json()
        assert shown["biz_opaque_callback_data"] == "crm-7"
        world.store_published()
        assert world.messages.docs[answer["id"]]["callback_data"] == "crm-7"
        listed = await (await world.client.get("/v1/messages", headers=auth())).json()
        assert listed["data"][0]["biz_opaque_callback_data"] == "crm-7"
        # the event rebuilt from the stored document (a replay) keeps it too
        assert core.send_requested_event(world.messages.docs[answer["id"]]) == event


async def test_the_callback_data_is_part_of_the_idempotency_key_s_body() -> None:
    async with World() as world:
        key = {"Idempotency-Key": "k"}
        assert (await _post(world, text_body(biz_opaque_callback_data="a"), **key)).status == 202
        assert (await _post(world, text_body(biz_opaque_callback_data="a"), **key)).status == 202
        resp = await _post(world, text_body(biz_opaque_callback_data="b"), **key)
        assert resp.status == 409


# --- replies and reactions naming our ids --------------------------------------------------------


async def _sent_message(world: World, wamid: str | None) -> str:
    message_id = (await (await _post(world, text_body())).json())["id"]
    world.store_published()
    if wamid is not None:
        world.messages.docs[message_id]["wamid"] = wamid
    return message_id


async def test_a_reply_to_our_sent_message_is_accepted_quoting_its_wamid() -> None:
    async with World() as world:
        quoted = await _sent_message(world, "wamid.QUOTED")
        resp = await _post(world, text_body(context={"message_id": quoted}))
        assert resp.status == 202, await resp.text()
        assert world.publisher.events[-1].reply_to == "wamid.QUOTED"
        shown = await (
            await world.client.get(f"/v1/messages/{(await resp.json())['id']}", headers=auth())
        ).json()
        assert shown["reply_to"] == "wamid.QUOTED"


async def test_a_reply_to_our_message_not_sent_yet_keeps_our_id_for_the_sender() -> None:
    async with World() as world:
        quoted = (await (await _post(world, text_body())).json())["id"]  # not stored yet
        resp = await _meta_post(
            world,
            {"to": "+447912345678", "text": {"body": "and"}, "context": {"message_id": quoted}},
        )
        assert resp.status == 200, await resp.text()
        assert world.publisher.events[-1].reply_to == quoted


async def test_a_reaction_to_our_sent_message_targets_its_wamid() -> None:
    async with World() as world:
        liked = await _sent_message(world, "wamid.LIKED")
        resp = await _meta_post(
            world,
            {
                "to": "+447912345678",
                "type": "reaction",
                "reaction": {"message_id": liked, "emoji": ""},
            },
        )
        assert resp.status == 200, await resp.text()
        event = world.publisher.events[-1]
        assert event.content == {"message_id": "wamid.LIKED", "emoji": ""}
        assert event.category == "service"


async def test_a_reply_to_a_users_wamid_goes_as_it_is_without_a_lookup() -> None:
    async with World() as world:
        resp = await _post(world, text_body(context={"message_id": "wamid.FROM_USER"}))
        assert resp.status == 202
        assert world.publisher.events[-1].reply_to == "wamid.FROM_USER"


async def test_naming_a_message_that_is_not_the_accounts_is_refused_before_anything() -> None:
    async with World() as world:
        others = await (await _post(world, text_body(**{"from": PHONE_B}), key=KEY_B)).json()
        world.store_published()
        published = len(world.publisher.events)
        for body in (
            text_body(context={"message_id": others["id"]}),
            text_body(context={"message_id": "msg_does_not_exist"}),
            {
                **text_body(type="reaction", reaction={"message_id": others["id"], "emoji": "x"}),
                "text": None,
            },
        ):
            body = {k: v for k, v in body.items() if v is not None}
            resp = await _post(world, body)
            error = (await resp.json())["error"]
            assert resp.status == 422 and error["code"] == "unknown_context_message", error
        assert len(world.publisher.events) == published


# --- prices in the list ---------------------------------------------------------------------------


async def test_the_list_shows_each_messages_price_from_one_ledger_read_per_page() -> None:
    async with World() as world:
        ids = []
        for _ in range(3):
            ids.append((await (await _post(world, text_body())).json())["id"])
            world.clock.advance(1)
        world.store_published()
        charged, reserved, _unpriced = ids
        world.messages.ledger[f"{charged}:reserve"] = {"kind": "reserve", "amount": 4400}
        world.messages.ledger[f"{charged}:settle"] = {"kind": "charge", "amount": 4400}
        world.messages.ledger[f"{reserved}:reserve"] = {"kind": "reserve", "amount": 4400}
        reads = world.messages.ledger_reads
        page = await (await world.client.get("/v1/messages", headers=auth())).json()
        assert world.messages.ledger_reads == reads + 1
        prices = {m["id"]: m["price"] for m in page["data"]}
        assert prices[charged] == {
            "state": "charged",
            "amount": 4400,
            "currency": "USD",
            "unit": "micros",
        }
        assert prices[reserved]["state"] == "reserved"
        assert prices[_unpriced] is None
        detail = await (await world.client.get(f"/v1/messages/{charged}", headers=auth())).json()
        assert detail["price"] == prices[charged]
