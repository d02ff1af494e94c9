"""The contact list API over in-memory adapters: suppressions are published as change requests
(status applies them) and listed from status's documents; keywords are checked and replaced
whole; blocks are stored at once; every route is the caller's account's only."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from services.ingest.contact_schemas import (
    BlockedRecipientPage,
    BlockedRecipientView,
    OptOutKeywordsView,
    SuppressionPage,
    SuppressionRequestAccepted,
)
from shared import contact_lists
from shared.opt_out import DEFAULT_OPT_OUT_WORDS
from tests.unit.ingest.fakes import KEY_B, PHONE_A, PHONE_B, WABA_A, World, auth


async def call(
    world: World, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    resp = await world.client.request(
        method,
        path,
        data=None if body is None else orjson.dumps(body),
        headers={**auth(*(k for k in [key] if k)), "Content-Type": "application/json"},
    )
    text = await resp.text()
    return resp.status, orjson.loads(text) if text else None


def conforms(answer: Any, kind: type[msgspec.Struct]) -> None:
    """The answer is exactly what the OpenAPI document declares."""
    msgspec.convert(answer, kind)


async def test_a_suppression_is_published_for_status_and_listed_once_applied() -> None:
    async with World() as world:
        status, body = await call(
            world,
            "POST",
            "/v1/suppressions",
            {"phone_number_id": PHONE_A, "recipient": "(650) 253-0000", "note": "by phone"},
        )
        assert status == 202
        conforms(body, SuppressionRequestAccepted)
        [event] = world.publisher.suppression_requests
        assert (
            event.account_id,
            event.waba_id,
            event.phone_number_id,
            event.wa_id,
            event.suppressed,
            event.source,
            event.note,
        ) == ("acc_a", WABA_A, PHONE_A, "16502530000", True, "api", "by phone")
        # a national number is read in the sending number's country (+1 here)
        assert body["recipient"] == "+16502530000" and body["request_id"] == event.event_id
        # status applies it (here: its document written as status would)
        doc = contact_lists.suppression_doc(
            account_id="acc_a",
            phone_number_id=PHONE_A,
            wa_id=event.wa_id,
            suppressed=True,
            source="api",
            at=event.requested_at,
            now_ms=event.requested_at,
            detail=event.note,
        )
        world.contacts.suppression_docs[doc["_id"]] = doc
        status, page = await call(world, "GET", "/v1/suppressions")
        conforms(page, SuppressionPage)
        assert status == 200 and [s["recipient"] for s in page["data"]] == ["+16502530000"]
        assert page["data"][0]["note"] == "by phone"
        # another account sees none of it
        assert (await call(world, "GET", "/v1/suppressions", key=KEY_B))[1]["data"] == []


async def test_a_resubscription_is_published_too() -> None:
    async with World() as world:
        status, body = await call(world, "DELETE", f"/v1/suppressions/{PHONE_A}/+447911123456")
        assert status == 202 and body["suppressed"] is False
        assert world.publisher.suppression_requests[0].suppressed is False


async def test_suppression_requests_are_checked() -> None:
    async with World() as world:
        foreign = await call(
            world,
            "POST",
            "/v1/suppressions",
            {"phone_number_id": PHONE_B, "recipient": "+447911123456"},
        )
        assert foreign[0] == 403 and foreign[1]["error"]["code"] == "foreign_phone_number"
        bad = await call(
            world,
            "POST",
            "/v1/suppressions",
            {"phone_number_id": PHONE_A, "recipient": "not a number"},
        )
        assert bad[1]["error"] == {
            "code": "invalid_phone_number",
            "message": bad[1]["error"]["message"],
            "details": {"field": "recipient"},
        }
        unknown = await call(
            world,
            "POST",
            "/v1/suppressions",
            {"phone_number_id": PHONE_A, "recipient": "+447911123456", "extra": 1},
        )
        assert unknown[1]["error"]["code"] == "unknown_field"
        assert world.publisher.suppression_requests == []
        query = await call(world, "GET", "/v1/suppressions?limit=0")
        assert query[1]["error"]["code"] == "invalid_field"
        listing = await call(world, "GET", f"/v1/suppressions?phone_number_id={PHONE_B}")
        assert listing[1]["error"]["code"] == "foreign_phone_number"


async def test_keywords_read_the_defaults_and_are_replaced_whole() -> None:
    async with World() as world:
        status, view = await call(world, "GET", "/v1/opt-out-keywords")
        conforms(view, OptOutKeywordsView)
        assert status == 200 and view["opt_out"] == list(DEFAULT_OPT_OUT_WORDS)
        assert view["opt_out_default"] and view["opt_in_default"]
        status, view = await call(
            world, "PUT", "/v1/opt-out-keywords", {"opt_out": ["STOP", " Cancel  promos "]}
        )
        assert status == 200 and view["opt_out"] == ["STOP", "Cancel promos"]
        assert not view["opt_out_default"] and view["opt_in_default"]
        assert world.contacts.keyword_docs["acc_a"]["opt_in"] is None
        assert (await call(world, "GET", "/v1/opt-out-keywords"))[1] == view
        reset = (await call(world, "PUT", "/v1/opt-out-keywords", {}))[1]
        assert reset["opt_out_default"] and reset["opt_in_default"]


async def test_unusable_keywords_are_refused() -> None:
    async with World() as world:
        clash = await call(
            world, "PUT", "/v1/opt-out-keywords", {"opt_out": ["GO"], "opt_in": ["go!"]}
        )
        assert clash[0] == 400 and clash[1]["error"]["code"] == "invalid_field"
        assert clash[1]["error"]["details"]["field"] == "opt_in"
        empty = await call(world, "PUT", "/v1/opt-out-keywords", {"opt_out": ["!!"]})
        assert empty[1]["error"]["details"] == {"field": "opt_out", "keyword": "!!"}
        too_long = await call(world, "PUT", "/v1/opt-out-keywords", {"opt_out": ["x" * 65]})
        assert too_long[1]["error"]["code"] == "invalid_field"
        assert world.contacts.keyword_docs == {}


async def test_blocks_are_stored_listed_and_removed() -> None:
    async with World() as world:
        status, view = await call(
            world, "POST", "/v1/blocked-recipients", {"recipient": "447911123456", "note": "abuse"}
        )
        assert status == 201
        conforms(view, BlockedRecipientView)
        assert (view["recipient"], view["note"], view["source"]) == (
            "+447911123456",
            "abuse",
            "api",
        )
        again = await call(
            world, "POST", "/v1/blocked-recipients", {"recipient": "+44 7911 123456"}
        )
        assert again[0] == 200 and again[1]["note"] == "abuse"
        status, page = await call(world, "GET", "/v1/blocked-recipients")
        conforms(page, BlockedRecipientPage)
        assert [b["recipient"] for b in page["data"]] == ["+447911123456"]
        assert (await call(world, "GET", "/v1/blocked-recipients", key=KEY_B))[1]["data"] == []
        assert (await call(world, "DELETE", "/v1/blocked-recipients/447911123456", key=KEY_B))[
            0
        ] == 404  # not another account's to lift
        assert (await call(world, "DELETE", "/v1/blocked-recipients/+447911123456"))[0] == 204
        assert (await call(world, "DELETE", "/v1/blocked-recipients/+447911123456"))[0] == 404


async def test_a_block_through_this_process_applies_to_its_next_send_at_once() -> None:
    async with World(send_rules_cache_seconds=60) as world:
        send = {"from": PHONE_A, "to": "+447911123456", "type": "text", "text": {"body": "hi"}}
        assert (await call(world, "POST", "/v1/messages", send))[0] == 202
        await call(world, "POST", "/v1/blocked-recipients", {"recipient": "+447911123456"})
        assert (await call(world, "POST", "/v1/messages", send))[1]["error"]["code"] == (
            "recipient_blocked"
        )
        await call(world, "DELETE", "/v1/blocked-recipients/+447911123456")
        assert (await call(world, "POST", "/v1/messages", send))[0] == 202


async def test_pages_follow_their_cursor() -> None:
    async with World() as world:
        for i in range(5):
            world.clock.advance(1)
            await call(world, "POST", "/v1/blocked-recipients", {"recipient": f"+44791112345{i}"})
        first = (await call(world, "GET", "/v1/blocked-recipients?limit=3"))[1]
        second = (
            await call(
                world, "GET", f"/v1/blocked-recipients?limit=3&cursor={first['next_cursor']}"
            )
        )[1]
        seen = [b["recipient"] for b in first["data"] + second["data"]]
        assert seen == [f"+44791112345{i}" for i in reversed(range(5))]
        assert second["next_cursor"] is None
