"""Throughput, pair rate, customer-service window, messaging tier, throughput upgrades."""

from __future__ import annotations

import asyncio

from tests.metasim.conftest import (
    A1_FAST_NUMBER,
    A1_NUMBER,
    A1_NUMBER_2,
    B1_COEX_NUMBER,
    B1_NUMBER,
    UK_USER,
    MakeSim,
    Receiver,
    wait_for,
)

SALE = ["Sam", "20%"]


async def burst(
    sim, number: str, count: int, users: int = 10_000, template: tuple = ("summer_sale", SALE)
):
    """`count` sends at one frozen instant, spread over many recipients (no pair limit)."""
    results = await asyncio.gather(
        *(
            sim.send_template(number, f"+4477009{i % users:05d}", template[0], template[1])
            for i in range(count)
        )
    )
    codes = [200 if status == 200 else body["error"]["code"] for status, body in results]
    return codes.count(200), codes


async def test_200_sends_in_one_instant_to_an_80_mps_number_accept_80(make_sim: MakeSim) -> None:
    sim = await make_sim()
    accepted, codes = await burst(sim, A1_NUMBER, 200)
    assert accepted == 80
    assert codes.count(130429) == 120
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    assert body["error"]["message"] == "(#130429) Rate limit hit"
    assert (
        body["error"]["error_data"]["details"] == "Cloud API message throughput has been reached."
    )


async def test_throughput_refills_at_the_numbers_rate(make_sim: MakeSim) -> None:
    sim = await make_sim()
    assert (await burst(sim, A1_NUMBER, 200))[0] == 80
    await sim.advance(0.5)
    assert (await burst(sim, A1_NUMBER, 200))[0] == 40
    await sim.advance(5.0)
    assert (await burst(sim, A1_NUMBER, 200))[0] == 80  # burst never exceeds one second


