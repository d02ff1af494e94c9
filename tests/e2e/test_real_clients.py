"""Things nobody here wrote, end to end through the whole platform and the simulator:

* pywa 4.5 (an unmodified, widely used Cloud API client), pointed at ingest by its base URL
  alone, with an API key as its token, sends every basic kind of message, uploads media, marks
  a message read and shows the typing indicator, and gets a media URL and downloads it; each
  request reaches the simulator in Meta's shape;
* each inbound type a user can send shows up in `/v1/conversations/{wa_id}/messages` with its
  content, and its media downloads byte for byte (also through pywa);
* the customer-service window: a free-form message to a contact who never wrote is refused,
  and accepted once they have.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import httpx
import orjson
from pywa.types import Button, Contact, Section, SectionList, SectionRow
from pywa.types.templates import BodyText, HeaderImage, TemplateLanguage
from pywa_async import WhatsApp

from tests.e2e.conftest import Account, Stack, eventually, seed_accounts

TOP_UP = 50_000_000
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def pywa_client(stack: Stack, account: Account) -> WhatsApp:
    """pywa as a client would use it, but for the base URL: pywa 4.5 hard-codes Meta's on its
    httpx session, so it is pointed at ingest there; the token is the account's API key."""
    wa = WhatsApp(phone_id=account.numbers[0], token=account.api_key, api_version="24.0")
    wa.api._session.base_url = f"{stack.url('ingest')}/v24.0"
    return wa


async def ingest(
    stack: Stack, account: Account, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{stack.url('ingest')}{path}",
            headers={"Authorization": f"Bearer {account.api_key}"},
            **kwargs,
        ) as resp,
    ):
        body = await resp.read()
        return resp.status, (await resp.json() if resp.content_type == "application/json" else body)


async def thread(stack: Stack, account: Account, wa_id: str) -> dict[str, dict[str, Any]]:
    status, page = await ingest(
        stack, account, "GET", f"/v1/conversations/{wa_id}/messages?limit=100"
    )
    assert status == 200, page
    return {item["id"]: item for item in page["data"]}


async def until_stored(stack: Stack, account: Account, wa_id: str, wamids: set[str]) -> None:
    """Until status has stored these inbound messages (the webhook is asynchronous)."""

    async def stored() -> bool | str:
        missing = wamids - set(await thread(stack, account, wa_id))
        return True if not missing else f"{len(missing)} not stored yet"

    await eventually(stored, within=60, every=0.3, what="inbound messages stored")


