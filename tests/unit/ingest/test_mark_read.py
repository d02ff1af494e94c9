"""Mark-as-read and the typing indicator: on Meta's messages endpoint (as pywa sends them) and on
ours, passed through to Meta with the number's token at once (never published, never billed),
only for messages the account's number received; paced per number."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest import passthrough
from services.ingest.meta_client import MetaAnswer
from shared.errors import ServiceError
from tests.unit.ingest.fakes import KEY_B, PHONE_A, PHONE_B, TOKEN_A, World, auth

WA_ID = "447912345678"


async def _meta_read(
    world: World, body: dict[str, Any], phone: str = PHONE_A, key: str | None = None
) -> Any:
    return await world.client.post(
        f"/v24.0/{phone}/messages", json=body, headers=auth(key) if key else auth()
    )


def _read(wamid: str, typing: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
    if typing:
        body["typing_indicator"] = {"type": "text"}
    return body


async def test_mark_as_read_goes_to_meta_with_the_numbers_token_and_answers_success() -> None:
    async with World() as world:
        inbound = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)
        resp = await _meta_read(world, _read(inbound["_id"]))
        assert resp.status == 200
        assert await resp.json() == {"success": True}
        resp = await _meta_read(world, _read(inbound["_id"], typing=True))
        assert await resp.json() == {"success": True}
        assert world.meta.calls == [
            ("read", TOKEN_A, {"phone_number_id": PHONE_A, **_read(inbound["_id"])}),
            ("read", TOKEN_A, {"phone_number_id": PHONE_A, **_read(inbound["_id"], True)}),
        ]
        assert world.publisher.events == []  # not a send: nothing queued, nothing billed


async def test_our_route_marks_read_with_or_without_typing() -> None:
    async with World() as world:
        inbound = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)
        plain = await world.client.post(f"/v1/messages/{inbound['_id']}/read", headers=auth())
        typing = await world.client.post(
            f"/v1/messages/{inbound['_id']}/read", json={"typing_indicator": True}, headers=auth()
        )
        assert (plain.status, typing.status) == (200, 200)
        assert [c[2].get("typing_indicator") for c in world.meta.calls] == [None, {"type": "text"}]
        bad = await world.client.post(
            f"/v1/messages/{inbound['_id']}/read", json={"typing": True}, headers=auth()
        )
        assert (await bad.json())["error"]["code"] == "unknown_field"


@pytest.mark.parametrize("case", ["unknown", "other_account", "other_number", "echo"])
async def test_only_a_message_this_number_received_can_be_marked_read(case: str) -> None:
    async with World() as world:
        wamid = "wamid.nothing"
        if case == "other_account":
            wamid = world.inbox.user_wrote("acc_b", PHONE_B, WA_ID)["_id"]
        elif case == "other_number":
            wamid = world.inbox.user_wrote("acc_a", "109731225428302", WA_ID)["_id"]
        elif case == "echo":
            doc = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)
            world.inbox.inbound[doc["_id"]]["direction"] = "echo"
            wamid = doc["_id"]
        resp = await _meta_read(world, _read(wamid))
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == 100
        assert error["error_data"]["details"].startswith("unknown_inbound_message")
        if case != "other_number":  # our route names no number: the account is what counts
            ours = await world.client.post(f"/v1/messages/{wamid}/read", headers=auth())
            assert ours.status == 422
            assert (await ours.json())["error"]["code"] == "unknown_inbound_message"
        assert world.meta.calls == []


async def test_another_accounts_number_is_refused_before_anything_is_read() -> None:
    async with World() as world:
        inbound = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)
        resp = await _meta_read(world, _read(inbound["_id"]), key=KEY_B)
        assert (await resp.json())["error"]["error_data"]["details"].startswith(
            "foreign_phone_number"
        )
        assert world.meta.calls == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messaging_product": "whatsapp", "status": "read"}, "message_id"),
        ({"messaging_product": "whatsapp", "status": "delivered", "message_id": "w"}, "status"),
        (
            {
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": "w",
                "typing_indicator": {"type": "audio"},
            },
            "typing_indicator.type",
        ),
        (
            {"messaging_product": "whatsapp", "status": "read", "message_id": "w", "extra": 1},
            "extra",
        ),
    ],
)
async def test_a_malformed_mark_as_read_names_its_field(body: dict[str, Any], field: str) -> None:
    async with World() as world:
        resp = await _meta_read(world, body)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == 100
        assert field in error["error_data"]["details"]
        assert world.meta.calls == []


async def test_a_send_whose_text_mentions_status_is_still_a_send() -> None:
    async with World() as world:
        resp = await _meta_read(
            world,
            {
                "messaging_product": "whatsapp",
                "to": WA_ID,
                "type": "text",
                "text": {"body": '"status": "read"'},
            },
        )
        assert resp.status == 200
        assert len(world.publisher.events) == 1 and world.meta.calls == []


async def test_metas_refusal_is_relayed_on_its_route_and_translated_on_ours() -> None:
    async with World() as world:
        inbound = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)
        meta_error = {
            "message": "(#131009) Parameter value is not valid",
            "type": "OAuthException",
            "code": 131009,
            "fbtrace_id": "abc",
        }
        world.meta.refuse = MetaAnswer(400, {"error": meta_error})
        resp = await _meta_read(world, _read(inbound["_id"]))
        assert resp.status == 400 and await resp.json() == {"error": meta_error}
        ours = await world.client.post(f"/v1/messages/{inbound['_id']}/read", headers=auth())
        assert ours.status == 502
        error = (await ours.json())["error"]
        assert error["code"] == "meta_error" and error["details"]["meta_error"] == meta_error
        # Meta refusing *our* token is not the client's to fix: never a 401 to the client
        world.meta.refuse = MetaAnswer(401, {"error": {"message": "bad token", "code": 190}})
        resp = await _meta_read(world, _read(inbound["_id"]))
        assert resp.status == 502


# --- pace --------------------------------------------------------------------------------------


def test_the_pacer_lets_a_burst_through_then_waits_then_refuses() -> None:
    pacer = passthrough.PassThroughPacer(rate=10, burst=3, max_wait=0.25)
    assert [pacer.admit("n", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.admit("n", 0.0) == pytest.approx(0.1)  # the 4th waits for its token
    assert pacer.admit("n", 0.0) == pytest.approx(0.2)
    assert pacer.admit("n", 0.0) is None  # 0.3 s away: over max_wait, refused, nothing taken
    assert pacer.retry_after("n") == pytest.approx(0.05)
    assert pacer.admit("other", 0.0) == 0.0  # each number its own bucket
    assert pacer.admit("n", 1.0) == 0.0  # refilled


async def test_calls_beyond_the_numbers_pace_wait_then_get_429_with_retry_after() -> None:
    async with World(pace=(2, 2, 0.5)) as world:
        wamid = world.inbox.user_wrote("acc_a", PHONE_A, WA_ID)["_id"]
        waits: list[float] = []

        async def concurrent(seconds: float) -> None:  # callers all at once: no time passes
            waits.append(seconds)

        world.calls.sleep = concurrent
        statuses = [(await _meta_read(world, _read(wamid))).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        assert waits == [pytest.approx(0.5)]  # the third waited for its turn
        resp = await _meta_read(world, _read(wamid))  # its turn would be 1 s away
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == 130429
        ours = await world.client.post(f"/v1/messages/{wamid}/read", headers=auth())
        assert ours.status == 429 and "Retry-After" in ours.headers
        assert (await ours.json())["error"]["code"] == "rate_limited"
        assert len(world.meta.calls) == 3


def test_a_refusal_of_an_unknown_object_is_not_found_else_meta_error() -> None:
    gone = passthrough.meta_refusal(
        400, {"error": {"code": 100, "error_subcode": 33, "message": "does not exist"}}
    )
    assert isinstance(gone, ServiceError) and gone.code == "not_found"
    down = passthrough.meta_refusal(503, b"<html>")
    assert isinstance(down, ServiceError) and down.code == "meta_error"
    assert down.details["meta_error"]["code"] == 2
