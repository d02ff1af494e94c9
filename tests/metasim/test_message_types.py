"""Every outbound message type Meta's send endpoint takes: shapes, limits, media ids, reactions,
contexts, voice messages, mark-as-read and the typing indicator."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.metasim.conftest import (
    A1_NUMBER,
    A1_NUMBER_2,
    B1_NUMBER,
    UK_USER,
    MakeSim,
    Receiver,
    Sim,
    wait_for,
)
from tests.metasim.test_graph_sends import assert_meta_error

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x02" * 64
OGG = b"OggS" + b"\x03" * 64
MP3 = b"ID3" + b"\x04" * 64
PDF = b"%PDF-1.7\n" + b"\x05" * 64
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x06" * 64
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": UK_USER}


async def media_ids(sim: Sim, number: str = A1_NUMBER) -> dict[str, str]:
    return {
        "image": await sim.uploaded(number, PNG, "image/png", filename="a.png"),
        "video": await sim.uploaded(number, MP4, "video/mp4", filename="a.mp4"),
        "voice": await sim.uploaded(number, OGG, "audio/ogg", filename="a.ogg"),
        "mp3": await sim.uploaded(number, MP3, "audio/mpeg", filename="a.mp3"),
        "pdf": await sim.uploaded(number, PDF, "application/pdf", filename="a.pdf"),
        "sticker": await sim.uploaded(number, WEBP, "image/webp", filename="a.webp"),
    }


def every_type(ids: dict[str, str], inbound_wamid: str) -> list[dict[str, Any]]:
    """One body per type and interactive kind, in Meta's documented shapes."""
    return [
        {"type": "text", "text": {"preview_url": True, "body": "See https://example.com/x"}},
        {"type": "image", "image": {"id": ids["image"], "caption": "The best succulent ever?"}},
        {"type": "image", "image": {"link": "https://cdn.example.com/a.png"}},
        {"type": "video", "video": {"id": ids["video"], "caption": "Launch"}},
        {"type": "audio", "audio": {"id": ids["mp3"]}},
        {"type": "audio", "audio": {"id": ids["voice"], "voice": True}},
        {
            "type": "document",
            "document": {"id": ids["pdf"], "filename": "order.pdf", "caption": "Your order"},
        },
        {"type": "sticker", "sticker": {"id": ids["sticker"]}},
        {
            "type": "location",
            "location": {
                "latitude": "37.44216",
                "longitude": "-122.16153",
                "name": "Philz Coffee",
                "address": "101 Forest Ave, Palo Alto, CA 94301",
            },
        },
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {
                        "formatted_name": "Barbara J. Johnson",
                        "first_name": "Barbara",
                        "last_name": "Johnson",
                    },
                    "birthday": "1999-01-23",
                    "addresses": [{"street": "1 Lucky Shrub Way", "city": "Menlo Park"}],
                    "emails": [{"email": "bjohnson@example.com", "type": "Work"}],
                    "org": {"company": "Lucky Shrub", "title": "Lead Counsel"},
                    "phones": [{"phone": "+19175559999", "type": "Mobile", "wa_id": "19175559999"}],
                    "urls": [{"url": "https://www.luckyshrub.com", "type": "Company"}],
                }
            ],
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "header": {"type": "image", "image": {"id": ids["image"]}},
                "body": {"text": "Hi Pablo! Your workshop is at 9am tomorrow."},
                "footer": {"text": "Lucky Shrub"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "cancel-button", "title": "Cancel"}},
                        {"type": "reply", "reply": {"id": "change-button", "title": "Change"}},
                    ]
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "header": {"type": "text", "text": "Choose Shipping Option"},
                "body": {"text": "Which shipping option do you prefer?"},
                "footer": {"text": "Lucky Shrub"},
                "action": {
                    "button": "Shipping Options",
                    "sections": [
                        {
                            "title": "I want it ASAP!",
                            "rows": [
                                {
                                    "id": "priority_express",
                                    "title": "Priority Mail Express",
                                    "description": "Next Day to 2 Days",
                                }
                            ],
                        },
                        {"title": "I can wait", "rows": [{"id": "ground", "title": "Ground"}]},
                    ],
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "header": {"type": "text", "text": "New dates"},
                "body": {"text": "Tap the button below to see available dates."},
                "action": {
                    "name": "cta_url",
                    "parameters": {"display_text": "See Dates", "url": "https://x.example/d?i=1"},
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "location_request_message",
                "body": {"text": "Let's start with your pickup. Share your location."},
                "action": {"name": "send_location"},
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "header": {"type": "text", "text": "Book"},
                "body": {"text": "Pick a slot"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_token": "booking-42",
                        "flow_id": "1234567890",
                        "flow_cta": "Book!",
                        "flow_action": "navigate",
                        "flow_action_payload": {"screen": "SLOTS", "data": {"price": 100}},
                    },
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "product",
                "body": {"text": "Our best seller"},
                "action": {"catalog_id": "194836987003835", "product_retailer_id": "SKU1"},
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "product_list",
                "header": {"type": "text", "text": "Spring"},
                "body": {"text": "New in"},
                "action": {
                    "catalog_id": "194836987003835",
                    "sections": [
                        {"title": "Popular", "product_items": [{"product_retailer_id": "SKU1"}]}
                    ],
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "catalog_message",
                "body": {"text": "Browse our catalog"},
                "action": {"name": "catalog_message"},
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "carousel",
                "body": {"text": "Offers"},
                "action": {
                    "cards": [
                        {
                            "card_index": i,
                            "type": "cta_url",
                            "header": {"type": "image", "image": {"link": f"https://x/{i}.png"}},
                            "body": {"text": f"Deal #{i}"},
                            "action": {
                                "name": "cta_url",
                                "parameters": {"display_text": "Shop", "url": f"https://x/{i}"},
                            },
                        }
                        for i in range(2)
                    ]
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "voice_call",
                "body": {"text": "Call us about your order"},
                "action": {
                    "name": "voice_call",
                    "parameters": {"display_text": "Call now", "ttl_minutes": 60},
                },
            },
        },
        {"type": "reaction", "reaction": {"message_id": inbound_wamid, "emoji": "\U0001f600"}},
        {"type": "reaction", "reaction": {"message_id": inbound_wamid, "emoji": ""}},
        {"type": "text", "text": {"body": "Quoting you"}, "context": {"message_id": inbound_wamid}},
    ]


async def test_every_type_is_accepted_delivered_and_kept_exactly_as_received(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    ids = await media_ids(sim)
    bodies = [{**ENVELOPE, **extra} for extra in every_type(ids, inbound["wamid"])]
    wamids = []
    for body in bodies:
        status, answer = await sim.send(A1_NUMBER, body)
        assert status == 200, (body["type"], answer)
        assert answer["contacts"] == [{"input": UK_USER, "wa_id": "447700900123"}]
        wamids.append(answer["messages"][0]["id"])
    await sim.advance(5.0)  # sent, delivered, read (and played) are all due
    await wait_for(
        lambda: all(receiver.statuses_for(w) for w in wamids), what="a status for every send"
    )
    _, sends = await sim.control("GET", "/_sim/sends")
    assert [s["body"] for s in sends["sends"]] == bodies  # the requests as they reached Meta
    for body, send in zip(bodies, sends["sends"], strict=True):
        expected = "sent" if body["type"] == "reaction" else "read"
        if body.get("audio", {}).get("voice"):
            expected = "played"
        assert (send["type"], send["final_status"], send["error_code"]) == (
            body["type"],
            expected,
            None,
        ), body
    assert sends["sends"][-1]["context_message_id"] == inbound["wamid"]


async def test_reactions_only_ever_get_sent(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    _, answer = await sim.send(
        A1_NUMBER,
        {
            **ENVELOPE,
            "type": "reaction",
            "reaction": {"message_id": inbound["wamid"], "emoji": "👍"},
        },
    )
    wamid = answer["messages"][0]["id"]
    await sim.advance(10.0)
    await wait_for(lambda: receiver.statuses_for(wamid), what="sent")
    # Every later status would be due by now; none came.
    assert [s["status"] for s in receiver.statuses_for(wamid)] == ["sent"]


async def test_voice_message_is_played_after_read(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    await sim.inbound(A1_NUMBER, UK_USER)
    voice = await sim.uploaded(A1_NUMBER, OGG, "audio/ogg; codecs=opus")
    _, answer = await sim.send(
        A1_NUMBER, {**ENVELOPE, "type": "audio", "audio": {"id": voice, "voice": True}}
    )
    wamid = answer["messages"][0]["id"]
    await sim.advance(5.0)
    await wait_for(lambda: len(receiver.statuses_for(wamid)) == 4, what="four statuses")
    statuses = receiver.statuses_for(wamid)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read", "played"]
    assert "pricing" not in statuses[3]
    assert int(statuses[3]["timestamp"]) > int(statuses[2]["timestamp"])


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        ({"type": "text", "text": {"body": "x" * 4097}}, 100, "4096"),
        ({"type": "text", "text": {}}, 100, "text['body']"),
        ({"type": "text", "text": {"body": "x", "colour": "red"}}, 100, 'Unexpected key "colour"'),
        (
            {"type": "image", "image": {"link": "https://x/a.png", "caption": "c" * 1025}},
            100,
            "1024",
        ),
        ({"type": "image", "image": {"id": "1", "link": "https://x/a.png"}}, 100, "exactly one"),
        ({"type": "image", "image": {"id": "not-a-media-id"}}, 100, "media id"),
        ({"type": "image", "image": {"link": "ftp://x/a.png"}}, 100, "http"),
        ({"type": "audio", "audio": {"id": "1", "caption": "no"}}, 100, '"caption"'),
        ({"type": "sticker"}, 100, "sticker"),
        ({"type": "location", "location": {"latitude": "1"}}, 100, "longitude"),
        ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, 100, "latitude"),
        ({"type": "contacts", "contacts": []}, 100, "contacts"),
        ({"type": "contacts", "contacts": [{"name": {}}]}, 100, "formatted_name"),
        (
            {"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}] * 258},
            100,
            "257",
        ),
        ({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "ok"}}, 100, "emoji"),
        ({"type": "interactive", "interactive": {"type": "poll"}}, 100, "interactive['type']"),
        ({"type": "text", "text": {"body": "x"}, "context": {}}, 100, "message_id"),
    ],
)
async def test_malformed_types_are_refused_like_meta(
    make_sim: MakeSim, extra: dict, code: int, fragment: str
) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER)
    status, body = await sim.send(A1_NUMBER, {**ENVELOPE, **extra})
    assert_meta_error(status, body, code, 400)
    assert fragment in body["error"]["error_data"]["details"]


