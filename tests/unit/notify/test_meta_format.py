"""`format: "meta"`: Meta's batches split per item and rewritten so that an unmodified Cloud API
webhook handler (pywa 4.5) accepts them, signature included, and sees the ids the client got."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
from pywa import WhatsApp, handlers, types

from services.notify import core, meta_format

WABA = "102290129340398"
NUMBER = "106540352242922"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def batch() -> bytes:
    """Meta's 2026 shape (contacts carry the user's BSUID, and sit beside statuses too), which
    pywa 4.5 requires."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER},
        "contacts": [
            {
                "profile": {"name": "Sheena"},
                "wa_id": "16505551234",
                "user_id": "US.13491208655302741918",
            }
        ],
        "messages": [
            {
                "from": "16505551234",
                "id": "wamid.IN1",
                "timestamp": "1764000000",
                "type": "text",
                "text": {"body": "yes please"},
                "context": {"from": "15550783881", "id": "wamid.OUT1"},
            }
        ],
        "statuses": [
            {
                "id": "wamid.OUT1",
                "status": "delivered",
                "timestamp": "1764000001",
                "recipient_id": "16505551234",
                "biz_opaque_callback_data": "msg_01ABC",
            },
            {
                "id": "wamid.ELSEWHERE",
                "status": "read",
                "timestamp": "1764000002",
                "recipient_id": "16505551234",
            },
        ],
    }
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA,
                    "changes": [
                        {"field": "messages", "value": value},
                        {
                            "field": "message_template_status_update",
                            "value": {
                                "event": "APPROVED",
                                "message_template_id": 1,
                                "message_template_name": "t",
                                "message_template_language": "en_US",
                                "reason": "NONE",
                            },
                        },
                    ],
                }
            ],
        }
    )


def lookups() -> meta_format.Lookups:
    mine = meta_format.KnownMessage("msg_01ABC", "crm-7")
    return meta_format.Lookups(by_wamid={"wamid.OUT1": mine}, by_id={"msg_01ABC": mine})


def test_a_batch_becomes_one_envelope_per_item() -> None:
    pieces = meta_format.split(batch())
    assert [p.kind for p in pieces] == ["message", "status", "status", "change"]
    for piece in pieces:
        entry = piece.envelope["entry"]
        assert len(entry) == 1 and entry[0]["id"] == WABA and len(entry[0]["changes"]) == 1
    message, delivered, read, template = pieces
    assert message.value["contacts"][0]["wa_id"] == "16505551234"
    assert message.wamids == ("wamid.OUT1",)
    assert delivered.callback == "msg_01ABC" and read.callback is None
    assert template.field == "message_template_status_update"
    assert meta_format.split(b"not json") == [] and meta_format.split(b"[1]") == []


def test_statuses_carry_the_clients_id_and_its_own_callback_data_or_none() -> None:
    message, delivered, read, _ = meta_format.split(batch())
    ours = meta_format.rewrite(delivered, lookups())["entry"][0]["changes"][0]["value"]
    assert ours["statuses"][0]["id"] == "msg_01ABC"
    assert ours["statuses"][0]["biz_opaque_callback_data"] == "crm-7"
    no_callback = meta_format.Lookups(by_id={"msg_01ABC": meta_format.KnownMessage("msg_01ABC")})
    bare = meta_format.rewrite(delivered, no_callback)["entry"][0]["changes"][0]["value"]
    assert "biz_opaque_callback_data" not in bare["statuses"][0]
    # not one of ours: exactly as Meta sent it
    assert meta_format.rewrite(read, lookups()) == read.envelope
    # a reply keeps Meta's wamid and names our message as the client knows it
    reply = meta_format.rewrite(message, lookups())["entry"][0]["changes"][0]["value"]
    assert reply["messages"][0]["id"] == "wamid.IN1"
    assert reply["messages"][0]["context"]["id"] == "msg_01ABC"
    assert delivered.value["statuses"][0]["id"] == "wamid.OUT1"  # the piece is unchanged


def test_the_same_item_is_the_same_event_and_bytes() -> None:
    first = meta_format.split(batch())[1]
    again = meta_format.split(batch())[1]
    a = meta_format.to_event(first, meta_format.rewrite(first, lookups()), "acc_1", 1)
    b = meta_format.to_event(again, meta_format.rewrite(again, lookups()), "acc_1", 2)
    assert (a.id, a.body) == (b.id, b.body) and a.format == "meta"
    assert a.type == "meta.messages"


def test_pywa_accepts_every_forwarded_payload_signed_with_the_endpoint_secret() -> None:
    wa = WhatsApp(phone_id=NUMBER, token="x", verify_token="v", app_secret=SECRET, waba_id=WABA)
    statuses: list[types.MessageStatus] = []
    messages: list[types.Message] = []
    wa.add_handlers(
        handlers.MessageStatusHandler(lambda _, s: statuses.append(s)),
        handlers.MessageHandler(lambda _, m: messages.append(m)),
    )
    for piece in meta_format.split(batch())[:3]:
        event = meta_format.to_event(piece, meta_format.rewrite(piece, lookups()), "acc_1", 1)
        headers = core.delivery_headers(event.id, event.body, [SECRET], "meta", 1_764_000_000)
        assert wa.webhook_update_validator(event.body, headers["X-Hub-Signature-256"]) is None
        assert wa.webhook_update_handler(event.body) == ("ok", 200)
        tampered = event.body.replace(b"16505551234", b"16505559999")
        assert wa.webhook_update_validator(tampered, headers["X-Hub-Signature-256"]) == (
            "Forbidden",
            403,
        )
    assert [(s.id, s.status.value, s.tracker) for s in statuses] == [
        ("msg_01ABC", "delivered", "crm-7"),
        ("wamid.ELSEWHERE", "read", None),
    ]
    [message] = messages
    assert (message.id, message.text, message.reply_to_message.id) == (
        "wamid.IN1",
        "yes please",
        "msg_01ABC",
    )
    assert json.loads(event.body)["entry"][0]["changes"][0]["value"]["statuses"]