async def test_pywa_pointed_at_ingest_sends_every_kind_in_metas_shape(stack: Stack) -> None:
    [account, *_] = await seed_accounts(stack, TOP_UP)
    number, user = account.numbers[0], "447912345678"
    # The user writes first: the business may then send free-form messages, react to it,
    # mark it read.
    inbound = await stack.sim(
        "POST",
        "/_sim/inbound",
        json={
            "phone_number_id": number,
            "from": user,
            "text": "Hi, where is my order?",
            "name": "Ana",
        },
    )
    await until_stored(stack, account, user, {inbound["wamid"]})

    wa = pywa_client(stack, account)
    requests: list[tuple[str, str, bytes]] = []

    async def record(request: httpx.Request) -> None:
        if request.headers.get("content-type", "").startswith("application/json"):
            requests.append((request.method, request.url.path, request.content))

    wa.api._session.event_hooks["request"].append(record)
    try:
        sent = {
            "text": await wa.send_message(to=user, text="hi https://x.com", preview_url=True),
            "image by link": await wa.send_image(
                to=user, image="https://example.com/a.png", caption="cap"
            ),
            # pywa uploads the bytes itself (POST /media), then sends the image by its id
            "image by upload": await wa.send_image(to=user, image=PNG, mime_type="image/png"),
            "document": await wa.send_document(
                to=user, document="https://example.com/a.pdf", filename="a.pdf", caption="doc"
            ),
            "location": await wa.send_location(
                to=user, latitude=37.4, longitude=-122.1, name="HQ", address="1 St"
            ),
            "contacts": await wa.send_contact(
                to=user,
                contact=Contact(
                    name=Contact.Name(formatted_name="Ana B", first_name="Ana"),
                    phones=[
                        Contact.Phone(phone="+447911123456", type="MOBILE", wa_id="447911123456")
                    ],
                ),
            ),
            "buttons": await wa.send_message(
                to=user,
                text="pick",
                buttons=[
                    Button(title="Yes", callback_data="y"),
                    Button(title="No", callback_data="n"),
                ],
            ),
            "list": await wa.send_message(
                to=user,
                text="list",
                buttons=SectionList(
                    button_title="Choose",
                    sections=[
                        Section(
                            title="S",
                            rows=[SectionRow(title="R1", callback_data="r1", description="d")],
                        )
                    ],
                ),
            ),
            "template": await wa.send_template(
                to=user,
                name="order_shipped",
                language=TemplateLanguage.ENGLISH_US,
                params=[
                    HeaderImage.params(image="https://example.com/h.png"),
                    BodyText.params("Ana", "123"),
                ],
            ),
            "reaction": await wa.send_reaction(
                to=user, emoji="\U0001f44d", message_id=inbound["wamid"]
            ),
        }
        read = await wa.mark_message_as_read(message_id=inbound["wamid"])
        typing = await wa.indicate_typing(message_id=inbound["wamid"])
        assert read.success and typing.success

        # What pywa wrote, in order: its sends (not the two status calls).
        bodies = [
            httpx.Response(200, content=content).json()
            for method, path, content in requests
            if method == "POST" and path.endswith("/messages")
        ]
        sends = [b for b in bodies if "status" not in b]
        assert len(sends) == len(sent)
        assert sends[2]["image"].keys() == {"id"}  # the uploaded image went by id
        media_id = sends[2]["image"]["id"]

        # Each reached the simulator in Meta's shape: pywa's object for the type as it wrote
        # it, `to` as E.164, our message id as the callback data.
        ids = {name: message.id for name, message in sent.items()}

        async def all_at_meta() -> bool | str:
            at_meta = (await stack.sim("GET", "/_sim/sends", params={"phone_number_id": number}))[
                "sends"
            ]
            found = {s["biz_opaque_callback_data"] for s in at_meta}
            missing = [name for name, message_id in ids.items() if message_id not in found]
            return True if not missing else f"not at Meta yet: {missing}"

        await eventually(all_at_meta, within=90, every=0.5, what="every send at Meta")
        at_meta = {
            s["biz_opaque_callback_data"]: s
            for s in (await stack.sim("GET", "/_sim/sends", params={"phone_number_id": number}))[
                "sends"
            ]
        }
        for (name, message_id), ours in zip(ids.items(), sends, strict=True):
            body = at_meta[message_id]["body"]
            kind = ours["type"]
            assert body["type"] == kind, name
            assert body[kind] == ours[kind], name
            assert body["to"].lstrip("+") == ours["to"] == user, name
            assert body["messaging_product"] == "whatsapp"
            assert body["biz_opaque_callback_data"] == message_id, name

        # mark-as-read and typing reached Meta as pywa wrote them
        receipts = (
            await stack.sim("GET", "/_sim/read-receipts", params={"phone_number_id": number})
        )["read_receipts"]
        assert [(r["message_id"], bool(r["typing_indicator"])) for r in receipts] == [
            (inbound["wamid"], False),
            (inbound["wamid"], True),
        ]
        status_bodies = [b for b in bodies if "status" in b]
        assert [orjson.loads(r["body"]) for r in receipts] == status_bodies

        # the upload is Meta's, byte for byte; its URL is ingest's, and pywa downloads it
        uploaded = await stack.sim("GET", f"/_sim/media/{media_id}")
        assert base64.b64decode(uploaded["content_b64"]) == PNG
        assert uploaded["mime_type"] == "image/png" and uploaded["origin"] == "upload"
        url = await wa.get_media_url(media_id)
        assert url.url == f"{stack.url('ingest')}/v1/media/{media_id}"
        assert url.mime_type == "image/png" and int(url.file_size) == len(PNG)
        assert await wa.get_media_bytes(url.url) == PNG
    finally:
        await wa.api._session.aclose()


MEDIA = {
    "image": ("image/jpeg", b"\xff\xd8\xff\xe0 a photo " * 50, {"caption": "look"}),
    "video": ("video/mp4", b"\x00\x00\x00\x18ftypmp42 a video " * 80, {"caption": "clip"}),
    "audio": ("audio/ogg", b"OggS a voice note " * 30, {"voice": True}),
    "document": (
        "application/pdf",
        b"%PDF-1.7 an invoice " * 40,
        {"filename": "invoice.pdf", "caption": "invoice"},
    ),
    "sticker": ("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 " * 10, {}),
}


