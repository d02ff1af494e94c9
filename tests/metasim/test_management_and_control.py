"""Template management, node reads, and the /_sim control API."""

from __future__ import annotations

from tests.metasim.conftest import (
    A1_NUMBER,
    A1_NUMBER_2,
    BSP_TOKEN,
    UK_USER,
    WABA_A1,
    MakeSim,
)

AUTH = {"Authorization": f"Bearer {BSP_TOKEN}"}
SALE = ["Sam", "20%"]


async def get(sim, path: str, token: str = BSP_TOKEN) -> tuple[int, dict]:
    response = await sim.client.get(path, headers={"Authorization": f"Bearer {token}"})
    return response.status, await response.json()


async def create_template(
    sim, name: str, language: str = "en_US", category: str = "UTILITY"
) -> tuple[int, dict]:
    response = await sim.client.post(
        f"/v24.0/{WABA_A1}/message_templates",
        json={
            "name": name,
            "category": category,
            "language": language,
            "components": [{"type": "BODY", "text": "Hello {{1}}"}],
        },
        headers=AUTH,
    )
    return response.status, await response.json()


# -- template list -------------------------------------------------------------------------------


async def test_template_list_pages_with_cursors_in_metas_shape(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, page1 = await get(
        sim, f"/v24.0/{WABA_A1}/message_templates?fields=name,status,category&limit=4"
    )
    assert status == 200
    assert [t["name"] for t in page1["data"]] == [
        "order_confirmation",
        "order_confirmation",
        "reservation_confirmation",
        "summer_sale",
    ]
    assert set(page1["data"][0]) == {"name", "status", "category", "id"}
    cursors = page1["paging"]["cursors"]
    assert set(cursors) == {"before", "after"} and "previous" not in page1["paging"]
    next_url = page1["paging"]["next"]
    assert f"after={cursors['after']}" in next_url
    response = await sim.client.get(next_url[next_url.index("/v24.0") :], headers=AUTH)
    page2 = await response.json()
    assert [t["name"] for t in page2["data"]] == [
        "login_code",
        "new_collection",
        "holiday_promo",
        "spammy_offer",
    ]
    assert "previous" in page2["paging"]
    _, page3 = await get(
        sim,
        f"/v24.0/{WABA_A1}/message_templates?limit=4&after={page2['paging']['cursors']['after']}",
    )
    assert [t["name"] for t in page3["data"]] == [
        "delivery_update",
        "flash_deal",
        "hello_world",
        "spring_coupon",
    ]
    # Following `next` to the end gives every template once; the last page has no `next`.
    names, page = [], page3
    while "next" in page["paging"]:
        url = page["paging"]["next"]
        page = await (await sim.client.get(url[url.index("/v24.0") :], headers=AUTH)).json()
        names += [t["name"] for t in page["data"]]
    assert names == ["store_pickup", "invoice_ready", "book_visit", "login_otp"] + [
        "new_arrivals_video"
    ]
    _, back = await get(
        sim,
        f"/v24.0/{WABA_A1}/message_templates?limit=4&before={page3['paging']['cursors']['before']}",
    )
    assert [t["id"] for t in back["data"]] == [t["id"] for t in page2["data"]]
    assert "next" in back["paging"] and "previous" in back["paging"]


async def test_template_list_default_fields_and_status_filter(make_sim: MakeSim) -> None:
    sim = await make_sim()
    _, body = await get(sim, f"/v24.0/{WABA_A1}/message_templates?status=APPROVED&limit=100")
    names = {t["name"] for t in body["data"]}
    assert "flash_deal" not in names and "holiday_promo" not in names and "summer_sale" in names
    template = next(
        t for t in body["data"] if t["name"] == "order_confirmation" and t["language"] == "en_US"
    )
    assert set(template) == {
        "name",
        "parameter_format",
        "components",
        "language",
        "status",
        "category",
        "id",
    }
    assert template["components"][0] == {"type": "HEADER", "format": "IMAGE"}
    _, paused = await get(sim, f"/v24.0/{WABA_A1}/message_templates?status=paused,disabled")
    assert {t["status"] for t in paused["data"]} == {"PAUSED", "DISABLED"}


async def test_bad_template_cursor_is_131059_from_v24_and_100_before(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await get(sim, f"/v24.0/{WABA_A1}/message_templates?after=garbage")
    assert status == 400 and body["error"]["code"] == 131059
    status, body = await get(sim, f"/v23.0/{WABA_A1}/message_templates?after=garbage")
    assert status == 400 and body["error"]["code"] == 100


async def test_template_list_needs_the_waba_and_a_nonexisting_field_is_100(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    status, body = await get(sim, f"/v24.0/{WABA_A1}/message_templates", token="EAAsim-portfolio-b")
    assert status == 403 and body["error"]["code"] == 200
    status, body = await get(sim, f"/v24.0/{WABA_A1}/message_templates?fields=name,colour")
    assert status == 400 and "colour" in body["error"]["error_data"]["details"]


# -- template creation --------------------------------------------------------------------------


async def test_template_creation_checks_the_name_and_category(make_sim: MakeSim) -> None:
    sim = await make_sim()
    for bad_name in ("Welcome", "welcome-back", "", "x" * 513):
        status, body = await create_template(sim, bad_name)
        assert status == 400 and body["error"]["code"] == 100, bad_name
    status, body = await create_template(sim, "fine_name", category="PROMO")
    assert status == 400 and body["error"]["code"] == 100
    status, body = await create_template(sim, "summer_sale")  # exists in en_US
    assert status == 400 and body["error"]["code"] == 100
    status, body = await create_template(sim, "summer_sale", language="de")
    assert status == 200 and body["status"] == "PENDING" and body["id"].isdigit()


async def test_template_creation_is_limited_to_100_per_waba_per_hour(make_sim: MakeSim) -> None:
    sim = await make_sim()
    for i in range(100):
        status, body = await create_template(sim, f"bulk_{i}")
        assert status == 200, (i, body)
    status, body = await create_template(sim, "bulk_100")
    assert status == 400 and body["error"]["code"] == 2388019
    assert body["error"]["message"] == "(#2388019) Message template limit exceeded"
    await sim.advance(3600)
    assert (await create_template(sim, "bulk_100"))[0] == 200


async def test_a_waba_holds_at_most_250_templates(make_sim: MakeSim) -> None:
    sim = await make_sim(overrides={"limits": {"template_creations_per_hour": 1000}})
    existing = len(sim.sim.world.wabas[WABA_A1].templates)
    for i in range(250 - existing):
        assert (await create_template(sim, f"t_{i}"))[0] == 200
    status, body = await create_template(sim, "one_too_many")
    assert status == 400 and body["error"]["code"] == 2388019
    _, violations = await sim.control("GET", "/_sim/violations")
    assert violations["by_code"] == {"2388019": 1}


# -- node reads ------------------------------------------------------------------------------------


async def test_phone_number_fields(make_sim: MakeSim) -> None:
    sim = await make_sim()
    fields = (
        "throughput,whatsapp_business_manager_messaging_limit,quality_rating,display_phone_number"
    )
    status, body = await get(sim, f"/v24.0/{A1_NUMBER}?fields={fields}")
    assert status == 200
    assert body == {
        "throughput": {"level": "STANDARD"},
        "whatsapp_business_manager_messaging_limit": "TIER_UNLIMITED",
        "quality_rating": "GREEN",
        "display_phone_number": "+1 555-000-1001",
        "id": A1_NUMBER,
    }
    _, body = await get(
        sim, "/v24.0/118243906275101?fields=whatsapp_business_manager_messaging_limit"
    )
    assert body["whatsapp_business_manager_messaging_limit"] == "TIER_2K"


async def test_messaging_limit_field_exists_from_v24_only(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await get(
        sim, f"/v23.0/{A1_NUMBER}?fields=whatsapp_business_manager_messaging_limit"
    )
    assert status == 400 and body["error"]["code"] == 100
    assert "nonexisting field" in body["error"]["error_data"]["details"]


async def test_template_node_and_unknown_node(make_sim: MakeSim) -> None:
    sim = await make_sim()
    _, body = await get(sim, "/v24.0/1689556908129804?fields=status,quality_score")
    assert body == {
        "status": "APPROVED",
        "quality_score": {"score": "GREEN"},
        "id": "1689556908129804",
    }
    status, body = await get(sim, "/v24.0/999999999999")
    assert status == 400 and body["error"]["code"] == 100


# -- control API -----------------------------------------------------------------------------------


async def test_sends_record_lists_every_accepted_send_and_duplicates(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.send_template(
        A1_NUMBER, UK_USER, "summer_sale", SALE, biz_opaque_callback_data="msg-1"
    )
    await sim.send_template(
        A1_NUMBER_2, "+447700900124", "summer_sale", SALE, biz_opaque_callback_data="msg-2"
    )
    await sim.send_template(
        A1_NUMBER, "+447700900125", "summer_sale", SALE, biz_opaque_callback_data="msg-1"
    )
    await sim.send_template(A1_NUMBER, "+447700900126", "summer_sale", SALE)
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 4 and sends["returned"] == 4
    first = sends["sends"][0]
    assert set(first) == {
        "wamid",
        "phone_number_id",
        "waba_id",
        "recipient",
        "input",
        "type",
        "template_name",
        "template_language",
        "category",
        "biz_opaque_callback_data",
        "accepted_at",
        "message_status",
        "final_status",
        "error_code",
        "pricing",
        "context_message_id",
        "body",
    }
    # The request exactly as it reached Meta.
    assert first["body"] == {
        "messaging_product": "whatsapp",
        "to": UK_USER,
        "type": "template",
        "template": {
            "name": "summer_sale",
            "language": {"code": "en_US"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in SALE]}
            ],
        },
        "biz_opaque_callback_data": "msg-1",
    }
    assert (first["type"], first["category"], first["final_status"]) == (
        "template",
        "marketing",
        "accepted",
    )
    [dup] = sends["duplicates"]
    assert (
        dup["biz_opaque_callback_data"] == "msg-1" and dup["count"] == 2 and len(dup["wamids"]) == 2
    )
    _, filtered = await sim.control("GET", f"/_sim/sends?phone_number_id={A1_NUMBER_2}")
    assert filtered["matched"] == 1 and filtered["sends"][0]["biz_opaque_callback_data"] == "msg-2"
    _, paged = await sim.control("GET", "/_sim/sends?offset=1&limit=2")
    assert paged["returned"] == 2 and paged["sends"][0]["biz_opaque_callback_data"] == "msg-2"


async def test_records_are_memory_bounded_but_counters_stay_exact(make_sim: MakeSim) -> None:
    sim = await make_sim(overrides={"records": {"max_sends": 10}, "limits": {"enabled": False}})
    for i in range(25):
        await sim.send_template(A1_NUMBER, f"+4477009{i:05d}", "summer_sale", SALE)
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 25 and sends["returned"] == 10
    assert len(sim.sim.records.by_wamid) == 10


async def test_stats_count_sends_errors_and_inbound(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER)
    await sim.send_text(A1_NUMBER, UK_USER)
    await sim.send_template(A1_NUMBER, UK_USER, "flash_deal", ["x"])
    _, stats = await sim.control("GET", "/_sim/stats")
    assert stats["sends_accepted"] == 1 and stats["sends_by_type"] == {"text": 1}
    assert stats["errors_by_code"] == {"132016": 1} and stats["inbound_messages"] == 1


async def test_reset_returns_to_the_config_and_the_seed_makes_runs_repeatable(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()

    async def run() -> list[str]:
        ids = []
        for user in ("+447700900131", "+447700900132"):
            _, body = await sim.send_template(A1_NUMBER, user, "summer_sale", SALE)
            ids.append(body["messages"][0]["id"])
        return ids

    await sim.control(
        "POST", "/_sim/templates/status", {"template_id": "1689556908129804", "status": "DISABLED"}
    )
    await sim.control("POST", "/_sim/faults", {"faults": [{"kind": "latency", "rate": 1.0}]})
    status, _ = await sim.control("POST", "/_sim/reset", {"seed": 7})
    assert status == 200
    assert sim.sim.world.templates["1689556908129804"].status == "APPROVED" and sim.sim.faults == []
    first = await run()
    await sim.control("POST", "/_sim/reset", {"seed": 7})
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["count"] == 0
    assert await run() == first
    await sim.control("POST", "/_sim/reset", {"seed": 8})
    assert await run() != first


async def test_clock_advance_closes_the_window(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER)
    status, body = await sim.control("POST", "/_sim/clock/advance", {"seconds": 86_400})
    assert status == 200 and "wall" in body
    assert (await sim.send_text(A1_NUMBER, UK_USER))[1]["error"]["code"] == 131047


async def test_control_api_validation_errors_use_the_house_error_shape(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.control(
        "POST", "/_sim/faults", {"faults": [{"kind": "meteor", "rate": 2}]}
    )
    assert (
        status == 400
        and body["error"]["code"] == "invalid_request"
        and body["error"]["details"]["errors"]
    )
    status, body = await sim.control(
        "POST", "/_sim/inbound", {"phone_number_id": "1", "from": "+447700900123"}
    )
    assert status == 404 and body["error"]["code"] == "unknown_phone_number"


async def test_healthz_and_metrics(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.send_template(A1_NUMBER, UK_USER, "flash_deal", ["x"])
    assert await sim.control("GET", "/healthz") == (200, {"status": "ok"})
    response = await sim.client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'metasim_sends_total{outcome="accepted"} 1.0' in text
    assert 'metasim_sends_total{outcome="rejected"} 1.0' in text
    assert 'metasim_graph_errors_total{code="132016"} 1.0' in text
