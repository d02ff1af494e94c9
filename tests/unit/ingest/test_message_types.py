"""Every outbound message type, on both send routes: Meta's own examples (from its documentation,
see /work/shared/reference/meta-messages-and-webhooks.md §1) and what a popular client (pywa)
sends are accepted and reach the event exactly as written; each of Meta's limits is refused with
its code and the path of the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.ingest import core
from shared.errors import ServiceError
from shared.messages import SEND_REQUESTED
from tests.unit.ingest.fakes import PHONE_A, WABA_A, World, auth, template

IMG = {"id": "1479537139650973"}
WAMID = "wamid.HBgLMTY0NjcwNDM1OTUVAgASGBQzQUZCMTY0MDc2MUYwNzBDNTY5MAA="


def _tpl(name: str, *components: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "language": {"code": "en_US"}, "components": list(components)}


def _button(sub_type: str, index: Any, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "button", "sub_type": sub_type, "index": index, "parameters": list(parameters)}


# (name, type, Meta's object for the type, the stored template's shape for template messages)
EXAMPLES: list[tuple[str, str, Any, dict[str, Any] | None]] = [
    ("text", "text", {"body": "See https://example.com", "preview_url": True}, None),
    ("text_pywa", "text", {"body": "Hello", "preview_url": False}, None),
    ("image_id", "image", {"id": "1479537139650973", "caption": "The best succulent ever?"}, None),
    ("image_link", "image", {"link": "https://example.com/p.jpg"}, None),
    ("video", "video", {"link": "https://example.com/y.mp4", "caption": "How to"}, None),
    ("audio_voice", "audio", {"id": "1013859600285441", "voice": True}, None),
    (
        "document",
        "document",
        {"id": "1376223850470843", "filename": "order.pdf", "caption": "Your order"},
        None,
    ),
    ("sticker", "sticker", {"id": "798882015472548"}, None),
    (
        "location",
        "location",
        {
            "latitude": "37.44216",
            "longitude": "-122.16153",
            "name": "Philz Coffee",
            "address": "101 Forest Ave, Palo Alto",
        },
        None,
    ),
    (
        "location_pywa",
        "location",
        {"latitude": 37.44216, "longitude": -122.16153, "name": None, "address": None},
        None,
    ),
    (
        "contacts",
        "contacts",
        [
            {
                "name": {
                    "formatted_name": "Barbara J. Johnson",
                    "first_name": "Barbara",
                    "last_name": "Johnson",
                    "middle_name": "Joana",
                    "suffix": "Esq.",
                    "prefix": "Dr.",
                },
                "birthday": "1999-01-23",
                "addresses": [
                    {
                        "street": "1 Lucky Shrub Way",
                        "city": "Menlo Park",
                        "state": "CA",
                        "zip": "94025",
                        "country": "United States",
                        "country_code": "US",
                        "type": "Office",
                    }
                ],
                "emails": [{"email": "b@x.com", "type": "Work"}],
                "org": {"company": "Lucky Shrub", "department": "Legal", "title": "Lead Counsel"},
                "phones": [{"phone": "+19175559999", "type": "Mobile", "wa_id": "19175559999"}],
                "urls": [{"url": "https://x.com", "type": "Company"}],
            }
        ],
        None,
    ),
    (
        "contacts_pywa",
        "contacts",
        [
            {
                "name": {
                    "formatted_name": "Ana",
                    "first_name": "Ana",
                    "last_name": None,
                    "middle_name": None,
                    "suffix": None,
                    "prefix": None,
                },
                "birthday": None,
                "phones": [{"phone": "+447912345678", "type": None, "wa_id": None}],
                "emails": [],
                "urls": [],
                "addresses": [],
                "org": None,
            }
        ],
        None,
    ),
    (
        "buttons",
        "interactive",
        {
            "type": "button",
            "header": {"type": "image", "image": {"id": "2762702990552401"}},
            "body": {"text": "Hi Pablo! Your gardening workshop is scheduled for 9am tomorrow."},
            "footer": {"text": "Lucky Shrub"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "change-button", "title": "Change"}},
                    {"type": "reply", "reply": {"id": "cancel-button", "title": "Cancel"}},
                ]
            },
        },
        None,
    ),
    (
        "list",
        "interactive",
        {
            "type": "list",
            "header": {"type": "text", "text": "Shipping"},
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
                            },
                            {"id": "priority_mail", "title": "Priority Mail"},
                        ],
                    },
                    {
                        "title": "I can wait",
                        "rows": [
                            {"id": "ground", "title": "Ground Advantage", "description": "2-5 Days"}
                        ],
                    },
                ],
            },
        },
        None,
    ),
    (
        "cta_url",
        "interactive",
        {
            "type": "cta_url",
            "header": {"type": "image", "image": {"link": "https://x.com/b.png"}},
            "body": {"text": "Tap the button below to see available dates."},
            "action": {
                "name": "cta_url",
                "parameters": {"display_text": "See Dates", "url": "https://x.com?id=1"},
            },
            "footer": {"text": "Dates subject to change."},
        },
        None,
    ),
    (
        "location_request",
        "interactive",
        {
            "type": "location_request_message",
            "body": {"text": "Share your pickup point"},
            "action": {"name": "send_location"},
        },
        None,
    ),
    (
        "flow",
        "interactive",
        {
            "type": "flow",
            "header": {"type": "text", "text": "Book"},
            "body": {"text": "Pick a slot"},
            "action": {
                "name": "flow",
                "parameters": {
                    "flow_message_version": "3",
                    "flow_id": "123456",
                    "flow_cta": "Book!",
                    "flow_token": "opaque-id",
                    "mode": "published",
                    "flow_action": "navigate",
                    "flow_action_payload": {"screen": "SLOTS", "data": {"product_price": 100}},
                },
            },
        },
        None,
    ),
    (
        "flow_by_name",
        "interactive",
        {
            "type": "flow",
            "body": {"text": "Sign up"},
            "action": {
                "name": "flow",
                "parameters": {
                    "flow_message_version": "3",
                    "flow_name": "signup",
                    "flow_cta": "Sign up",
                    "flow_action": "data_exchange",
                },
            },
        },
        None,
    ),
    (
        "product",
        "interactive",
        {
            "type": "product",
            "body": {"text": "Our pick"},
            "action": {"catalog_id": "194836987003835", "product_retailer_id": "SKU1"},
        },
        None,
    ),
    (
        "product_list",
        "interactive",
        {
            "type": "product_list",
            "header": {"type": "text", "text": "Our picks"},
            "body": {"text": "Have a look"},
            "action": {
                "catalog_id": "194836987003835",
                "sections": [
                    {
                        "title": "Popular",
                        "product_items": [
                            {"product_retailer_id": "SKU1"},
                            {"product_retailer_id": "SKU2"},
                        ],
                    }
                ],
            },
        },
        None,
    ),
    (
        "catalog",
        "interactive",
        {
            "type": "catalog_message",
            "body": {"text": "Browse our catalog"},
            "action": {
                "name": "catalog_message",
                "parameters": {"thumbnail_product_retailer_id": "SKU1"},
            },
        },
        None,
    ),
    (
        "carousel",
        "interactive",
        {
            "type": "carousel",
            "body": {"text": "Offers"},
            "action": {
                "cards": [
                    {
                        "card_index": i,
                        "type": "cta_url",
                        "header": {"type": "image", "image": {"link": f"https://x.com/{i}.png"}},
                        "body": {"text": f"Deal #{i}"},
                        "action": {
                            "name": "cta_url",
                            "parameters": {"display_text": "Shop", "url": f"https://x.com/{i}"},
                        },
                    }
                    for i in range(2)
                ]
            },
        },
        None,
    ),
    ("reaction", "reaction", {"message_id": WAMID, "emoji": "\U0001f600"}, None),
    ("reaction_removed", "reaction", {"message_id": WAMID, "emoji": ""}, None),
    (
        "template_positional",
        "template",
        _tpl(
            "order_confirmation",
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Jessica"},
                    {"type": "text", "text": "SKBUP2-4CPIG9"},
                ],
            },
        ),
        {"body_params": ["1", "2"]},
    ),
    (
        "template_named_media_header",
        "template",
        _tpl(
            "reservation_confirmation",
            {
                "type": "header",
                "parameters": [{"type": "image", "image": {"id": "2871834006348767"}}],
            },
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
                    {"type": "text", "parameter_name": "day", "text": "Saturday"},
                ],
            },
        ),
        {
            "parameter_format": "NAMED",
            "header_format": "IMAGE",
            "body_params": ["number_of_guests", "day"],
        },
    ),
    (
        "template_location_header",
        "template",
        _tpl(
            "pickup",
            {
                "type": "header",
                "parameters": [
                    {
                        "type": "location",
                        "location": {
                            "latitude": "37.44",
                            "longitude": "-122.16",
                            "name": "Store",
                            "address": "1 Main",
                        },
                    }
                ],
            },
        ),
        {"header_format": "LOCATION"},
    ),
    (
        "template_document_header",
        "template",
        _tpl(
            "invoice",
            {
                "type": "header",
                "parameters": [
                    {
                        "type": "document",
                        "document": {"link": "https://x.com/i.pdf", "filename": "invoice.pdf"},
                    }
                ],
            },
        ),
        {"header_format": "DOCUMENT"},
    ),
    (
        "template_text_header_currency_date",
        "template",
        _tpl(
            "bill",
            {"type": "header", "parameters": [{"type": "text", "text": "Sale"}]},
            {
                "type": "body",
                "parameters": [
                    {
                        "type": "currency",
                        "currency": {
                            "fallback_value": "$19.99",
                            "code": "USD",
                            "amount_1000": 19990,
                        },
                    },
                    {"type": "date_time", "date_time": {"fallback_value": "August 5, 2025"}},
                ],
            },
        ),
        {"header_format": "TEXT", "header_params": ["1"], "body_params": ["1", "2"]},
    ),
    (
        "template_buttons",
        "template",
        _tpl(
            "everything",
            _button("quick_reply", "0", {"type": "payload", "payload": "more-aloes"}),
            _button("url", "1", {"type": "text", "text": "n3mtql"}),
            _button("copy_code", 2, {"type": "coupon_code", "coupon_code": "25OFF"}),
            _button(
                "flow",
                3,
                {"type": "action", "action": {"flow_token": "T", "flow_action_data": {"a": 1}}},
            ),
        ),
        {"button_params": [{"index": i, "count": 1} for i in range(4)]},
    ),
    (
        "template_pywa_upper_case",
        "template",
        _tpl(
            "everything_upper",
            {"type": "BODY", "parameters": [{"type": "text", "text": "Ana"}]},
            _button("QUICK_REPLY", 0, {"type": "payload", "payload": "stop"}),
            _button("URL", 1, {"type": "text", "text": "x1"}),
        ),
        {
            "body_params": ["1"],
            "button_params": [{"index": 0, "count": 1}, {"index": 1, "count": 1}],
        },
    ),
    (
        "template_otp",
        "template",
        _tpl(
            "verify",
            {"type": "body", "parameters": [{"type": "text", "text": "J$FpnYnP"}]},
            _button("url", "0", {"type": "text", "text": "J$FpnYnP"}),
        ),
        {
            "category": "AUTHENTICATION",
            "body_params": ["1"],
            "button_params": [{"index": 0, "count": 1}],
        },
    ),
    (
        "template_catalog_mpm",
        "template",
        _tpl(
            "shop",
            _button(
                "CATALOG",
                0,
                {"type": "action", "action": {"thumbnail_product_retailer_id": "SKU1"}},
            ),
            _button(
                "mpm",
                1,
                {
                    "type": "action",
                    "action": {
                        "thumbnail_product_retailer_id": "SKU1",
                        "sections": [
                            {
                                "title": "Top",
                                "product_items": [
                                    {"product_retailer_id": "SKU1"},
                                    {"product_retailer_id": "SKU2"},
                                ],
                            }
                        ],
                    },
                },
            ),
        ),
        {
            "category": "MARKETING",
            "button_params": [{"index": 0, "count": 1}, {"index": 1, "count": 1}],
        },
    ),
    (
        "template_limited_time_offer",
        "template",
        _tpl(
            "lto",
            {"type": "header", "parameters": [{"type": "image", "image": IMG}]},
            {
                "type": "limited_time_offer",
                "parameters": [
                    {
                        "type": "limited_time_offer",
                        "limited_time_offer": {"expiration_time_ms": 1698562800000},
                    }
                ],
            },
            _button("copy_code", 0, {"type": "coupon_code", "coupon_code": "SAVE15"}),
            _button("url", 1, {"type": "text", "text": "n3mtql"}),
        ),
        {
            "category": "MARKETING",
            "header_format": "IMAGE",
            "button_params": [{"index": 0, "count": 1}, {"index": 1, "count": 1}],
        },
    ),
    (
        "template_carousel",
        "template",
        _tpl(
            "cards",
            {"type": "body", "parameters": [{"type": "text", "text": "20OFF"}]},
            {
                "type": "carousel",
                "cards": [
                    {
                        "card_index": i,
                        "components": [
                            {"type": "header", "parameters": [{"type": "image", "image": IMG}]},
                            _button("quick_reply", 0, {"type": "payload", "payload": f"more-{i}"}),
                        ],
                    }
                    for i in range(2)
                ],
            },
        ),
        {"category": "MARKETING", "body_params": ["1"]},
    ),
]


def _world_with_templates() -> World:
    world = World()
    for _, kind, obj, shape in EXAMPLES:
        if kind == "template" and shape is not None:
            t = template(WABA_A, obj["name"], **shape)
            world.directory.templates[t["_id"]] = t
    return world


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


async def test_every_example_is_accepted_on_the_meta_route_and_reaches_the_event_as_written() -> (
    None
):
    async with _world_with_templates() as world:
        for name, kind, obj, _ in EXAMPLES:
            body = {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": kind,
                kind: obj,
            }
            resp = await world.client.post(f"/v24.0/{PHONE_A}/messages", json=body, headers=auth())
            assert resp.status == 200, (name, await resp.text())
            event = world.publisher.events[-1]
            assert event.message_type == kind, name
            assert _canonical(event.content) == _canonical(obj), name
            assert event.recipient == "+16505551234"
            # what status stores and the sender decodes: the event round-trips
            assert SEND_REQUESTED.decode(SEND_REQUESTED.encode(event)[1]) == event
        assert len(world.publisher.events) == len(EXAMPLES)


async def test_every_example_is_accepted_on_the_v1_route_with_the_same_content() -> None:
    async with _world_with_templates() as world:
        for name, kind, obj, shape in EXAMPLES:
            body = {"from": PHONE_A, "to": "+16505551234", "type": kind, kind: obj}
            resp = await world.client.post("/v1/messages", data=orjson.dumps(body), headers=auth())
            assert resp.status == 202, (name, await resp.text())
            event = world.publisher.events[-1]
            assert _canonical(event.content) == _canonical(obj), name
            expected = (
                str((shape or {}).get("category", "UTILITY")).lower()
                if kind == "template"
                else "service"
            )
            assert event.category == expected, name


def _meta(kind: str, obj: Any, **envelope: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": "+16505551234",
        "type": kind,
        kind: obj,
        **envelope,
    }


def _buttons(*titles: str) -> dict[str, Any]:
    return {
        "type": "button",
        "body": {"text": "b"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": f"id{i}", "title": t}}
                for i, t in enumerate(titles)
            ]
        },
    }


def _list(*sections: list[str], titles: bool = True) -> dict[str, Any]:
    return {
        "type": "list",
        "body": {"text": "b"},
        "action": {
            "button": "Choose",
            "sections": [
                {
                    **({"title": f"s{i}"} if titles else {}),
                    "rows": [{"id": r, "title": r} for r in rows],
                }
                for i, rows in enumerate(sections)
            ],
        },
    }


ROWS = [f"r{i}" for i in range(11)]

# (request, code, field)
LIMITS: list[tuple[dict[str, Any], str, str]] = [
    (_meta("text", {"body": "x" * 4097}), "invalid_field", "text.body"),
    (_meta("text", {"body": ""}), "invalid_field", "text.body"),
    (_meta("text", {"body": "x", "preview_url": "yes"}), "invalid_field", "text.preview_url"),
    (_meta("image", {"id": "1", "caption": "x" * 1025}), "invalid_field", "image.caption"),
    (_meta("image", {"id": "1", "link": "https://x.com/a.png"}), "invalid_field", "image.id"),
    (_meta("image", {"caption": "nothing to show"}), "invalid_field", "image.id"),
    (_meta("image", {"link": "ftp://x.com/a.png"}), "invalid_field", "image.link"),
    (_meta("image", {"id": "1", "filename": "a.png"}), "unknown_field", "image.filename"),
    (_meta("audio", {"id": "1", "caption": "no"}), "unknown_field", "audio.caption"),
    (_meta("sticker", {"id": "1", "caption": "no"}), "unknown_field", "sticker.caption"),
    (_meta("video", {"id": "1", "voice": True}), "unknown_field", "video.voice"),
    (_meta("document", {"id": "1", "filename": ""}), "invalid_field", "document.filename"),
    (_meta("location", {"latitude": 91, "longitude": 0}), "invalid_field", "location.latitude"),
    (
        _meta("location", {"latitude": "north", "longitude": "0"}),
        "invalid_field",
        "location.latitude",
    ),
    (_meta("location", {"latitude": 1}), "invalid_field", "location.longitude"),
    (_meta("contacts", []), "invalid_field", "contacts"),
    (_meta("contacts", [{"name": {"formatted_name": "a"}}] * 258), "invalid_field", "contacts"),
    (
        _meta("contacts", [{"name": {"first_name": "a"}}]),
        "invalid_field",
        "contacts[0].name.formatted_name",
    ),
    (
        _meta("contacts", [{"name": {"formatted_name": "a"}, "birthday": "23/01/1999"}]),
        "invalid_field",
        "contacts[0].birthday",
    ),
    (
        _meta("interactive", {"type": "poll", "body": {"text": "b"}}),
        "invalid_field",
        "interactive.type",
    ),
    (_meta("interactive", _buttons()), "invalid_field", "interactive.action.buttons"),
    (
        _meta("interactive", _buttons("a", "b", "c", "d")),
        "invalid_field",
        "interactive.action.buttons",
    ),
    (_meta("interactive", _buttons("Same", "Same")), "invalid_field", "interactive.action.buttons"),
    (
        _meta("interactive", _buttons("x" * 21)),
        "invalid_field",
        "interactive.action.buttons[0].reply.title",
    ),
    (
        _meta("interactive", {**_buttons("a"), "body": {"text": "x" * 1025}}),
        "invalid_field",
        "interactive.body.text",
    ),
    (
        _meta("interactive", {**_buttons("a"), "footer": {"text": "x" * 61}}),
        "invalid_field",
        "interactive.footer.text",
    ),
    (
        _meta("interactive", {**_buttons("a"), "header": {"type": "text", "text": "x" * 61}}),
        "invalid_field",
        "interactive.header.text",
    ),
    (_meta("interactive", _list(ROWS)), "invalid_field", "interactive.action.sections[0].rows"),
    (
        _meta("interactive", _list(ROWS[:6], ROWS[6:])),
        "invalid_field",
        "interactive.action.sections",
    ),
    (_meta("interactive", _list(["a"], ["a"])), "invalid_field", "interactive.action.sections"),
    (
        _meta("interactive", _list(["a"], ["b"], titles=False)),
        "invalid_field",
        "interactive.action.sections",
    ),
    (
        _meta("interactive", _list(*[[f"r{i}"] for i in range(11)])),
        "invalid_field",
        "interactive.action.sections",
    ),
    (
        _meta("interactive", {**_list(["a"]), "header": {"type": "image", "image": {"id": "1"}}}),
        "invalid_field",
        "interactive.header.type",
    ),
    (
        _meta(
            "interactive",
            {
                "type": "list",
                "body": {"text": "b"},
                "action": {
                    "button": "Choose",
                    "sections": [{"rows": [{"id": "a", "title": "x" * 25}]}],
                },
            },
        ),
        "invalid_field",
        "interactive.action.sections[0].rows[0].title",
    ),
    (
        _meta(
            "interactive",
            {
                "type": "cta_url",
                "body": {"text": "b"},
                "action": {
                    "name": "cta_url",
                    "parameters": {"display_text": "x" * 21, "url": "https://x.com"},
                },
            },
        ),
        "invalid_field",
        "interactive.action.parameters.display_text",
    ),
    (
        _meta(
            "interactive",
            {
                "type": "location_request_message",
                "body": {"text": "b"},
                "action": {"name": "send_location"},
                "footer": {"text": "f"},
            },
        ),
        "unknown_field",
        "interactive.footer",
    ),
    (
        _meta(
            "interactive",
            {
                "type": "flow",
                "body": {"text": "b"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_cta": "Go",
                        "flow_id": "1",
                        "flow_name": "n",
                    },
                },
            },
        ),
        "invalid_field",
        "interactive.action.parameters.flow_id",
    ),
    (
        _meta(
            "interactive",
            {
                "type": "flow",
                "body": {"text": "b"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_cta": "Go",
                        "flow_id": "1",
                        "flow_action": "data_exchange",
                        "flow_action_payload": {"screen": "A"},
                    },
                },
            },
        ),
        "invalid_field",
        "interactive.action.parameters.flow_action_payload",
    ),
    (_meta("reaction", {"message_id": WAMID}), "invalid_field", "reaction.emoji"),
    (
        _meta("reaction", {"message_id": WAMID, "emoji": "x"}, context={"message_id": WAMID}),
        "invalid_field",
        "context",
    ),
    (
        _meta("template", {"name": "t", "language": {"code": "English"}}),
        "invalid_field",
        "template.language.code",
    ),
    (
        _meta("template", _tpl("t", {"type": "footer"})),
        "invalid_field",
        "template.components[0].type",
    ),
    (
        _meta("template", _tpl("t", {"type": "button", "index": 0})),
        "invalid_field",
        "template.components[0].sub_type",
    ),
    (
        _meta("template", _tpl("t", {"type": "button", "sub_type": "url"})),
        "invalid_field",
        "template.components[0].index",
    ),
    (
        _meta("template", _tpl("t", _button("url", "first"))),
        "invalid_field",
        "template.components[0].index",
    ),
    (
        _meta("template", _tpl("t", _button("url", 10))),
        "invalid_field",
        "template.components[0].index",
    ),
    (
        _meta("template", _tpl("t", {"type": "body", "index": 0})),
        "invalid_field",
        "template.components[0].index",
    ),
    (
        _meta(
            "template", _tpl("t", {"type": "body", "parameters": [{"type": "image", "image": IMG}]})
        ),
        "invalid_field",
        "template.components[0].parameters[0].type",
    ),
    (
        _meta("template", _tpl("t", _button("quick_reply", 0, {"type": "text", "text": "x"}))),
        "invalid_field",
        "template.components[0].parameters[0].type",
    ),
    (
        _meta(
            "template",
            _tpl("t", _button("copy_code", 0, {"type": "coupon_code", "coupon_code": "x" * 21})),
        ),
        "invalid_field",
        "template.components[0].parameters[0].coupon_code",
    ),
    (
        _meta(
            "template",
            _tpl(
                "t",
                {
                    "type": "body",
                    "parameters": [
                        {
                            "type": "currency",
                            "currency": {
                                "fallback_value": "$1",
                                "code": "usd",
                                "amount_1000": 1000,
                            },
                        }
                    ],
                },
            ),
        ),
        "invalid_field",
        "template.components[0].parameters[0].currency.code",
    ),
    (
        _meta(
            "template",
            _tpl(
                "t",
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": "x", "parameter_name": "First Name"}],
                },
            ),
        ),
        "invalid_field",
        "template.components[0].parameters[0].parameter_name",
    ),
    (
        _meta(
            "template",
            _tpl(
                "t",
                {
                    "type": "header",
                    "parameters": [
                        {"type": "image", "image": IMG},
                        {"type": "image", "image": IMG},
                    ],
                },
            ),
        ),
        "invalid_field",
        "template.components[0].parameters",
    ),
    (
        _meta("template", _tpl("t", {"type": "carousel"})),
        "invalid_field",
        "template.components[0].cards",
    ),
    (
        _meta("text", {"body": "x"}, biz_opaque_callback_data="x" * 513),
        "invalid_field",
        "biz_opaque_callback_data",
    ),
    (_meta("text", {"body": "x"}, context={}), "invalid_field", "context.message_id"),
    (_meta("text", {"body": "x"}, recipient_type="group"), "unsupported", "recipient_type"),
    (_meta("image", {"id": "1"}, text={"body": "x"}), "invalid_field", "text"),
    ({**_meta("image", {"id": "1"}), "image": None}, "invalid_field", "image"),
    (
        {"messaging_product": "whatsapp", "to": "+16505551234", "type": "video"},
        "invalid_field",
        "video",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), LIMITS, ids=[f"{c}:{f}" for _, c, f in LIMITS])
def test_each_limit_is_refused_with_its_code_and_path(
    body: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(ServiceError) as info:
        core.parse_meta_request(body, PHONE_A, "US")
    assert (info.value.code, info.value.details.get("field")) == (code, field), info.value.message


def test_the_same_limits_hold_on_the_v1_route() -> None:
    for body, code, field in LIMITS:
        v1 = {k: v for k, v in body.items() if k not in ("messaging_product", "recipient_type")}
        if "recipient_type" in body:
            continue  # a Meta-route field
        with pytest.raises(ServiceError) as info:
            core.parse_send_request({"from": PHONE_A, **v1})
        assert (info.value.code, info.value.details.get("field")) == (code, field), body


def test_an_invalid_field_names_the_rule_it_broke() -> None:
    with pytest.raises(ServiceError) as info:
        core.parse_meta_request(_meta("text", {"body": "x" * 4097}), PHONE_A, "US")
    assert info.value.details == {"field": "text.body", "rule": "Expected `str` of length <= 4096"}


def test_every_send_requested_example_is_a_request_ingest_accepts() -> None:
    """The topic's examples (one per type) are shapes the declarations accept, unchanged."""
    for example in SEND_REQUESTED.examples:
        kind, content = example["message_type"], example["content"]
        body = _meta(kind, content)
        if example.get("reply_to"):
            body["context"] = {"message_id": example["reply_to"]}
        request = core.parse_meta_request(body, PHONE_A, "US")
        assert _canonical(request.content) == _canonical(content), kind
