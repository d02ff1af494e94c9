"""`POST /_sim/inbound`: every inbound message type reaches the webhook in Meta's shape."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tests.metasim.conftest import (
    A1_NUMBER,
    B1_NUMBER,
    BSP_TOKEN,
    UK_USER,
    MakeSim,
    Receiver,
    verify_signature,
    wait_for,
)

OGG = b"OggS" + bytes(range(200))
PDF = b"%PDF-1.7\n" + bytes(range(100))


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


async def delivered_message(receiver: Receiver, wamid: str) -> tuple[dict, dict]:
    """(value, message) of the webhook that carried `wamid`; checks the signature too."""

    def find() -> tuple[dict, dict] | None:
        for headers, raw in receiver.posts:
            payload = json.loads(raw)
            for entry in payload["entry"]:
                for change in entry["changes"]:
                    for message in change["value"].get("messages", []):
                        if message["id"] == wamid:
                            assert verify_signature(raw, headers["X-Hub-Signature-256"])
                            assert "time" not in entry and change["field"] == "messages"
                            return change["value"], message
        return None

    return await wait_for(find, what=f"webhook with {wamid}")


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {"text": "Does it come in another color?"},
        {"text": {"body": "Does it come in another color?"}},
    ),
    (
        {
            "type": "location",
            "location": {"latitude": 37.44, "longitude": -122.16, "name": "Philz"},
        },
        {"location": {"latitude": 37.44, "longitude": -122.16, "name": "Philz"}},
    ),
    (
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {"formatted_name": "Barbara J. Johnson", "first_name": "Barbara"},
                    "phones": [
                        {"phone": "+1 (940) 555-1234", "wa_id": "19405551234", "type": "HOME"}
                    ],
                }
            ],
        },
        {
            "contacts": [
                {
                    "name": {"formatted_name": "Barbara J. Johnson", "first_name": "Barbara"},
                    "phones": [
                        {"phone": "+1 (940) 555-1234", "wa_id": "19405551234", "type": "HOME"}
                    ],
                }
            ]
        },
    ),
    (
        {
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
            "context_message_id": "wamid.OUT1",
        },
        {
            "context": {"from": "15550001001", "id": "wamid.OUT1"},
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
        },
    ),
    (
        {
            "type": "interactive",
            "interactive": {
                "type": "list_reply",
                "list_reply": {"id": "ground", "title": "Ground", "description": "3-5 days"},
            },
        },
        {
            "interactive": {
                "type": "list_reply",
                "list_reply": {"id": "ground", "title": "Ground", "description": "3-5 days"},
            }
        },
    ),
    (
        {
            "type": "interactive",
            "interactive": {
                "type": "nfm_reply",
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": {"flow_token": "T"}},
            },
        },
        {
            "interactive": {
                "type": "nfm_reply",
                "nfm_reply": {
                    "name": "flow",
                    "body": "Sent",
                    "response_json": '{"flow_token":"T"}',
                },
            }
        },
    ),
    (
        {"type": "button", "button": {"payload": "stop-promos", "text": "Stop promotions"}},
        {"button": {"payload": "stop-promos", "text": "Stop promotions"}},
    ),
    (
        {"type": "reaction", "reaction": {"message_id": "wamid.OUT2", "emoji": "\U0001f44d"}},
        {"reaction": {"message_id": "wamid.OUT2", "emoji": "\U0001f44d"}},
    ),
    (
        {
            "type": "order",
            "order": {
                "catalog_id": "194836987003835",
                "text": "Love these!",
                "product_items": [
                    {
                        "product_retailer_id": "di9ozbzfi4",
                        "quantity": 2,
                        "item_price": 30,
                        "currency": "USD",
                    }
                ],
            },
        },
        {
            "order": {
                "catalog_id": "194836987003835",
                "text": "Love these!",
                "product_items": [
                    {
                        "product_retailer_id": "di9ozbzfi4",
                        "quantity": 2,
                        "item_price": 30,
                        "currency": "USD",
                    }
                ],
            }
        },
    ),
    (
        {"type": "unsupported", "unsupported": {"type": "edit"}},
        {
            "unsupported": {"type": "edit"},
            "errors": [
                {
                    "code": 131051,
                    "title": "Message type unknown",
                    "message": "Message type unknown",
                    "error_data": {"details": "Message type is currently not supported."},
                }
            ],
        },
    ),
    ({"type": "request_welcome"}, {}),
    (
        {
            "text": "Hi, I saw your ad",
            "referral": {
                "source_url": "https://fb.me/3cr4Wqqkv",
                "source_id": "120226305854810726",
                "source_type": "ad",
                "headline": "Chat with us",
                "media_type": "image",
                "image_url": "https://x/ad.png",
                "ctwa_clid": "Aff-n8ZT",
            },
            "context": {"forwarded": True},
        },
        {
            "text": {"body": "Hi, I saw your ad"},
            "context": {"forwarded": True},
            "referral": {
                "source_url": "https://fb.me/3cr4Wqqkv",
                "source_id": "120226305854810726",
                "source_type": "ad",
                "headline": "Chat with us",
                "media_type": "image",
                "image_url": "https://x/ad.png",
                "ctwa_clid": "Aff-n8ZT",
            },
        },
    ),
]


@pytest.mark.parametrize(("control", "expected"), CASES, ids=lambda c: str(c)[:40])
async def test_inbound_types_reach_the_webhook_in_metas_shape(
    make_sim: MakeSim, receiver: Receiver, control: dict, expected: dict
) -> None:
    sim = await make_sim(receiver)
    status, answer = await sim.control(
        "POST", "/_sim/inbound", {"phone_number_id": A1_NUMBER, "from": UK_USER, **control}
    )
    assert status == 200, answer
    kind = control.get("type", "text")
    assert answer["type"] == kind and answer["wa_id"] == "447700900123"
    value, message = await delivered_message(receiver, answer["wamid"])
    assert value["contacts"] == [{"profile": {"name": "Test User"}, "wa_id": "447700900123"}]
    assert message == {
        "from": "447700900123",
        "id": answer["wamid"],
        "timestamp": str(int(sim.clock.wall())),
        "type": kind,
        **expected,
    }


@pytest.mark.parametrize(
    ("kind", "content", "mime_type", "extra", "expected_extra"),
    [
        ("image", b"\x89PNG" + bytes(50), "image/png", {"caption": "look"}, {"caption": "look"}),
        ("video", b"\x00\x00\x00\x18ftyp" + bytes(50), "video/mp4", {}, {}),
        ("audio", OGG, "audio/ogg; codecs=opus", {"voice": True}, {"voice": True}),
        (
            "document",
            PDF,
            "application/pdf",
            {"filename": "invoice.pdf", "caption": "Invoice"},
            {"caption": "Invoice", "filename": "invoice.pdf"},
        ),
        (
            "sticker",
            b"RIFF....WEBP" + bytes(50),
            "image/webp",
            {"animated": False},
            {"animated": False},
        ),
    ],
)
async def test_inbound_media_is_stored_and_downloads_byte_for_byte(
    make_sim: MakeSim,
    receiver: Receiver,
    kind: str,
    content: bytes,
    mime_type: str,
    extra: dict,
    expected_extra: dict,
) -> None:
    sim = await make_sim(receiver)
    status, answer = await sim.control(
        "POST",
        "/_sim/inbound",
        {
            "phone_number_id": B1_NUMBER,
            "from": UK_USER,
            "type": kind,
            "media": {"content_b64": b64(content), "mime_type": mime_type, **extra},
        },
    )
    assert status == 200, answer
    media_id = answer["media_id"]
    _, message = await delivered_message(receiver, answer["wamid"])
    obj = message[kind]
    assert obj == {
        **expected_extra,
        "mime_type": mime_type,
        # Meta's webhook examples carry the hash base64-encoded.
        "sha256": base64.b64encode(hashlib.sha256(content).digest()).decode(),
        "id": media_id,
        "url": obj["url"],
    }
    # The webhook's own URL works for 5 minutes with the token ...
    path = obj["url"][obj["url"].index("/whatsapp_business/") :]
    response = await sim.client.get(path, headers={"Authorization": f"Bearer {BSP_TOKEN}"})
    assert response.status == 200 and await response.read() == content
    assert response.headers["Content-Type"] == mime_type
    # ... and the Media API gives a fresh one.
    status, info = await sim.graph("GET", f"/v24.0/{media_id}")
    assert status == 200 and info["mime_type"] == mime_type
    _, held = await sim.control("GET", f"/_sim/media/{media_id}")
    assert held["origin"] == "inbound" and base64.b64decode(held["content_b64"]) == content


async def test_media_type_is_inferred_from_the_mime_type(make_sim: MakeSim) -> None:
    sim = await make_sim()
    answer = await sim.inbound(
        A1_NUMBER, UK_USER, media={"content_b64": b64(PDF), "mime_type": "application/pdf"}
    )
    assert answer["type"] == "document" and answer["media_id"]


async def test_system_message_has_no_contacts_and_opens_no_window(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, answer = await sim.control(
        "POST",
        "/_sim/inbound",
        {
            "phone_number_id": A1_NUMBER,
            "from": UK_USER,
            "name": "Sheena Nelson",
            "type": "system",
            "system": {"wa_id": "447700900777"},
        },
    )
    assert status == 200 and answer["window_open_until"] is None
    value, message = await delivered_message(receiver, answer["wamid"])
    assert "contacts" not in value
    assert message["system"] == {
        "body": "User Sheena Nelson changed from 447700900123 to 447700900777",
        "type": "user_changed_number",
        "wa_id": "447700900777",
    }
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 400  # 131047: no window


@pytest.mark.parametrize(
    ("control", "opens"),
    [
        ({"type": "request_welcome"}, True),
        ({"type": "button", "button": {"payload": "p", "text": "t"}}, True),
        ({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}, False),
        ({"type": "unsupported"}, False),
    ],
)
async def test_which_types_open_the_customer_service_window(
    make_sim: MakeSim, control: dict, opens: bool
) -> None:
    sim = await make_sim()
    status, answer = await sim.control(
        "POST", "/_sim/inbound", {"phone_number_id": A1_NUMBER, "from": UK_USER, **control}
    )
    assert status == 200
    assert (answer["window_open_until"] is not None) is opens
    assert ((await sim.send_text(A1_NUMBER, UK_USER))[0] == 200) is opens


async def test_contact_profile_identity_and_bsuid(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    answer = await sim.inbound(
        A1_NUMBER,
        UK_USER,
        name="Sheena",
        profile={"username": "@sheena", "country_code": "GB"},
        user_id="GB.13491208655302741918",
        identity_key_hash="DF2lS5v2W6x=",
    )
    value, _ = await delivered_message(receiver, answer["wamid"])
    assert value["contacts"] == [
        {
            "profile": {"name": "Sheena", "username": "@sheena", "country_code": "GB"},
            "wa_id": "447700900123",
            "user_id": "GB.13491208655302741918",
            "identity_key_hash": "DF2lS5v2W6x=",
        }
    ]


async def test_legacy_message_body_and_age_still_work(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    answer = await sim.inbound(
        A1_NUMBER,
        UK_USER,
        message={"type": "button", "button": {"payload": "P", "text": "T"}},
        context_message_id="wamid.OUT",
        age_seconds=3_600,
    )
    assert answer["window_open_until"] == pytest.approx(sim.clock.wall() - 3_600 + 86_400)
    _, message = await delivered_message(receiver, answer["wamid"])
    assert message["button"] == {"payload": "P", "text": "T"}
    assert message["context"] == {"from": "15550001001", "id": "wamid.OUT"}
    assert message["timestamp"] == str(int(sim.clock.wall() - 3_600))
    _, listed = await sim.control("GET", "/_sim/inbound?wa_id=447700900123")
    assert [i["wamid"] for i in listed["inbound"]] == [answer["wamid"]]


@pytest.mark.parametrize(
    "control",
    [
        {"type": "image"},
        {"type": "image", "media": {"content_b64": "***", "mime_type": "image/png"}},
        {"type": "location", "location": {"latitude": "1", "longitude": 2}},
        {"type": "contacts", "contacts": [{"name": {}}]},
        {"type": "interactive", "interactive": {"type": "poll_reply"}},
        {"type": "button", "button": {"payload": "p"}},
        {"type": "system"},
        {"type": "carrier_pigeon"},
        {"colour": "red"},
    ],
)
async def test_bad_inbound_bodies_are_400(make_sim: MakeSim, control: dict) -> None:
    sim = await make_sim()
    status, body = await sim.control(
        "POST", "/_sim/inbound", {"phone_number_id": A1_NUMBER, "from": UK_USER, **control}
    )
    assert status == 400 and body["error"]["code"] == "invalid_request", body