def _buttons(n: int, title: str = "B", same_title: bool = False) -> dict:
    return {
        "type": "button",
        "body": {"text": "Pick"},
        "action": {
            "buttons": [
                {
                    "type": "reply",
                    "reply": {"id": f"b{i}", "title": title if same_title else f"{title}{i}"},
                }
                for i in range(n)
            ]
        },
    }


def _list(rows_per_section: list[int], row_title: str = "Row") -> dict:
    return {
        "type": "list",
        "body": {"text": "Pick"},
        "action": {
            "button": "Options",
            "sections": [
                {
                    "title": f"S{s}",
                    "rows": [{"id": f"r{s}-{r}", "title": row_title} for r in range(count)],
                }
                for s, count in enumerate(rows_per_section)
            ],
        },
    }


def _cta(display_text: str) -> dict:
    return {
        "type": "cta_url",
        "body": {"text": "Go"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": display_text, "url": "https://x.example"},
        },
    }


@pytest.mark.parametrize(
    ("interactive", "code", "fragment"),
    [
        (_buttons(4), 131009, "at most 3"),
        (_buttons(0), 131009, "at least 1"),
        (_buttons(1, title="x" * 21), 131009, "20"),
        (_buttons(2, same_title=True), 131009, "unique"),
        ({**_buttons(1), "body": {"text": "x" * 1025}}, 131009, "1024"),
        ({**_buttons(1), "footer": {"text": "x" * 61}}, 131009, "60"),
        (_list([6, 5]), 131009, "10 rows"),
        (_list([11]), 131009, "at most 10"),
        (_list([1] * 11), 131009, "at most 10"),
        (_list([1], row_title="x" * 25), 131009, "24"),
        (
            {**_list([1]), "header": {"type": "image", "image": {"link": "https://x/a.png"}}},
            100,
            "'image'",
        ),
        (_cta("x" * 21), 131009, "20"),
        (
            {
                "type": "flow",
                "body": {"text": "b"},
                "action": {
                    "name": "flow",
                    "parameters": {"flow_message_version": "3", "flow_cta": "Go"},
                },
            },
            100,
            "flow_id or flow_name",
        ),
        (
            {
                "type": "flow",
                "body": {"text": "b"},
                "action": {
                    "name": "flow",
                    "parameters": {"flow_message_version": "2", "flow_cta": "Go", "flow_id": "1"},
                },
            },
            100,
            "flow_message_version",
        ),
        (
            {
                "type": "product_list",
                "header": {"type": "text", "text": "h"},
                "body": {"text": "b"},
                "action": {
                    "catalog_id": "1",
                    "sections": [
                        {
                            "title": f"S{s}",
                            "product_items": [
                                {"product_retailer_id": f"{s}-{i}"} for i in range(16)
                            ],
                        }
                        for s in range(2)
                    ],
                },
            },
            131009,
            "30 products",
        ),
        (
            {"type": "carousel", "body": {"text": "b"}, "action": {"cards": []}},
            131009,
            "at least 2",
        ),
        (
            {**_buttons(1), "action": {**_buttons(1)["action"], "extra": 1}},
            100,
            'Unexpected key "extra"',
        ),
    ],
)
async def test_interactive_limits_are_metas(
    make_sim: MakeSim, interactive: dict, code: int, fragment: str
) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER)
    status, body = await sim.send(
        A1_NUMBER, {**ENVELOPE, "type": "interactive", "interactive": interactive}
    )
    assert_meta_error(status, body, code, 400)
    assert fragment in body["error"]["error_data"]["details"]


