"""Webhooks against a real receiver: shapes, signatures, pricing, failures, habits, retries."""

from __future__ import annotations

import asyncio
import itertools
import json

from tests.metasim.conftest import (
    A1_NUMBER,
    B1_NUMBER,
    UK_USER,
    MakeSim,
    Receiver,
    verify_signature,
    wait_for,
)
from tools.metasim.clock import SystemClock

SALE = ["Sam", "20%"]
REMINDER = ["Mon", "9:00"]


def only_change(payload: dict) -> tuple[dict, dict]:
    [entry] = payload["entry"]
    [change] = entry["changes"]
    return entry, change


async def test_status_webhooks_sent_delivered_read_in_metas_shape(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    _, body = await sim.send_template(
        A1_NUMBER, UK_USER, "summer_sale", SALE, biz_opaque_callback_data="order-42"
    )
    wamid = body["messages"][0]["id"]
    accepted_at = int(sim.clock.wall())
    for step, expected in enumerate(("sent", "delivered", "read"), start=1):
        await sim.advance(1.0)
        await wait_for(lambda n=step: len(receiver.statuses_for(wamid)) == n, what=expected)
    assert len(receiver.posts) == 3  # polite: one status per POST
    headers, raw = receiver.posts[0]
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(raw, headers.get("X-Hub-Signature-256"))
    payload = receiver.payloads[0]
    assert payload["object"] == "whatsapp_business_account"
    entry, change = only_change(payload)
    assert entry["id"] == "102290129340398" and change["field"] == "messages"
    assert change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {
        "display_phone_number": "15550001001",
        "phone_number_id": A1_NUMBER,
    }

    sent, delivered, read = receiver.statuses_for(wamid)
    pricing = {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"}
    assert sent == {
        "id": wamid,
        "status": "sent",
        "timestamp": str(accepted_at + 1),
        "recipient_id": "447700900123",
        "pricing": pricing,
        "biz_opaque_callback_data": "order-42",
    }
    assert delivered["status"] == "delivered" and delivered["timestamp"] == str(accepted_at + 2)
    assert delivered["pricing"] == pricing
    assert (
        read["status"] == "read" and "pricing" not in read
    )  # pricing on sent + one of delivered/read
    assert read["biz_opaque_callback_data"] == "order-42"
    assert all("conversation" not in s for s in (sent, delivered, read))  # v24+

    _, sends = await sim.control("GET", "/_sim/sends")
    [record] = sends["sends"]
    assert record["wamid"] == wamid and record["final_status"] == "read"
    assert record["pricing"] == {"type": "regular", "category": "marketing", "billable": True}
    assert (
        record["biz_opaque_callback_data"] == "order-42"
        and record["template_name"] == "summer_sale"
    )


async def test_signature_is_over_raw_bytes_with_escaped_unicode(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    inbound = await sim.inbound(
        A1_NUMBER, UK_USER, text="Café ☕ مرحبا — see https://x.example/a @ 5", name="Zoë"
    )
    await wait_for(lambda: receiver.posts, what="inbound webhook")
    headers, raw = receiver.posts[0]
    assert raw.isascii()
    assert (
        b"Caf\\u00e9 \\u2615" in raw and b"https:\\/\\/x.example\\/a" in raw and b"\\u0040" in raw
    )
    assert verify_signature(raw, headers["X-Hub-Signature-256"])
    # Hashing a re-serialisation of the parsed JSON does not match: receivers must hash raw bytes.
    reserialised = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert not verify_signature(reserialised, headers["X-Hub-Signature-256"])
    _, change = only_change(receiver.payloads[0])
    value = change["value"]
    assert value["contacts"] == [{"profile": {"name": "Zoë"}, "wa_id": "447700900123"}]
    [message] = value["messages"]
    assert message["from"] == "447700900123" and message["id"] == inbound["wamid"]
    assert message["type"] == "text" and message["text"] == {
        "body": "Café ☕ مرحبا — see https://x.example/a @ 5"
    }
    assert message["timestamp"] == str(int(sim.clock.wall()))
    # The inbound opened the customer-service window.
    assert (await sim.send_text(A1_NUMBER, UK_USER))[0] == 200


async def first_pricing(sim, receiver: Receiver, wamid: str) -> dict:
    await sim.advance(1.0)
    statuses = await wait_for(lambda: receiver.statuses_for(wamid), what="sent status")
    return statuses[0]["pricing"]


async def test_pricing_under_pmp_2025_07(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    # Outside any window: a utility template is regular (billable).
    _, body = await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", REMINDER)
    assert await first_pricing(sim, receiver, body["messages"][0]["id"]) == {
        "billable": True,
        "pricing_model": "PMP",
        "type": "regular",
        "category": "utility",
    }
    await sim.inbound(B1_NUMBER, UK_USER)
    _, body = await sim.send_text(B1_NUMBER, UK_USER)
    assert await first_pricing(sim, receiver, body["messages"][0]["id"]) == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_customer_service",
        "category": "service",
    }
    _, body = await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", REMINDER)
    assert await first_pricing(sim, receiver, body["messages"][0]["id"]) == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_customer_service",
        "category": "utility",
    }
    _, body = await sim.send_template(B1_NUMBER, UK_USER, "verify_phone", ["1234"])
    assert (await first_pricing(sim, receiver, body["messages"][0]["id"]))["type"] == "regular"


async def test_pricing_under_pmp_2026_10_bills_service_and_in_window_utility(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, settings = await sim.control("POST", "/_sim/settings", {"pricing_rules": "pmp-2026-10"})
    assert status == 200 and settings["pricing_rules"] == "pmp-2026-10"
    await sim.inbound(B1_NUMBER, UK_USER)
    _, body = await sim.send_text(B1_NUMBER, UK_USER)
    assert await first_pricing(sim, receiver, body["messages"][0]["id"]) == {
        "billable": True,
        "pricing_model": "PMP",
        "type": "regular",
        "category": "service",
    }
    _, body = await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", REMINDER)
    assert await first_pricing(sim, receiver, body["messages"][0]["id"]) == {
        "billable": True,
        "pricing_model": "PMP",
        "type": "regular",
        "category": "utility",
    }


async def test_billable_only_once_delivered(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.advance(1.0)
    await wait_for(lambda: receiver.statuses(), what="sent")
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["sends"][0]["final_status"] == "sent"
    assert sends["sends"][0]["pricing"]["billable"] is False  # charged on delivery, not on sent
    await sim.advance(1.0)
    await wait_for(lambda: len(receiver.statuses()) == 2, what="delivered")
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["sends"][0]["pricing"]["billable"] is True


async def failed_status(sim, receiver: Receiver, wamid: str) -> dict:
    await sim.advance(1.0)
    [status] = await wait_for(lambda: receiver.statuses_for(wamid), what="failed status")
    return status


async def test_recipient_not_on_whatsapp_fails_with_131026(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, body = await sim.send_template(
        A1_NUMBER, "+447700900999", "summer_sale", SALE, biz_opaque_callback_data="c1"
    )
    assert status == 200  # accepted first: the failure is asynchronous
    wamid = body["messages"][0]["id"]
    failed = await failed_status(sim, receiver, wamid)
    assert failed["status"] == "failed" and "pricing" not in failed
    assert failed["biz_opaque_callback_data"] == "c1"
    [error] = failed["errors"]
    assert error["code"] == 131026 and error["title"] == error["message"]
    assert error["error_data"]["details"] and error["href"].startswith(
        "https://developers.facebook.com/"
    )
    await sim.advance(10.0)
    await asyncio.sleep(0.05)
    assert len(receiver.statuses_for(wamid)) == 1  # nothing after failed
    _, sends = await sim.control("GET", "/_sim/sends")
    record = sends["sends"][0]
    assert record["final_status"] == "failed" and record["error_code"] == 131026
    assert record["pricing"]["billable"] is False


async def test_marketing_to_us_numbers_and_capped_users_fails_with_131049(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    for user, code in (
        ("+16505551234", 131049),
        ("+447700900888", 131049),
        ("+447700900777", 131050),
    ):
        _, body = await sim.send_template(A1_NUMBER, user, "summer_sale", SALE)
        failed = await failed_status(sim, receiver, body["messages"][0]["id"])
        assert failed["errors"][0]["code"] == code, user
    # Utility to a US number is delivered.
    _, body = await sim.send_template(B1_NUMBER, "+16505551234", "appointment_reminder", REMINDER)
    await sim.advance(1.0)
    [sent] = await wait_for(lambda: receiver.statuses_for(body["messages"][0]["id"]), what="sent")
    assert sent["status"] == "sent"


async def test_capped_user_gets_marketing_inside_a_window_they_opened(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, _ = await sim.control(
        "POST", "/_sim/recipients", {"wa_id": "+447700900555", "marketing_capped": True}
    )
    assert status == 200
    await sim.inbound(A1_NUMBER, "+447700900555")
    _, body = await sim.send_template(A1_NUMBER, "+447700900555", "summer_sale", SALE)
    await sim.advance(1.0)
    [sent] = await wait_for(lambda: receiver.statuses_for(body["messages"][0]["id"]), what="sent")
    assert sent["status"] == "sent"


async def test_asynchronous_failure_after_a_200(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(
        receiver, {"outcomes": {"async_failure_probability": 1.0, "async_failure_code": 131000}}
    )
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    wamid = body["messages"][0]["id"]
    await sim.advance(1.0)
    await sim.advance(1.0)
    sent, failed = await wait_for(
        lambda: len(receiver.statuses_for(wamid)) == 2 and receiver.statuses_for(wamid)
    )
    assert sent["status"] == "sent" and failed["status"] == "failed"
    assert failed["errors"][0]["code"] == 131000 and "pricing" not in failed
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["sends"][0]["pricing"]["billable"] is False


async def test_reaction_only_gets_a_sent_status(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    inbound = await sim.inbound(A1_NUMBER, UK_USER)
    _, body = await sim.send(
        A1_NUMBER,
        {
            "messaging_product": "whatsapp",
            "to": UK_USER,
            "type": "reaction",
            "reaction": {"message_id": inbound["wamid"], "emoji": "👍"},
        },
    )
    wamid = body["messages"][0]["id"]
    await sim.advance(5.0)
    await wait_for(lambda: receiver.statuses_for(wamid), what="sent")
    await sim.advance(5.0)
    await asyncio.sleep(0.05)
    assert [s["status"] for s in receiver.statuses_for(wamid)] == ["sent"]


async def test_graph_version_below_24_adds_conversation_objects(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver, {"webhooks": {"graph_version": "v23.0"}})
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.advance(1.0)
    [sent] = await wait_for(lambda: receiver.statuses_for(body["messages"][0]["id"]))
    assert sent["conversation"]["origin"] == {"type": "marketing"}
    assert int(sent["conversation"]["expiration_timestamp"]) == int(sent["timestamp"]) + 86_400


async def test_paced_message_is_held_then_released_or_dropped(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver, {"outcomes": {"paced_hold_seconds": 30}})
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "new_collection", ["Sam"])
    wamid = body["messages"][0]["id"]
    await sim.advance(10.0)
    await asyncio.sleep(0.05)
    assert receiver.statuses_for(wamid) == []  # still held
    await sim.advance(21.0)
    await wait_for(lambda: receiver.statuses_for(wamid), what="released")
    await sim.control("POST", "/_sim/settings", {"outcomes": {"paced_drop_probability": 1.0}})
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "new_collection", ["Sam"])
    await sim.advance(31.0)
    [failed] = await wait_for(lambda: receiver.statuses_for(body["messages"][0]["id"]))
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 132015


# -- templates ---------------------------------------------------------------------------------


async def test_template_status_change_sends_message_template_status_update(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, _ = await sim.control(
        "POST",
        "/_sim/templates/status",
        {
            "waba_id": "102290129340398",
            "name": "summer_sale",
            "language": "en_US",
            "status": "PAUSED",
        },
    )
    assert status == 200
    [value] = await wait_for(lambda: receiver.changes("message_template_status_update"))
    assert value == {
        "event": "PAUSED",
        "message_template_id": 1689556908129804,
        "message_template_name": "summer_sale",
        "message_template_language": "en-US",
        "reason": "NONE",
        "message_template_category": "MARKETING",
        "other_info": {
            "title": "FIRST_PAUSE",
            "description": "Template paused due to low quality.",
        },
    }
    entry = receiver.payloads[0]["entry"][0]
    assert entry["id"] == "102290129340398" and isinstance(entry["time"], int)
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    assert body["error"]["code"] == 132015
    await sim.control(
        "POST", "/_sim/templates/status", {"template_id": "1689556908129804", "status": "APPROVED"}
    )
    assert (await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE))[0] == 200


async def test_created_template_is_reviewed_and_then_sendable(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    response = await sim.client.post(
        "/v24.0/102290129340398/message_templates",
        json={
            "name": "welcome_back",
            "category": "UTILITY",
            "language": "en_US",
            "components": [
                {"type": "BODY", "text": "Welcome back {{1}}", "example": {"body_text": [["Sam"]]}}
            ],
        },
        headers={"Authorization": "Bearer EAAsim-portfolio-a"},
    )
    created = await response.json()
    assert (
        response.status == 200
        and created["status"] == "PENDING"
        and created["category"] == "UTILITY"
    )
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "welcome_back", ["Sam"])
    assert status == 404 and body["error"]["code"] == 132001  # pending review
    await sim.advance(5.0)
    [value] = await wait_for(lambda: receiver.changes("message_template_status_update"))
    assert value["event"] == "APPROVED" and value["message_template_id"] == int(created["id"])
    assert (await sim.send_template(A1_NUMBER, UK_USER, "welcome_back", ["Sam"]))[0] == 200


# -- retries -----------------------------------------------------------------------------------


async def test_receiver_answering_500_gets_retries_with_exponential_backoff(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver, {"webhooks": {"habits": {"retries": True, "retry_initial_seconds": 1.0}}}
    )
    receiver.scripted_statuses = [500, 500, 503]
    await sim.inbound(A1_NUMBER, UK_USER)
    for expected_attempts, wait in ((1, 1.0), (2, 2.0), (3, 4.0), (4, None)):
        await wait_for(
            lambda n=expected_attempts: len(receiver.posts) == n,
            what=f"attempt {expected_attempts}",
        )
        await wait_for(
            lambda n=expected_attempts: len(sim.sim.dispatcher.log) == n, what="log entry"
        )
        if wait is not None:
            await sim.advance(wait)
    bodies = {body for _, body in receiver.posts}
    assert len(bodies) == 1  # the same payload bytes every time
    _, log = await sim.control("GET", "/_sim/webhooks")
    attempts = log["attempts"]
    assert [a["status"] for a in attempts] == [500, 500, 503, 200]
    assert [a["outcome"] for a in attempts] == ["retry_scheduled"] * 3 + ["delivered"]
    times = [a["at_monotonic"] for a in attempts]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.0, 2.0, 4.0]


async def test_receiver_timeout_is_retried(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "timeout_seconds": 0.1,
                "habits": {"retries": True, "retry_initial_seconds": 1.0},
            }
        },
    )
    receiver.hang_seconds = 0.3
    await sim.inbound(A1_NUMBER, UK_USER)
    await wait_for(lambda: len(sim.sim.dispatcher.log) == 1, what="timed-out attempt")
    first = sim.sim.dispatcher.log[0]
    assert first["error"] == "timeout" and first["outcome"] == "retry_scheduled"
    receiver.hang_seconds = 0.0
    await sim.advance(1.0)
    await wait_for(
        lambda: len(sim.sim.dispatcher.log) == 2 and sim.sim.dispatcher.log[1]["status"] == 200
    )


async def test_retries_stop_at_the_horizon(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "habits": {
                    "retries": True,
                    "retry_initial_seconds": 1.0,
                    "retry_max_interval_seconds": 4.0,
                    "retry_horizon_seconds": 10.0,
                }
            }
        },
    )
    receiver.scripted_statuses = [500] * 100
    await sim.inbound(A1_NUMBER, UK_USER)
    log = sim.sim.dispatcher.log
    for attempt, wait in ((1, 1.0), (2, 2.0), (3, 4.0)):
        await wait_for(lambda n=attempt: len(log) == n, what=f"attempt {attempt}")
        await sim.advance(wait)
    await wait_for(lambda: len(log) == 4, what="last attempt")
    # Attempts at 0, 1, 3 and 7 s; the next would be at 11 s, past the 10 s horizon.
    assert [a["outcome"] for a in log] == ["retry_scheduled"] * 3 + ["dropped"]
    await sim.advance(100.0)
    await asyncio.sleep(0.05)
    assert len(receiver.posts) == 4


async def test_polite_profile_does_not_retry(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    receiver.scripted_statuses = [500]
    await sim.inbound(A1_NUMBER, UK_USER)
    await wait_for(lambda: len(sim.sim.dispatcher.log) == 1)
    assert sim.sim.dispatcher.log[0]["outcome"] == "dropped"


# -- realistic habits ------------------------------------------------------------------------


async def test_realistic_profile_batches_statuses_into_one_post(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "profile": "realistic",
                "delays": {"delivered": 10.0},
                "habits": {
                    "batch_max": 50,
                    "batch_window_seconds": 1.0,
                    "duplicates": False,
                    "out_of_order": False,
                    "skip_delivered": False,
                    "sent_before_response": False,
                    "foreign_statuses": False,
                },
            }
        },
    )
    wamids = []
    for i in range(5):
        _, body = await sim.send_template(A1_NUMBER, f"+44770090010{i}", "summer_sale", SALE)
        wamids.append(body["messages"][0]["id"])
    _, body = await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", REMINDER)
    wamids.append(body["messages"][0]["id"])
    await sim.advance(1.0)  # all six `sent` become due together
    await asyncio.sleep(0.05)
    assert receiver.posts == []  # waiting for the batch window
    await sim.advance(1.0)
    await wait_for(lambda: receiver.posts, what="batch")
    [payload] = receiver.payloads
    assert {entry["id"] for entry in payload["entry"]} == {"102290129340398", "117552438690213"}
    assert sorted(s["id"] for s in receiver.statuses()) == sorted(wamids)
    assert verify_signature(receiver.posts[0][1], receiver.posts[0][0]["X-Hub-Signature-256"])


async def test_realistic_profile_flushes_a_batch_at_batch_max(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "profile": "realistic",
                "habits": {
                    "batch_max": 3,
                    "batch_window_seconds": 100.0,
                    "duplicates": False,
                    "out_of_order": False,
                    "skip_delivered": False,
                    "sent_before_response": False,
                    "foreign_statuses": False,
                },
            }
        },
    )
    for i in range(6):
        await sim.send_template(A1_NUMBER, f"+44770090010{i}", "summer_sale", SALE)
    await sim.advance(1.0)
    await wait_for(lambda: len(receiver.posts) == 2)
    [first, second] = receiver.payloads
    assert len(first["entry"][0]["changes"][0]["value"]["statuses"]) == 3
    assert len(second["entry"][0]["changes"][0]["value"]["statuses"]) == 3