async def test_every_inbound_type_reaches_the_conversation_and_its_media_downloads(
    stack: Stack,
) -> None:
    account, other, *_ = await seed_accounts(stack, TOP_UP)
    number, user = account.numbers[0], "447912345670"

    # The window: the user never wrote, so a free-form message is refused before anything.
    text = {"from": number, "to": user, "type": "text", "text": {"body": "Hello!"}}
    status, refused = await ingest(stack, account, "POST", "/v1/messages", json=text)
    assert status == 422
    assert refused["error"]["code"] == "outside_customer_service_window"

    async def inbound(**message: Any) -> dict[str, Any]:
        return await stack.sim(
            "POST",
            "/_sim/inbound",
            json={"phone_number_id": number, "from": user, "name": "Ana", **message},
        )

    first = await inbound(
        text="Hello, I saw your ad",
        referral={
            "source_url": "https://fb.me/ad",
            "source_type": "ad",
            "source_id": "120",
            "headline": "Sale",
        },
    )
    sent: dict[str, dict[str, Any]] = {"text": first}
    for kind, (mime, data, extra) in MEDIA.items():
        sent[kind] = await inbound(
            media={"content_b64": base64.b64encode(data).decode(), "mime_type": mime, **extra}
        )
    sent["location"] = await inbound(
        location={"latitude": 25.2, "longitude": 55.3, "name": "Office"}
    )
    sent["contacts"] = await inbound(
        contacts=[
            {
                "name": {"formatted_name": "Bo C", "first_name": "Bo"},
                "phones": [{"phone": "+447911123457", "wa_id": "447911123457"}],
            }
        ]
    )
    sent["button_reply"] = await inbound(
        interactive={"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}},
        context_message_id=first["wamid"],
    )
    sent["list_reply"] = await inbound(
        interactive={
            "type": "list_reply",
            "list_reply": {"id": "r1", "title": "R1", "description": "d"},
        }
    )
    sent["button"] = await inbound(button={"payload": "more-aloes", "text": "More"})
    sent["reaction"] = await inbound(reaction={"message_id": first["wamid"], "emoji": "\u2764"})
    sent["order"] = await inbound(
        order={
            "catalog_id": "1234",
            "product_items": [
                {"product_retailer_id": "SKU1", "quantity": 2, "item_price": 10, "currency": "USD"}
            ],
        }
    )
    sent["unsupported"] = await inbound(type="unsupported")
    sent["request_welcome"] = await inbound(type="request_welcome")
    await until_stored(stack, account, user, {s["wamid"] for s in sent.values()})

    items = await thread(stack, account, user)
    content = {kind: items[s["wamid"]]["content"] for kind, s in sent.items()}
    assert content["text"] == {"body": "Hello, I saw your ad"}
    assert items[first["wamid"]]["referral"]["source_id"] == "120"
    for kind, (mime, _, extra) in MEDIA.items():
        assert (
            content[kind]["id"] == sent[kind]["media_id"] == items[sent[kind]["wamid"]]["media_id"]
        ), kind
        assert content[kind]["mime_type"] == mime, kind
        for key, value in extra.items():
            assert content[kind][key] == value, (kind, key)
    assert content["location"] == {"latitude": 25.2, "longitude": 55.3, "name": "Office"}
    assert content["contacts"][0]["name"]["formatted_name"] == "Bo C"
    assert content["button_reply"]["button_reply"] == {"id": "y", "title": "Yes"}
    assert items[sent["button_reply"]["wamid"]]["context_message_id"] == first["wamid"]
    assert content["list_reply"]["list_reply"]["id"] == "r1"
    assert content["button"] == {"payload": "more-aloes", "text": "More"}
    assert content["reaction"] == {"message_id": first["wamid"], "emoji": "\u2764"}
    assert content["order"]["product_items"][0]["product_retailer_id"] == "SKU1"
    assert items[sent["unsupported"]["wamid"]]["errors"][0]["code"] == 131051
    assert items[sent["request_welcome"]["wamid"]]["type"] == "request_welcome"
    assert {item["direction"] for item in items.values()} == {"inbound"}

    # Each media file downloads byte for byte, with its type, for this account only.
    for kind, (mime, data, _) in MEDIA.items():
        media_id = sent[kind]["media_id"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.url('ingest')}/v1/media/{media_id}",
                headers={"Authorization": f"Bearer {account.api_key}"},
            ) as resp,
        ):
            assert (resp.status, resp.content_type) == (200, mime), kind
            assert await resp.read() == data, kind
        status, _ = await ingest(stack, other, "GET", f"/v1/media/{media_id}")
        assert status == 404, kind
    wa = pywa_client(stack, account)
    try:
        url = await wa.get_media_url(sent["image"]["media_id"])
        assert url.mime_type == "image/jpeg"
        assert await wa.get_media_bytes(url.url) == MEDIA["image"][1]
    finally:
        await wa.api._session.aclose()

    # The conversation: the contact, their last message, the window open.
    status, conversations = await ingest(stack, account, "GET", "/v1/conversations")
    [ana] = [c for c in conversations["data"] if c["wa_id"] == user]
    assert ana["contact_name"] == "Ana" and ana["customer_service_window"]["open"] is True

    # Now that the user wrote, the free-form message is accepted (ingest remembers a closed
    # window for a second: within it the refusal may still stand, and nothing is created by
    # a refused request) and reaches Meta.
    accepted: dict[str, Any] = {}

    async def accepted_now() -> bool | str:
        status, answer = await ingest(stack, account, "POST", "/v1/messages", json=text)
        if status == 202:
            accepted.update(answer)
            return True
        return f"{status}: {answer['error']['code']}"

    await eventually(accepted_now, within=10, every=0.25, what="the reply accepted")

    async def at_meta() -> bool | str:
        sends = (
            await stack.sim(
                "GET", "/_sim/sends", params={"biz_opaque_callback_data": accepted["id"]}
            )
        )["sends"]
        return True if sends else "not at Meta yet"

    await eventually(at_meta, within=60, what="the reply at Meta")
    items = await thread(stack, account, user)
    assert items[accepted["id"]]["direction"] == "outbound"