# -- templates: every component kind --------------------------------------------------------


def template(name: str, components: list[dict] | None = None) -> dict:
    body: dict[str, Any] = {"name": name, "language": {"code": "en_US"}}
    if components is not None:
        body["components"] = components
    return {**ENVELOPE, "type": "template", "template": body}


def text_params(*values: str) -> list[dict]:
    return [{"type": "text", "text": v} for v in values]


SPRING = [
    {"type": "HEADER", "parameters": text_params("Sam")},
    {
        "type": "BODY",
        "parameters": [
            {"type": "text", "text": "25%"},
            {"type": "date_time", "date_time": {"fallback_value": "March 31"}},
        ],
    },
    {
        "type": "button",
        "sub_type": "QUICK_REPLY",
        "index": 0,
        "parameters": [{"type": "payload", "payload": "stop-promos"}],
    },
    {
        "type": "button",
        "sub_type": "copy_code",
        "index": 1,
        "parameters": [{"type": "coupon_code", "coupon_code": "SPRING25"}],
    },
    {"type": "button", "sub_type": "url", "index": "2", "parameters": text_params("c25")},
]


async def test_templates_of_every_component_kind_are_accepted(make_sim: MakeSim) -> None:
    sim = await make_sim()
    invoice = await sim.uploaded(A1_NUMBER, PDF, "application/pdf", filename="inv.pdf")
    bodies = [
        template("hello_world"),  # Meta's quick-start request: no components at all
        template("spring_coupon", SPRING),
        template(
            "store_pickup",
            [
                {
                    "type": "header",
                    "parameters": [
                        {
                            "type": "location",
                            "location": {
                                "latitude": "37.44",
                                "longitude": "-122.16",
                                "name": "Pickup point",
                                "address": "1 Hacker Way",
                            },
                        }
                    ],
                },
                {"type": "body", "parameters": text_params("A-17")},
            ],
        ),
        template(
            "invoice_ready",
            [
                {
                    "type": "header",
                    "parameters": [
                        {"type": "document", "document": {"id": invoice, "filename": "inv.pdf"}}
                    ],
                },
                {"type": "body", "parameters": text_params("INV-9")},
            ],
        ),
        template(
            "book_visit",
            [
                {"type": "body", "parameters": text_params("Sam")},
                {
                    "type": "button",
                    "sub_type": "flow",
                    "index": "0",
                    "parameters": [
                        {"type": "action", "action": {"flow_token": "T-1", "flow_action_data": {}}}
                    ],
                },
            ],
        ),
        template(
            "login_otp",
            [
                {"type": "body", "parameters": text_params("J$FpnYnP")},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": text_params("J$FpnYnP"),
                },
            ],
        ),
        template(
            "new_arrivals_video",
            [
                {
                    "type": "header",
                    "parameters": [{"type": "video", "video": {"link": "https://x/v.mp4"}}],
                },
                {"type": "body", "parameters": text_params("Sam")},
            ],
        ),
        template(
            "summer_sale",
            [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Sam"},
                        {
                            "type": "currency",
                            "currency": {
                                "fallback_value": "$5",
                                "code": "USD",
                                "amount_1000": 5000,
                            },
                        },
                    ],
                }
            ],
        ),
    ]
    for body in bodies:
        status, answer = await sim.send(A1_NUMBER, body)
        assert status == 200, (body["template"]["name"], answer)
        assert answer["messages"][0]["message_status"] == "accepted"