async def test_realistic_duplicates_resend_the_exact_same_bytes(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "profile": "polite",
                "habits": {"duplicates": True, "duplicate_probability": 1.0},
            }
        },
    )
    await sim.inbound(A1_NUMBER, UK_USER)
    await wait_for(lambda: receiver.posts)
    await sim.advance(5.0)
    await wait_for(lambda: len(receiver.posts) == 2, what="duplicate")
    assert receiver.posts[0][1] == receiver.posts[1][1]
    assert (
        receiver.posts[0][0]["X-Hub-Signature-256"] == receiver.posts[1][0]["X-Hub-Signature-256"]
    )
    assert sim.sim.dispatcher.log[-1]["duplicate_of"] == sim.sim.dispatcher.log[0]["delivery_id"]


async def test_realistic_out_of_order_delivers_delivered_before_sent(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "read_probability": 0.0,
                "habits": {"out_of_order": True, "out_of_order_probability": 1.0},
            }
        },
    )
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    wamid = body["messages"][0]["id"]
    await sim.advance(1.0)
    await wait_for(lambda: receiver.statuses_for(wamid))
    await sim.advance(1.0)
    await wait_for(lambda: len(receiver.statuses_for(wamid)) == 2)
    first, second = receiver.statuses_for(wamid)
    assert (first["status"], second["status"]) == ("delivered", "sent")
    assert int(first["timestamp"]) > int(second["timestamp"])  # timestamps still tell the truth
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["sends"][0]["final_status"] == "delivered"


