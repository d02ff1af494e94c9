"""ingest on the real database with documents written by status's own code: the window refuses
and then accepts, mark-as-read names what the number received, uploads are recorded in `media`,
received media belongs to its account only, and conversations show both directions."""

from __future__ import annotations

import aiohttp

from shared.collections import ACCOUNTS, MEDIA
from shared.messages import SEND_REQUESTED
from tests.integration.ingest.conftest import PHONE_A, PHONE_B, Platform
from tests.integration.ingest.kafka_probe import published_count


def _text(to: str, phone: str = PHONE_A) -> dict[str, object]:
    return {"from": phone, "to": to, "type": "text", "text": {"body": "hi"}}


async def test_a_closed_window_refuses_until_the_user_writes(platform: Platform) -> None:
    p = platform
    refused = await p.client.post("/v1/messages", json=_text("447912345123"), headers=p.a.auth)
    assert refused.status == 422
    assert (await refused.json())["error"]["code"] == "outside_customer_service_window"
    await p.user_wrote(PHONE_A, "447912345124", ago_seconds=25 * 3600)
    late = await p.client.post("/v1/messages", json=_text("447912345124"), headers=p.a.auth)
    assert late.status == 422
    assert await published_count(p.kafka, SEND_REQUESTED, p.prefix) == 0

    await p.user_wrote(PHONE_A, "447912345123")
    accepted = await p.client.post("/v1/messages", json=_text("447912345123"), headers=p.a.auth)
    assert accepted.status == 202, await accepted.text()
    # the switch, as the admin CLI writes it
    await p.db[ACCOUNTS].update_one(
        {"_id": p.a.account_id}, {"$set": {"customer_service_window_check": False}}
    )
    assert (
        await p.client.post("/v1/messages", json=_text("447912345125"), headers=p.a.auth)
    ).status == 202
    assert await published_count(p.kafka, SEND_REQUESTED, p.prefix) == 2


async def test_mark_as_read_goes_to_meta_for_what_the_number_received(platform: Platform) -> None:
    p = platform
    item = await p.user_wrote(PHONE_A, "447912345200")
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": item["id"],
        "typing_indicator": {"type": "text"},
    }
    resp = await p.client.post(f"/v24.0/{PHONE_A}/messages", json=body, headers=p.a.auth)
    assert resp.status == 200 and await resp.json() == {"success": True}
    [(call, token, sent)] = p.meta.calls
    assert (call, token) == ("read", "EAA-Alpha")  # decrypted from phone_numbers
    assert sent["message_id"] == item["id"] and sent["typing_indicator"] == {"type": "text"}
    other = await p.client.post(f"/v1/messages/{item['id']}/read", headers=p.b.auth)
    assert other.status == 422
    assert len(p.meta.calls) == 1
    assert await published_count(p.kafka, SEND_REQUESTED, p.prefix) == 0


async def test_an_upload_is_recorded_and_received_media_is_its_accounts_only(
    platform: Platform,
) -> None:
    p = platform
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7 tiny", filename="a.pdf", content_type="application/pdf")
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "application/pdf")
    resp = await p.client.post(f"/v24.0/{PHONE_A}/media", data=form, headers=p.a.auth)
    assert resp.status == 200, await resp.text()
    media_id = (await resp.json())["id"]
    doc = await p.db[MEDIA].find_one({"_id": media_id})
    assert doc is not None and doc["account_id"] == p.a.account_id
    assert (doc["mime_type"], doc["file_size"], doc["deleted_at"]) == ("application/pdf", 13, None)
    assert (await p.client.get(f"/v1/media/{media_id}", headers=p.b.auth)).status == 404
    assert (
        await (await p.client.get(f"/v1/media/{media_id}", headers=p.a.auth)).read()
        == b"%PDF-1.7 tiny"
    )

    p.meta.received("778899", "image/jpeg", b"\xff\xd8 photo")
    await p.user_wrote(
        PHONE_B,
        "447912345300",
        item={
            "type": "image",
            "image": {"id": "778899", "mime_type": "image/jpeg", "sha256": "x="},
        },
    )
    assert (
        await (await p.client.get("/v1/media/778899", headers=p.b.auth)).read() == b"\xff\xd8 photo"
    )
    assert (await p.client.get("/v1/media/778899", headers=p.a.auth)).status == 404


async def test_conversations_show_both_directions_from_the_real_collections(
    platform: Platform,
) -> None:
    p = platform
    await p.user_wrote(
        PHONE_A,
        "447912345400",
        ago_seconds=120,
        name="Dana",
        item={"type": "location", "location": {"latitude": 25.2, "longitude": 55.3}},
    )
    sent = await p.client.post("/v1/messages", json=_text("447912345400"), headers=p.a.auth)
    assert sent.status == 202
    await p.store_published()
    conversations = await (await p.client.get("/v1/conversations", headers=p.a.auth)).json()
    dana = next(c for c in conversations["data"] if c["wa_id"] == "447912345400")
    assert dana["contact_name"] == "Dana"
    assert dana["last_message"]["direction"] == "outbound"
    assert dana["customer_service_window"]["open"] is True
    thread = await (
        await p.client.get("/v1/conversations/447912345400/messages", headers=p.a.auth)
    ).json()
    assert [(m["direction"], m["type"]) for m in thread["data"]] == [
        ("outbound", "text"),
        ("inbound", "location"),
    ]
    assert thread["data"][1]["content"] == {"latitude": 25.2, "longitude": 55.3}
    b_view = await (await p.client.get("/v1/conversations", headers=p.b.auth)).json()
    assert "447912345400" not in {c["wa_id"] for c in b_view["data"]}
