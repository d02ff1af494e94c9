"""Conversations for the business: the contacts who wrote, with their newest message of either
direction and their window; one contact's messages of both directions merged in time order with
a cursor; accounts never see each other's. Views are checked against the declared answers."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from services.ingest import conversations as conv
from services.ingest.schemas import ConversationPage, ThreadPage
from shared.message_docs import from_ms
from tests.unit.ingest.fakes import KEY_B, PHONE_A, World, auth, text_body

NOW = 1_764_000_000_000
WA_ID = "447912345678"


def _inbound(ms: int, wamid: str, **extra: Any) -> dict[str, Any]:
    item = {
        "from": WA_ID,
        "id": wamid,
        "timestamp": str(ms // 1000),
        "type": "text",
        "text": {"body": f"in {ms}"},
    }
    return {
        "_id": wamid,
        "account_id": "a",
        "phone_number_id": PHONE_A,
        "wa_id": WA_ID,
        "direction": "inbound",
        "type": "text",
        "content": orjson.dumps(item).decode(),
        "sent_at": ms,
        **extra,
    }


def _outbound(ms: int, message_id: str) -> dict[str, Any]:
    return {
        "_id": message_id,
        "account_id": "a",
        "phone_number_id": PHONE_A,
        "recipient": "+" + WA_ID,
        "type": "text",
        "content": orjson.dumps({"body": f"out {ms}"}).decode(),
        "status": "delivered",
        "created_at": from_ms(ms),
        "wamid": f"wamid.OUT{ms}",
    }


def _page(
    inbound: list[dict[str, Any]],
    outbound: list[dict[str, Any]],
    limit: int,
    newest_first: bool = True,
    cursor: str | None = None,
) -> dict[str, Any]:
    """What the handler does: each source past the cursor in order, up to limit + 1."""
    query = conv.ThreadQuery(
        WA_ID, limit, newest_first, None, conv.decode_cursor(cursor) if cursor else None
    )

    def past(docs: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
        docs = sorted(docs, key=key, reverse=newest_first)
        if query.after is not None:
            mark = (query.after.at, query.after.id)
            docs = [d for d in docs if (key(d) < mark if newest_first else key(d) > mark)]
        return docs[: limit + 1]

    return conv.thread_page(
        past(inbound, conv.inbound_key), past(outbound, conv.outbound_key), query
    )


def test_both_directions_merge_in_time_order_and_the_cursor_walks_every_item_once() -> None:
    inbound = [_inbound(NOW + t, f"wamid.{t}") for t in (0, 3000, 3001, 9000)]
    outbound = [_outbound(NOW + t, f"msg_{t}") for t in (1000, 3000, 8000)]
    for newest_first in (True, False):
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = _page(inbound, outbound, 2, newest_first, cursor)
            msgspec.convert(page, ThreadPage)  # the declared answer
            seen += [item["id"] for item in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = [
            "wamid.0",
            "msg_1000",
            "msg_3000",
            "wamid.3000",
            "wamid.3001",
            "msg_8000",
            "wamid.9000",
        ]
        assert seen == (expected[::-1] if newest_first else expected)


def test_a_thread_item_shows_metas_object_for_the_type_and_our_status() -> None:
    image = {"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "x=", "caption": "look"}
    doc = _inbound(
        NOW,
        "wamid.img",
        type="image",
        media_id="1479537139650973",
        context_wamid="wamid.OUT1",
        content=orjson.dumps(
            {
                "from": WA_ID,
                "id": "wamid.img",
                "type": "image",
                "image": image,
                "referral": {"source_type": "ad"},
                "context": {"id": "wamid.OUT1"},
            }
        ).decode(),
    )
    item = conv.inbound_item(doc)
    assert item["content"] == image and item["media_id"] == "1479537139650973"
    assert item["context_message_id"] == "wamid.OUT1"
    assert item["referral"] == {"source_type": "ad"}
    assert item["at"] == "2025-11-24T16:00:00.000Z" and item["direction"] == "inbound"
    out = conv.outbound_item(_outbound(NOW, "msg_1"))
    assert out["content"] == {"body": f"out {NOW}"} and out["status"] == "delivered"
    # past retention status removed the content: shown as null, never an error
    anonymised = conv.inbound_item({**doc, "content": None})
    assert anonymised["content"] is None and anonymised["type"] == "image"
    echo = conv.inbound_item({**doc, "direction": "echo"})
    assert echo["direction"] == "echo"


def test_the_last_message_is_the_newer_of_either_direction() -> None:
    conversation = {
        "_id": f"{PHONE_A}:{WA_ID}",
        "wa_id": WA_ID,
        "phone_number_id": PHONE_A,
        "contact_name": "Ana",
        "last_message_at": NOW,
        "window_expires_at": NOW + 24 * 3600_000,
    }
    newer_out = conv.conversation_view(
        conversation, _inbound(NOW, "w1"), _outbound(NOW + 5, "msg_1"), NOW + 10
    )
    assert newer_out["last_message"]["id"] == "msg_1"
    assert newer_out["customer_service_window"] == {
        "open": True,
        "expires_at": "2025-11-25T16:00:00.000Z",
    }
    newer_in = conv.conversation_view(
        conversation, _inbound(NOW + 9, "w2"), _outbound(NOW + 5, "msg_1"), NOW + 25 * 3600_000
    )
    assert newer_in["last_message"]["id"] == "w2"
    assert newer_in["customer_service_window"]["open"] is False
    msgspec.convert({"data": [newer_in, newer_out], "next_cursor": None}, ConversationPage)
    nothing = conv.conversation_view(conversation, None, None, NOW)
    assert nothing["last_message"] is None and nothing["last_message_at"] is not None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, "invalid_field"),
        ({"limit": "101"}, "invalid_field"),
        ({"order": "sideways"}, "invalid_field"),
        ({"cursor": "nope"}, "invalid_cursor"),
        ({"phone_number_id": "abc"}, "invalid_field"),
        ({"colour": "x"}, "unknown_field"),
    ],
)
def test_a_bad_thread_query_names_its_parameter(params: dict[str, str], code: str) -> None:
    with pytest.raises(Exception) as refused:
        conv.parse_thread_query(WA_ID, params)
    assert refused.value.code == code  # type: ignore[attr-defined]


# --- through the API ---------------------------------------------------------------------------


async def test_the_account_sees_its_contacts_latest_first_and_nobody_elses() -> None:
    async with World() as world:
        world.inbox.user_wrote("acc_a", PHONE_A, "447912345678", ago_seconds=300, name="Ana")
        world.inbox.user_wrote("acc_a", PHONE_A, "447912345679", ago_seconds=30 * 3600, name="Bo")
        world.inbox.user_wrote("acc_b", "118243906275101", "447912345670", name="Cy")
        sent = await world.client.post(
            "/v1/messages", json=text_body(to="447912345678"), headers=auth()
        )
        assert sent.status == 202
        world.store_published()
        resp = await world.client.get("/v1/conversations?limit=1", headers=auth())
        page = msgspec.convert(await resp.json(), ConversationPage)
        [first] = page.data
        assert (first.wa_id, first.contact_name) == ("447912345678", "Ana")
        assert first.last_message is not None and first.last_message.direction == "outbound"
        assert first.customer_service_window.open is True
        assert page.next_cursor is not None
        resp = await world.client.get(
            f"/v1/conversations?cursor={page.next_cursor}", headers=auth()
        )
        rest = msgspec.convert(await resp.json(), ConversationPage)
        assert [(c.wa_id, c.customer_service_window.open) for c in rest.data] == [
            ("447912345679", False)
        ]
        assert rest.next_cursor is None
        other = await (await world.client.get("/v1/conversations", headers=auth(KEY_B))).json()
        assert [c["wa_id"] for c in other["data"]] == ["447912345670"]


async def test_a_contacts_messages_in_both_directions_through_the_api() -> None:
    async with World() as world:
        world.inbox.user_wrote("acc_a", PHONE_A, WA_ID, ago_seconds=60, wamid="wamid.A")
        world.clock.advance(1)
        assert (
            await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        ).status == 202
        world.store_published()
        world.clock.advance(1)
        world.inbox.user_wrote(
            "acc_a",
            PHONE_A,
            WA_ID,
            ago_seconds=0,
            wamid="wamid.B",
            message_type="location",
            content={"latitude": 25.2, "longitude": 55.3},
        )
        resp = await world.client.get(f"/v1/conversations/{WA_ID}/messages", headers=auth())
        page = msgspec.convert(await resp.json(), ThreadPage)
        assert [(m.direction, m.type) for m in page.data] == [
            ("inbound", "location"),
            ("outbound", "text"),
            ("inbound", "text"),
        ]
        assert page.data[0].content == {"latitude": 25.2, "longitude": 55.3}
        asc = await (
            await world.client.get(
                f"/v1/conversations/+{WA_ID}/messages?order=asc&phone_number_id={PHONE_A}",
                headers=auth(),
            )
        ).json()
        assert [m["id"] for m in asc["data"]] == [m.id for m in reversed(page.data)]
        other = await (
            await world.client.get(f"/v1/conversations/{WA_ID}/messages", headers=auth(KEY_B))
        ).json()
        assert other == {"data": [], "next_cursor": None}
        bad = await world.client.get(
            f"/v1/conversations/{WA_ID}/messages?limit=500", headers=auth()
        )
        assert bad.status == 400
