"""POST /<PHONE_NUMBER_ID>/messages: shapes, validation, auth, versions, faults."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.metasim.conftest import (
    A1_NUMBER,
    B1_NUMBER,
    BSP_TOKEN,
    UK_USER,
    MakeSim,
)

ORDER_COMPONENTS = [
    {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/a.png"}}],
    },
    {
        "type": "body",
        "parameters": [
            {"type": "text", "text": "Jessica"},
            {"type": "text", "text": "SKBUP2-4CPIG9"},
        ],
    },
    {
        "type": "button",
        "sub_type": "url",
        "index": "0",
        "parameters": [{"type": "text", "text": "SKBUP2"}],
    },
]


def assert_meta_error(status: int, body: dict, code: int, http_status: int) -> None:
    assert status == http_status, body
    error = body["error"]
    assert error["code"] == code
    assert error["message"].startswith(f"(#{code}) ")
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert isinstance(error["error_data"]["details"], str) and error["error_data"]["details"]
    assert isinstance(error["fbtrace_id"], str) and len(error["fbtrace_id"]) >= 10


async def test_template_send_returns_metas_success_shape(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send_template(
        A1_NUMBER, "+44 7700-900123", "order_confirmation", components=ORDER_COMPONENTS
    )
    assert status == 200, body
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+44 7700-900123", "wa_id": "447700900123"}]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.") and len(message["id"]) > 30
    assert message["message_status"] == "accepted"


async def test_named_parameter_template_is_accepted(make_sim: MakeSim) -> None:
    sim = await make_sim()
    components = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "day", "text": "Saturday"},
                {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
            ],
        }
    ]
    status, body = await sim.send_template(
        A1_NUMBER, UK_USER, "reservation_confirmation", components=components
    )
    assert status == 200, body


async def test_paced_template_is_held_for_quality_assessment(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "new_collection", ["Sam"])
    assert status == 200
    assert body["messages"][0]["message_status"] == "held_for_quality_assessment"


async def test_free_form_messages_inside_the_window_and_their_shapes(make_sim: MakeSim) -> None:
    sim = await make_sim()
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    image = await sim.uploaded(A1_NUMBER, b"\x89PNG", "image/png")
    video = await sim.uploaded(A1_NUMBER, b"\x00\x00\x00\x18ftyp", "video/mp4")
    audio = await sim.uploaded(A1_NUMBER, b"ID3", "audio/mpeg")
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": UK_USER}
    payloads = [
        {"type": "text", "text": {"body": "ok", "preview_url": True}},
        {"type": "image", "image": {"id": image, "caption": "succulent"}},
        {"type": "document", "document": {"link": "https://cdn.example.com/a.pdf"}},
        {"type": "video", "video": {"id": video}},
        {"type": "audio", "audio": {"id": audio}},
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Pick"},
                "action": {
                    "button": "Options",
                    "sections": [{"title": "S", "rows": [{"id": "r1", "title": "Row"}]}],
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Pick"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]},
            },
        },
        {"type": "reaction", "reaction": {"message_id": inbound["wamid"], "emoji": "\U0001f600"}},
    ]
    for extra in payloads:
        status, body = await sim.send(A1_NUMBER, {**base, **extra})
        assert status == 200, (extra["type"], body)
        assert "message_status" not in body["messages"][0]  # a pacing signal: templates only


async def test_mark_as_read_answers_success_true(make_sim: MakeSim) -> None:
    sim = await make_sim()
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    status, body = await sim.send(
        A1_NUMBER,
        {"messaging_product": "whatsapp", "status": "read", "message_id": inbound["wamid"]},
    )
    assert (status, body) == (200, {"success": True})
    status, body = await sim.send(
        A1_NUMBER,
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.unknown"},
    )
    assert_meta_error(status, body, 100, 400)


async def test_recipient_without_plus(make_sim: MakeSim) -> None:
    sim = await make_sim()
    login = [
        {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
        {
            "type": "button",
            "sub_type": "url",
            "index": 0,
            "parameters": [{"type": "text", "text": "123456"}],
        },
    ]
    # A whole international number without '+' (a WhatsApp id) is taken as it is ...
    status, body = await sim.send_template(
        A1_NUMBER, "447700900123", "login_code", components=login
    )
    assert status == 200, body
    assert body["contacts"] == [{"input": "447700900123", "wa_id": "447700900123"}]
    # ... a national one gets the business number's country code (+1), as Meta documents.
    status, body = await sim.send_template(
        A1_NUMBER, "(650) 555-1234", "login_code", components=login
    )
    assert status == 200, body
    assert body["contacts"] == [{"input": "(650) 555-1234", "wa_id": "16505551234"}]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (
            {"messaging_product": "sms", "to": UK_USER, "type": "text", "text": {"body": "x"}},
            "messaging_product",
        ),
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, "to"),
        (
            {
                "messaging_product": "whatsapp",
                "to": UK_USER,
                "type": "text",
                "text": {"body": "x" * 4097},
            },
            "4096",
        ),
        ({"messaging_product": "whatsapp", "to": UK_USER, "type": "carrier_pigeon"}, "type"),
        (
            {
                "messaging_product": "whatsapp",
                "to": "not a number",
                "type": "text",
                "text": {"body": "x"},
            },
            "to",
        ),
    ],
)
async def test_invalid_payloads_are_code_100(
    make_sim: MakeSim, payload: dict, fragment: str
) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER)
    status, body = await sim.send(A1_NUMBER, payload)
    assert_meta_error(status, body, 100, 400)
    assert fragment in body["error"]["error_data"]["details"]


async def test_malformed_json_is_code_100(make_sim: MakeSim) -> None:
    sim = await make_sim()
    response = await sim.client.post(
        f"/v24.0/{A1_NUMBER}/messages",
        data=b"{not json",
        headers={"Authorization": f"Bearer {BSP_TOKEN}"},
    )
    assert_meta_error(response.status, await response.json(), 100, 400)


@pytest.mark.parametrize("version", ["v22.0", "v23.0", "v24.0", "v25.0", "v26.0", ""])
async def test_supported_versions_and_the_unversioned_path_are_served(
    make_sim: MakeSim, version: str
) -> None:
    sim = await make_sim()
    status, body = await sim.send(
        A1_NUMBER,
        {
            "messaging_product": "whatsapp",
            "to": UK_USER,
            "type": "template",
            "template": {"name": "appointment_reminder", "language": {"code": "en_US"}},
        },
        version=version,
    )
    # Any version answers the same template check: proof the request was routed and processed.
    assert_meta_error(status, body, 132001, 404)


@pytest.mark.parametrize("version", ["v21.0", "v27.0", "v2.0"])
async def test_other_versions_are_code_100(make_sim: MakeSim, version: str) -> None:
    sim = await make_sim()
    status, body = await sim.send(
        A1_NUMBER,
        {"messaging_product": "whatsapp", "to": UK_USER, "text": {"body": "x"}},
        version=version,
    )
    assert_meta_error(status, body, 100, 400)
    assert version in body["error"]["error_data"]["details"]


@pytest.mark.parametrize(
    ("token", "code", "http_status"),
    [
        ("", 190, 401),
        ("EAAnot-a-token", 190, 401),
        ("EAAsim-expired", 190, 401),
        ("EAAsim-invalidated", 0, 401),
        ("EAAsim-management-only", 10, 403),
        ("EAAsim-portfolio-b", 200, 403),  # valid token, but it does not own WABA A1
    ],
)
async def test_token_and_permission_errors(
    make_sim: MakeSim, token: str, code: int, http_status: int
) -> None:
    sim = await make_sim()
    status, body = await sim.send(
        A1_NUMBER,
        {"messaging_product": "whatsapp", "to": UK_USER, "text": {"body": "x"}},
        token=token,
    )
    assert_meta_error(status, body, code, http_status)


async def test_401_carries_www_authenticate_like_graph(make_sim: MakeSim) -> None:
    sim = await make_sim()
    response = await sim.client.post(f"/v24.0/{A1_NUMBER}/messages", data=b"{}")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform"')


async def test_owner_token_may_send_for_its_own_waba(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send(
        B1_NUMBER,
        {
            "messaging_product": "whatsapp",
            "to": UK_USER,
            "type": "template",
            "template": {
                "name": "verify_phone",
                "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "9911"}]}],
            },
        },
        token="EAAsim-portfolio-b",
    )
    assert status == 200, body


async def test_unknown_phone_number_is_code_100(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send(
        "100000000000999", {"messaging_product": "whatsapp", "to": UK_USER, "text": {"body": "x"}}
    )
    assert_meta_error(status, body, 100, 400)
    assert "does not exist" in body["error"]["error_data"]["details"]


@pytest.mark.parametrize(
    ("name", "language", "components", "code", "http_status"),
    [
        ("no_such_template", "en_US", [], 132001, 404),
        ("order_confirmation", "fr_FR", [], 132001, 404),  # exists, but not in that language
        (
            "holiday_promo",
            "en_US",
            [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            132001,
            404,
        ),
        (
            "spammy_offer",
            "en_US",
            [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            132001,
            404,
        ),
        (
            "delivery_update",
            "en_US",
            [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            132015,
            400,
        ),
        (
            "flash_deal",
            "en_US",
            [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            132016,
            400,
        ),
        (
            "summer_sale",
            "en_US",
            [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            132000,
            400,
        ),
        ("order_confirmation", "en_US", ORDER_COMPONENTS[1:], 132012, 400),
    ],
)
async def test_template_errors(
    make_sim: MakeSim, name: str, language: str, components: list, code: int, http_status: int
) -> None:
    sim = await make_sim()
    status, body = await sim.send_template(
        A1_NUMBER, UK_USER, name, language=language, components=components
    )
    assert_meta_error(status, body, code, http_status)


async def test_template_in_another_language_is_its_own_template(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send_template(
        A1_NUMBER, UK_USER, "order_confirmation", ["سارة", "A1"], language="ar"
    )
    assert status == 200, body


async def test_rejected_sends_are_not_recorded_as_sends(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.send_template(A1_NUMBER, UK_USER, "flash_deal", ["x"])
    await sim.send_text(A1_NUMBER, UK_USER)  # 131047: no window
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 0 and sends["sends"] == []
    _, stats = await sim.control("GET", "/_sim/stats")
    assert stats["errors_by_code"] == {"132016": 1, "131047": 1}


# -- injected faults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status"), [(1, 400), (2, 503), (131000, 500), (131016, 500)]
)
async def test_injected_transient_errors_use_metas_envelope(
    make_sim: MakeSim, code: int, http_status: int
) -> None:
    sim = await make_sim()
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "error", "rate": 1.0, "code": code}]}
    )
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", ["a", "b"])
    assert_meta_error(status, body, code, http_status)


async def test_injected_bare_5xx_is_not_json(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "http", "rate": 1.0, "http_status": 502}]}
    )
    response = await sim.client.post(f"/v24.0/{A1_NUMBER}/messages", data=b"{}")
    assert response.status == 502
    assert response.content_type == "text/html"


async def test_faults_can_be_scoped_to_one_phone_number(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.control(
        "POST",
        "/_sim/faults",
        {"faults": [{"kind": "error", "rate": 1.0, "code": 2, "phone_number_id": B1_NUMBER}]},
    )
    status, _ = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", ["a", "b"])
    assert status == 200
    status, body = await sim.send_template(
        B1_NUMBER, UK_USER, "appointment_reminder", ["Mon", "9:00"]
    )
    assert_meta_error(status, body, 2, 503)


async def test_fault_rate_is_applied_per_request(make_sim: MakeSim) -> None:
    sim = await make_sim(overrides={"limits": {"enabled": False}})
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "error", "rate": 0.3, "code": 131000}]}
    )
    results = [
        (await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", ["a", "b"]))[0]
        for _ in range(300)
    ]
    failed = results.count(500)
    assert 60 <= failed <= 120  # 30 % of 300, seeded


async def test_dropped_connection_gives_the_client_no_response(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.control("POST", "/_sim/faults", {"faults": [{"kind": "drop", "rate": 1.0}]})
    with pytest.raises(aiohttp.ClientError):
        await sim.client.post(f"/v24.0/{A1_NUMBER}/messages", data=b"{}")


async def test_hang_makes_the_client_time_out(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "hang", "rate": 1.0, "hang_seconds": 5}]}
    )
    with pytest.raises(asyncio.TimeoutError):
        await sim.client.post(
            f"/v24.0/{A1_NUMBER}/messages", data=b"{}", timeout=aiohttp.ClientTimeout(total=0.2)
        )


async def test_response_lost_after_acceptance_leaves_an_accepted_send(make_sim: MakeSim) -> None:
    """The dangerous ambiguity: Meta accepted the message but the client saw no response."""
    sim = await make_sim()
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "drop", "rate": 1.0, "phase": "after"}]}
    )
    with pytest.raises(aiohttp.ClientError):
        await sim.send_template(
            A1_NUMBER, UK_USER, "summer_sale", ["a", "b"], biz_opaque_callback_data="msg-1"
        )
    await sim.control("DELETE", "/_sim/faults")
    status, _ = await sim.send_template(
        A1_NUMBER, UK_USER, "summer_sale", ["a", "b"], biz_opaque_callback_data="msg-1"
    )
    assert status == 200
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 2
    [duplicate] = sends["duplicates"]
    assert duplicate["biz_opaque_callback_data"] == "msg-1" and duplicate["count"] == 2


async def test_injected_latency_delays_the_response(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "latency", "rate": 1.0, "latency_ms": 150}]}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", ["a", "b"])
    assert status == 200
    assert loop.time() - started >= 0.14