def _spring(index: int, replacement: dict | None) -> list[dict]:
    components = copy.deepcopy(SPRING)
    if replacement is None:
        del components[index]
    else:
        components[index] = replacement
    return components


@pytest.mark.parametrize(
    ("name", "components", "code"),
    [
        # a quick reply addressed as a URL button
        ("spring_coupon", _spring(2, {**SPRING[2], "sub_type": "url"}), 132012),
        # a coupon code is alphanumeric, at most 20
        (
            "spring_coupon",
            _spring(
                3, {**SPRING[3], "parameters": [{"type": "coupon_code", "coupon_code": "X" * 21}]}
            ),
            100,
        ),
        ("spring_coupon", _spring(3, None), 132000),  # the copy-code button needs its code
        ("spring_coupon", _spring(0, None), 132000),  # the header's {{1}}
        ("spring_coupon", [*SPRING, {**SPRING[4], "index": 5}], 132000),  # no such button
        (
            "spring_coupon",
            _spring(1, {"type": "body", "parameters": text_params("a\nb", "c")}),
            132018,
        ),
        (
            "spring_coupon",
            _spring(1, {"type": "body", "parameters": text_params("x" * 1100, "c")}),
            132005,
        ),
        (
            "store_pickup",
            [
                {
                    "type": "header",
                    "parameters": [{"type": "image", "image": {"link": "https://x/a"}}],
                },
                {"type": "body", "parameters": text_params("A")},
            ],
            132012,
        ),
        (
            "login_otp",
            [
                {"type": "body", "parameters": text_params("1234")},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": 0,
                    "parameters": text_params("1" * 16),
                },
            ],
            132005,
        ),
        ("hello_world", [{"type": "body", "parameters": text_params("x")}], 132000),
        ("hello_world", [{"type": "footer", "parameters": []}], 100),
    ],
)
async def test_template_component_mismatches(
    make_sim: MakeSim, name: str, components: list, code: int
) -> None:
    sim = await make_sim()
    status, body = await sim.send(A1_NUMBER, template(name, components))
    assert_meta_error(status, body, code, 400)