async def test_realistic_skipped_delivered_read_carries_pricing(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {"webhooks": {"habits": {"skip_delivered": True, "skip_delivered_probability": 1.0}}},
    )
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    wamid = body["messages"][0]["id"]
    for _ in range(3):
        await sim.advance(1.0)
    await wait_for(lambda: len(receiver.statuses_for(wamid)) == 2)
    sent, read = receiver.statuses_for(wamid)
    assert (sent["status"], read["status"]) == ("sent", "read")
    assert read["pricing"]["type"] == "regular"
    _, sends = await sim.control("GET", "/_sim/sends")
    assert (
        sends["sends"][0]["final_status"] == "read"
        and sends["sends"][0]["pricing"]["billable"] is True
    )


async def test_realistic_sent_webhook_can_arrive_before_the_http_response(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {
            "webhooks": {
                "habits": {"sent_before_response": True, "sent_before_response_probability": 1.0}
            }
        },
    )
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    wamid = body["messages"][0]["id"]
    # No clock advance: the receiver already has the `sent` status when the response returns.
    assert [s["status"] for s in receiver.statuses_for(wamid)] == ["sent"]


async def test_realistic_batches_can_carry_statuses_of_unknown_messages(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(
        receiver,
        {"webhooks": {"habits": {"foreign_statuses": True, "foreign_status_probability": 1.0}}},
    )
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.advance(1.0)
    await wait_for(lambda: receiver.posts)
    ids = [s["id"] for s in receiver.statuses()]
    assert body["messages"][0]["id"] in ids
    assert any(i.startswith("wamid.") and i != body["messages"][0]["id"] for i in ids)


async def test_realistic_profile_switches_are_all_on(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, config = await sim.control("POST", "/_sim/webhooks/config", {"profile": "realistic"})
    assert status == 200
    habits = config["habits"]
    for switch in (
        "batching",
        "duplicates",
        "out_of_order",
        "skip_delivered",
        "sent_before_response",
        "retries",
        "foreign_statuses",
    ):
        assert habits[switch] is True, switch
    _, config = await sim.control("POST", "/_sim/webhooks/config", {"profile": "polite"})
    assert not any(config["habits"][s] for s in ("batching", "duplicates", "retries"))
    _, config = await sim.control(
        "POST", "/_sim/webhooks/config", {"habits": {"retries": True}, "delays": {"sent": 3}}
    )
    assert config["profile"] == "polite" and config["habits"]["retries"] is True
    assert config["delays"]["sent"] == 3


async def test_deliveries_do_not_block_the_send_path(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver, {"webhooks": {"timeout_seconds": 5.0}})
    receiver.hang_seconds = 3.0  # a receiver that takes 3 s per webhook
    for i in range(10):
        await sim.send_template(A1_NUMBER, f"+44770090020{i}", "summer_sale", SALE)
    await sim.advance(1.0)
    await wait_for(lambda: sim.sim.dispatcher.in_flight == 10, what="deliveries in flight")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(10):
        status, _ = await sim.send_template(A1_NUMBER, f"+44770090030{i}", "summer_sale", SALE)
        assert status == 200
    assert loop.time() - started < 2.0  # each webhook POST takes 3 s


# -- verification handshake ------------------------------------------------------------------


async def test_verification_handshake_against_the_receiver(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    status, result = await sim.control("POST", "/_sim/webhooks/verify", {"challenge": "1158201444"})
    assert status == 200 and result["verified"] is True and result["status"] == 200
    assert receiver.verifications[-1] == {
        "hub.mode": "subscribe",
        "hub.verify_token": "metasim-verify-token",
        "hub.challenge": "1158201444",
    }
    _, result = await sim.control("POST", "/_sim/webhooks/verify", {"verify_token": "wrong"})
    assert result["verified"] is False and result["status"] == 403
    _, result = await sim.control(
        "POST", "/_sim/webhooks/verify", {"callback_url": "http://127.0.0.1:9/x"}
    )
    assert result["verified"] is False and result["status"] is None


async def test_real_clock_delivers_the_compressed_schedule(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    """Production runs on the system clock: 1 s simulated delays at time_scale 0.01 take 10 ms."""
    sim = await make_sim(receiver, {"time_scale": 0.01}, clock=SystemClock())
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    wamid = body["messages"][0]["id"]
    statuses = await wait_for(
        lambda: len(receiver.statuses_for(wamid)) == 3 and receiver.statuses_for(wamid),
        timeout=3.0,
        what="sent, delivered, read on the real clock",
    )
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