async def test_sends_spread_over_one_second_never_exceed_rate_times_one_plus_t(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    accepted = 0
    for _ in range(20):  # 200 sends over 1 s in 50 ms steps
        accepted += (await burst(sim, A1_NUMBER, 10))[0]
        await sim.advance(0.05)
    assert accepted <= 80 * (1 + 1.0)
    assert accepted >= 80


async def test_each_number_has_its_own_throughput(make_sim: MakeSim) -> None:
    sim = await make_sim()
    assert (await burst(sim, A1_NUMBER, 100))[0] == 80
    assert (await burst(sim, A1_NUMBER_2, 100))[0] == 80
    assert (await burst(sim, A1_FAST_NUMBER, 1100))[0] == 1000


async def test_coexistence_number_is_fixed_at_20_mps(make_sim: MakeSim) -> None:
    sim = await make_sim()
    accepted, _ = await burst(
        sim, B1_COEX_NUMBER, 60, template=("appointment_reminder", ["Mon", "9:00"])
    )
    assert accepted == 20


async def test_inbound_messages_consume_the_numbers_throughput(make_sim: MakeSim) -> None:
    sim = await make_sim()
    for i in range(30):
        await sim.inbound(A1_NUMBER, f"+4477001{i:05d}")
    accepted, _ = await burst(sim, A1_NUMBER, 100)
    assert accepted == 50


async def test_throttled_attempts_do_not_consume_but_other_refusals_do(make_sim: MakeSim) -> None:
    sim = await make_sim()
    # 30 requests refused for a template error still used throughput (Meta counts all messages).
    for _ in range(30):
        status, _ = await sim.send_template(A1_NUMBER, UK_USER, "flash_deal", ["x"])
        assert status == 400
    assert (await burst(sim, A1_NUMBER, 200))[0] == 50
    # Requests refused *with* 130429 did not dig the bucket deeper: 0.1 s refills 8.
    await sim.advance(0.1)
    assert (await burst(sim, A1_NUMBER, 200))[0] == 8


async def test_46th_message_to_one_user_inside_6_seconds_hits_the_pair_limit(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    for i in range(45):
        status, body = await sim.send_template(A1_FAST_NUMBER, UK_USER, "summer_sale", SALE)
        assert status == 200, (i, body)
    status, body = await sim.send_template(A1_FAST_NUMBER, UK_USER, "summer_sale", SALE)
    assert status == 400 and body["error"]["code"] == 131056
    assert (
        body["error"]["message"]
        == "(#131056) (Business Account, Consumer Account) pair rate limit hit"
    )
    await sim.advance(5.9)
    status, body = await sim.send_template(A1_FAST_NUMBER, UK_USER, "summer_sale", SALE)
    assert body.get("error", {}).get("code") == 131056
    await sim.advance(0.1)  # 6 s after the burst: one message paid back
    status, _ = await sim.send_template(A1_FAST_NUMBER, UK_USER, "summer_sale", SALE)
    assert status == 200
    status, _ = await sim.send_template(A1_FAST_NUMBER, UK_USER, "summer_sale", SALE)
    assert status == 400
    # Other recipients and other numbers are unaffected.
    assert (await sim.send_template(A1_FAST_NUMBER, "+447700900124", "summer_sale", SALE))[0] == 200
    assert (await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE))[0] == 200


async def test_text_outside_the_window_is_131047_until_the_user_writes(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.send_text(A1_NUMBER, UK_USER)
    assert status == 400 and body["error"]["code"] == 131047
    assert body["error"]["message"] == "(#131047) Re-engagement message"
    await sim.inbound(A1_NUMBER, UK_USER)
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 200
    # The window belongs to this (business number, user) pair only.
    assert (await sim.send_text(A1_NUMBER_2, UK_USER))[1]["error"]["code"] == 131047
    await sim.advance(86_399)
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 200
    await sim.advance(1)
    assert (await sim.send_text(A1_NUMBER, UK_USER))[1]["error"]["code"] == 131047
    # Templates are always allowed.
    assert (await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE))[0] == 200


async def test_inbound_written_a_day_ago_does_not_open_the_window(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, UK_USER, age_seconds=86_400)
    assert (await sim.send_text(A1_NUMBER, UK_USER))[1]["error"]["code"] == 131047
    await sim.inbound(A1_NUMBER, UK_USER, age_seconds=3_600)
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 200


async def test_messaging_tier_caps_unique_business_initiated_recipients(make_sim: MakeSim) -> None:
    sim = await make_sim()  # portfolio B is TIER_2K
    reminder = ("appointment_reminder", ["Mon", "9:00"])
    accepted = 0
    for _ in range(26):  # 26 x 80 = 2080 unique users, paced under the 80 mps throughput
        accepted += await _burst_unique(sim, accepted)
        await sim.advance(1.0)
    assert accepted == 2000
    status, body = await sim.send_template(B1_NUMBER, "+4477009999999", *reminder)
    assert status == 400 and body["error"]["code"] == 131064
    # A user who already counted in the window can still be messaged.
    assert (await sim.send_template(B1_NUMBER, "+447700000000", *reminder))[0] == 200
    # A user-initiated conversation (open window) does not count towards the tier.
    await sim.inbound(B1_NUMBER, "+4477009999998")
    assert (await sim.send_template(B1_NUMBER, "+4477009999998", *reminder))[0] == 200
    # The limit is per portfolio: portfolio A is unlimited.
    assert (await sim.send_template(A1_NUMBER, "+4477009999999", "summer_sale", SALE))[0] == 200
    # After 24 h the window has moved on.
    await sim.advance(86_400)
    assert (await sim.send_template(B1_NUMBER, "+4477009999999", *reminder))[0] == 200


async def _burst_unique(sim, offset: int) -> int:
    results = await asyncio.gather(
        *(
            sim.send_template(
                B1_NUMBER, f"+44770{offset + i:07d}", "appointment_reminder", ["Mon", "9:00"]
            )
            for i in range(80)
        )
    )
    return sum(1 for status, _ in results if status == 200)


async def test_tier_is_shared_by_all_numbers_of_the_portfolio(make_sim: MakeSim) -> None:
    sim = await make_sim()
    sim.sim.world.portfolios["880011223344557"].window.limit = 3
    reminder = ("appointment_reminder", ["Mon", "9:00"])
    for user in ("+447700000001", "+447700000002"):
        assert (await sim.send_template(B1_NUMBER, user, *reminder))[0] == 200
    assert (await sim.send_template(B1_COEX_NUMBER, "+447700000003", *reminder))[0] == 200
    _, body = await sim.send_template(B1_COEX_NUMBER, "+447700000004", *reminder)
    assert body["error"]["code"] == 131064


async def test_violations_record_every_limit_refusal(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await burst(sim, A1_NUMBER, 85)
    await sim.send_text(A1_NUMBER_2, UK_USER, biz_opaque_callback_data="m-7")
    _, violations = await sim.control("GET", "/_sim/violations")
    assert violations["count"] == 6
    assert violations["by_code"] == {"130429": 5, "131047": 1}
    last = violations["violations"][-1]
    assert last["code"] == 131047 and last["phone_number_id"] == A1_NUMBER_2
    assert last["recipient"] == "447700900123" and last["biz_opaque_callback_data"] == "m-7"
    assert isinstance(last["at"], float)


async def test_limits_switch_off_disables_every_rule(make_sim: MakeSim) -> None:
    sim = await make_sim(overrides={"limits": {"enabled": False}})
    assert (await burst(sim, A1_NUMBER, 200, users=1))[0] == 200
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 200


async def test_throughput_upgrade_answers_131057_then_raises_mps_and_notifies(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, body = await sim.control("POST", f"/_sim/numbers/{A1_NUMBER}/upgrade", {})
    assert status == 200 and body["mps"] == 1000
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    assert status == 500 and body["error"]["code"] == 131057
    await sim.advance(1.0)  # the configured upgrade duration
    changes = await wait_for(
        lambda: receiver.changes("phone_number_quality_update"), what="upgrade webhook"
    )
    assert changes == [
        {
            "display_phone_number": "15550001001",
            "event": "THROUGHPUT_UPGRADE",
            "current_limit": "TIER_UNLIMITED",
        }
    ]
    [payload] = [
        p
        for p in receiver.payloads
        if p["entry"][0]["changes"][0]["field"] == "phone_number_quality_update"
    ]
    assert payload["entry"][0]["id"] == "102290129340398" and isinstance(
        payload["entry"][0]["time"], int
    )
    await sim.advance(1.0)  # the bucket refills at the new rate, up to the new burst
    accepted, _ = await burst(sim, A1_NUMBER, 1100)
    assert accepted == 1000
    response = await sim.client.get(
        f"/v24.0/{A1_NUMBER}?fields=throughput",
        headers={"Authorization": "Bearer EAAsim-bsp-system-user"},
    )
    assert (await response.json())["throughput"] == {"level": "HIGH"}


async def test_upgrade_needs_an_unlimited_portfolio_and_never_applies_to_coexistence(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    status, body = await sim.control("POST", f"/_sim/numbers/{B1_NUMBER}/upgrade", {})
    assert status == 409 and body["error"]["code"] == "not_eligible"
    status, _ = await sim.control(
        "POST", f"/_sim/numbers/{B1_COEX_NUMBER}/upgrade", {"force": True}
    )
    assert status == 409
    status, _ = await sim.control(
        "POST", f"/_sim/numbers/{B1_NUMBER}/upgrade", {"force": True, "mps": 200}
    )
    assert status == 200