async def test_parameter_diagnostics_code_is_132018_from_v23_and_100_before(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    bad = template("summer_sale", [{"type": "body", "parameters": text_params("tab\there", "x")}])
    status, body = await sim.send(A1_NUMBER, bad, version="v23.0")
    assert_meta_error(status, body, 132018, 400)
    status, body = await sim.send(A1_NUMBER, bad, version="v22.0")
    assert_meta_error(status, body, 100, 400)


# -- media ids and links: Meta answers 200, then a failed status with 131053 -----------------


async def first_failure(sim: Sim, receiver: Receiver, wamid: str) -> dict:
    await sim.advance(1.0)
    [status] = await wait_for(lambda: receiver.statuses_for(wamid), what="failed status")
    assert status["status"] == "failed" and "pricing" not in status
    [error] = status["errors"]
    return error


async def test_media_that_cannot_be_used_fails_asynchronously_with_131053(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await sim.inbound(A1_NUMBER, UK_USER)
    ids = await media_ids(sim)
    foreign = await sim.uploaded(B1_NUMBER, PNG, "image/png")  # another WABA's media
    deleted = await sim.uploaded(A1_NUMBER, PNG, "image/png")
    assert (await sim.graph("DELETE", f"/v24.0/{deleted}"))[0] == 200
    cases = [
        ({"type": "image", "image": {"id": "1479537139650973"}}, "does not exist"),
        ({"type": "image", "image": {"id": foreign}}, "another WhatsApp Business Account"),
        ({"type": "image", "image": {"id": deleted}}, "does not exist"),
        ({"type": "image", "image": {"id": ids["pdf"]}}, "cannot be sent as image"),
        ({"type": "image", "image": {"id": ids["sticker"]}}, "WebP"),
        ({"type": "audio", "audio": {"id": ids["mp3"], "voice": True}}, "OPUS"),
        ({"type": "video", "video": {"link": "https://cdn.invalid/v.mp4"}}, "http code 404"),
        (
            {
                "type": "interactive",
                "interactive": {
                    **_buttons(1),
                    "header": {"type": "video", "video": {"id": ids["image"]}},
                },
            },
            "cannot be sent as video",
        ),
    ]
    for extra, fragment in cases:
        status, answer = await sim.send(A1_NUMBER, {**ENVELOPE, **extra})
        assert status == 200, answer  # accepted: Meta fetches media after answering
        error = await first_failure(sim, receiver, answer["messages"][0]["id"])
        assert error["code"] == 131053 and error["title"] == "Media upload error"
        assert fragment in error["error_data"]["details"], (extra, error)
    status, answer = await sim.send(
        A1_NUMBER,
        template(
            "invoice_ready",
            [
                {"type": "header", "parameters": [{"type": "document", "document": {"id": "999"}}]},
                {"type": "body", "parameters": text_params("INV-1")},
            ],
        ),
    )
    assert status == 200
    assert (await first_failure(sim, receiver, answer["messages"][0]["id"]))["code"] == 131053


async def test_reaction_to_a_message_meta_cannot_react_to_fails_with_131009(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    other = await sim.inbound(A1_NUMBER_2, UK_USER)  # the same user, another business number

    async def react(target: str) -> str:
        status, answer = await sim.send(
            A1_NUMBER,
            {**ENVELOPE, "type": "reaction", "reaction": {"message_id": target, "emoji": "👍"}},
        )
        assert status == 200, answer
        return str(answer["messages"][0]["id"])

    reaction = await react(inbound["wamid"])
    _, text = await sim.send_text(A1_NUMBER, UK_USER, "ours")
    await react(text["messages"][0]["id"])  # our own message in this chat: fine
    for target, fragment in [
        ("wamid.NEVERSEEN", "unknown"),
        (other["wamid"], "not in this conversation"),
        (reaction, "cannot be reacted to"),
    ]:
        error = await first_failure(sim, receiver, await react(target))
        assert error["code"] == 131009 and fragment in error["error_data"]["details"]
    await sim.advance(31 * 86_400)
    await sim.inbound(A1_NUMBER, UK_USER)  # a fresh window, an old target
    error = await first_failure(sim, receiver, await react(inbound["wamid"]))
    assert error["code"] == 131009 and "30 days" in error["error_data"]["details"]


# -- mark as read and the typing indicator ---------------------------------------------------


async def test_mark_as_read_and_typing_indicator_reach_meta_and_are_recorded(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    first = await sim.inbound(A1_NUMBER, UK_USER)
    second = await sim.inbound(A1_NUMBER, UK_USER)
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": first["wamid"]}
    typing = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": second["wamid"],
        "typing_indicator": {"type": "text"},
    }
    assert await sim.send(A1_NUMBER, read) == (200, {"success": True})
    assert await sim.send(A1_NUMBER, typing) == (200, {"success": True})
    _, receipts = await sim.control("GET", "/_sim/read-receipts")
    assert receipts["count"] == 2
    one, two = receipts["read_receipts"]
    assert (one["message_id"], one["typing_indicator"], one["wa_id"]) == (
        first["wamid"],
        False,
        "447700900123",
    )
    assert two["typing_indicator"] is True and two["phone_number_id"] == A1_NUMBER
    assert json.loads(two["body"]) == typing  # as it reached Meta
    _, stats = await sim.control("GET", "/_sim/stats")
    assert stats["read_receipts"] == 2 and stats["typing_indicators"] == 1
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 0  # no wamid, no status, no billing


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"status": "read", "message_id": "wamid.UNKNOWN"}, "unknown"),
        ({"status": "read", "message_id": "OTHER"}, "not received by"),
        ({"status": "read"}, "message_id"),
        ({"status": "delivered", "message_id": "wamid.X"}, "status"),
        ({"status": "read", "message_id": "M", "typing_indicator": {"type": "audio"}}, "type"),
    ],
)
async def test_mark_as_read_errors(make_sim: MakeSim, body: dict, fragment: str) -> None:
    sim = await make_sim()
    mine = await sim.inbound(A1_NUMBER, UK_USER)
    theirs = await sim.inbound(A1_NUMBER_2, UK_USER)
    ids = {"OTHER": theirs["wamid"], "M": mine["wamid"]}
    if body.get("message_id") in ids:
        body = {**body, "message_id": ids[body["message_id"]]}
    status, answer = await sim.send(A1_NUMBER, {"messaging_product": "whatsapp", **body})
    assert_meta_error(status, answer, 100, 400)
    assert fragment in answer["error"]["error_data"]["details"]
