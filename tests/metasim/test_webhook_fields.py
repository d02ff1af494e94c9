"""Every other webhook field: envelopes, values, and what each does to the simulator's world."""

from __future__ import annotations

from typing import Any

import pytest

from tests.metasim.conftest import (
    A1_NUMBER,
    B1_NUMBER,
    UK_USER,
    WABA_A1,
    WABA_B1,
    MakeSim,
    Receiver,
    Sim,
    verify_signature,
    wait_for,
)
from tests.metasim.test_graph_sends import assert_meta_error

SALE = ["Sam", "20%"]


async def emitted(receiver: Receiver, field: str, count: int = 1) -> list[tuple[dict, dict]]:
    """(entry, change) of every delivered change of `field`, once `count` have arrived."""

    def found() -> list[tuple[dict, dict]] | None:
        out = []
        for headers, raw in receiver.posts:
            assert verify_signature(raw, headers["X-Hub-Signature-256"])
        for payload in receiver.payloads:
            assert payload["object"] == "whatsapp_business_account"
            for entry in payload["entry"]:
                out += [(entry, c) for c in entry["changes"] if c["field"] == field]
        return out if len(out) >= count else None

    return await wait_for(found, what=f"{count} {field} webhook(s)")


def account_level(entry: dict, waba_id: str, sim: Sim) -> None:
    """Account-level fields: entry id = WABA, an integer `time`, no metadata."""
    assert entry["id"] == waba_id
    assert entry["time"] == int(sim.clock.wall()) and isinstance(entry["time"], int)
    for change in entry["changes"]:
        assert "metadata" not in change["value"]


async def post(sim: Sim, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await sim.control("POST", path, body)
    assert status == 200, answer
    return answer


# -- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        "APPROVED",
        "ARCHIVED",
        "DELETED",
        "DISABLED",
        "FLAGGED",
        "IN_APPEAL",
        "LIMIT_EXCEEDED",
        "LOCKED",
        "PAUSED",
        "PENDING",
        "PENDING_DELETION",
        "REINSTATED",
        "REJECTED",
        "UNARCHIVED",
    ],
)
async def test_template_status_update_for_every_event(
    make_sim: MakeSim, receiver: Receiver, event: str
) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/message_template_status_update",
        {"template_id": "1689556908129804", "event": event},
    )
    [(entry, change)] = await emitted(receiver, "message_template_status_update")
    account_level(entry, WABA_A1, sim)
    value = change["value"]
    assert value["event"] == event and value["reason"] == "NONE"
    assert value["message_template_id"] == 1689556908129804  # an integer, as Meta sends it
    assert value["message_template_name"] == "summer_sale"
    assert value["message_template_language"] == "en-US"
    assert value["message_template_category"] == "MARKETING"
    assert ("other_info" in value) is (event in ("PAUSED", "DISABLED"))
    template = sim.sim.world.templates["1689556908129804"]
    assert template.status == (event if event != "UNARCHIVED" else "APPROVED")


async def test_template_status_reason_null_absent_and_unknown_template(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/message_template_status_update",
        {"template_id": "1689556908129804", "event": "PENDING_DELETION", "reason": None},
    )
    await post(
        sim,
        "/_sim/webhooks/message_template_status_update",
        {"template_id": "1689556908129804", "event": "APPROVED", "omit_reason": True},
    )
    answer = await post(
        sim,
        "/_sim/webhooks/message_template_status_update",
        {
            "waba_id": WABA_A1,
            "name": "made_in_whatsapp_manager",
            "language": "pt_BR",
            "template_id": "777000111222333",
            "event": "REJECTED",
            "reason": "INVALID_FORMAT",
            "category": "UTILITY",
            "rejection_info": {"reason": "Bad format", "recommendation": "Fix it"},
        },
    )
    assert answer["known"] is False
    changes = [c["value"] for _, c in await emitted(receiver, "message_template_status_update", 3)]
    assert "reason" in changes[0] and changes[0]["reason"] is None
    assert "reason" not in changes[1]
    assert changes[2] == {
        "event": "REJECTED",
        "message_template_id": 777000111222333,
        "message_template_name": "made_in_whatsapp_manager",
        "message_template_language": "pt-BR",
        "reason": "INVALID_FORMAT",
        "message_template_category": "UTILITY",
        "rejection_info": {"reason": "Bad format", "recommendation": "Fix it"},
    }
    assert ("made_in_whatsapp_manager", "pt_BR") not in sim.sim.world.wabas[WABA_A1].by_key


async def test_template_quality_update_changes_the_quality_score(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/message_template_quality_update",
        {
            "waba_id": WABA_A1,
            "name": "summer_sale",
            "language": "en_US",
            "new_quality_score": "RED",
        },
    )
    [(entry, change)] = await emitted(receiver, "message_template_quality_update")
    account_level(entry, WABA_A1, sim)
    assert change["value"] == {
        "previous_quality_score": "GREEN",
        "new_quality_score": "RED",
        "message_template_id": 1689556908129804,
        "message_template_name": "summer_sale",
        "message_template_language": "en-US",
    }
    status, body = await sim.graph("GET", "/v24.0/1689556908129804?fields=quality_score")
    assert status == 200 and body["quality_score"] == {"score": "RED"}
    # Meta's reference labels this payload message_template_status_update: reproducible.
    await post(
        sim,
        "/_sim/webhooks/message_template_quality_update",
        {
            "template_id": "1689556908129804",
            "new_quality_score": "YELLOW",
            "field": "message_template_status_update",
        },
    )
    [(_, trap)] = await emitted(receiver, "message_template_status_update")
    assert "event" not in trap["value"] and trap["value"]["new_quality_score"] == "YELLOW"


async def test_template_category_update_impending_then_completed(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    ref = {"waba_id": WABA_B1, "name": "appointment_reminder", "language": "en_US"}
    await post(
        sim,
        "/_sim/webhooks/template_category_update",
        {**ref, "new_category": "MARKETING", "impending": True},
    )
    assert sim.sim.world.templates["1689556908129901"].category == "UTILITY"
    await post(sim, "/_sim/webhooks/template_category_update", {**ref, "new_category": "MARKETING"})
    (entry, first), (_, second) = await emitted(receiver, "template_category_update", 2)
    account_level(entry, WABA_B1, sim)
    assert first["value"] == {
        "message_template_id": 1689556908129901,
        "message_template_name": "appointment_reminder",
        "message_template_language": "en-US",
        "correct_category": "MARKETING",
        "new_category": "UTILITY",
        "category_update_timestamp": int(sim.clock.wall()) + 86_400,
    }
    assert second["value"]["previous_category"] == "UTILITY"
    assert second["value"]["new_category"] == "MARKETING"
    # The new category prices later sends.
    status, _ = await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", ["Mon", "9"])
    assert status == 200
    _, sends = await sim.control("GET", "/_sim/sends")
    assert sends["sends"][-1]["category"] == "marketing"


# -- phone numbers --------------------------------------------------------------------------


async def test_tier_change_is_sent_and_applied(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/phone_number_quality_update",
        {"phone_number_id": B1_NUMBER, "tier": "TIER_50"},
    )
    [(entry, change)] = await emitted(receiver, "phone_number_quality_update")
    account_level(entry, WABA_B1, sim)
    assert change["value"] == {
        "display_phone_number": "15550002001",
        "event": "DOWNGRADE",
        "current_limit": "TIER_50",
        "old_limit": "TIER_2K",
        "max_daily_conversations_per_business": "TIER_50",
    }
    _, number = await sim.graph(
        "GET", f"/v24.0/{B1_NUMBER}?fields=whatsapp_business_manager_messaging_limit"
    )
    assert number["whatsapp_business_manager_messaging_limit"] == "TIER_50"
    # The portfolio now admits 50 unique business-initiated recipients in 24 h.
    await post(sim, "/_sim/settings", {"limits_enabled": True})
    results = [
        (await sim.send_template(B1_NUMBER, f"+4477009{i:05d}", "appointment_reminder", ["a", "b"]))
        for i in range(51)
    ]
    assert [status for status, _ in results[:50]] == [200] * 50
    assert_meta_error(*results[50], 131064, 400)


async def test_phone_number_name_update(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/phone_number_name_update",
        {"phone_number_id": A1_NUMBER, "decision": "APPROVED", "requested_verified_name": "Hala"},
    )
    await post(
        sim,
        "/_sim/webhooks/phone_number_name_update",
        {
            "phone_number_id": A1_NUMBER,
            "decision": "REJECTED",
            "requested_verified_name": "Best Shop Ever",
            "rejection_reason": "NAME_FORMAT_UNACCEPTABLE",
        },
    )
    (entry, approved), (_, rejected) = await emitted(receiver, "phone_number_name_update", 2)
    account_level(entry, WABA_A1, sim)
    assert approved["value"] == {
        "display_phone_number": "15550001001",
        "decision": "APPROVED",
        "requested_verified_name": "Hala",
        "rejection_reason": None,
    }
    assert rejected["value"]["rejection_reason"] == "NAME_FORMAT_UNACCEPTABLE"
    _, number = await sim.graph("GET", f"/v24.0/{A1_NUMBER}?fields=verified_name")
    assert number["verified_name"] == "Hala"


# -- account --------------------------------------------------------------------------------


async def test_disabled_waba_refuses_sends_until_reinstated(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    answer = await post(
        sim,
        "/_sim/webhooks/account_update",
        {"waba_id": WABA_A1, "event": "DISABLED_UPDATE", "ban_state": "DISABLE"},
    )
    assert answer["disabled"] is True
    [(entry, change)] = await emitted(receiver, "account_update")
    account_level(entry, WABA_A1, sim)
    assert change["value"]["event"] == "DISABLED_UPDATE"
    assert change["value"]["ban_info"]["waba_ban_state"] == "DISABLE"
    assert isinstance(change["value"]["ban_info"]["waba_ban_date"], str)
    status, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    assert_meta_error(status, body, 368, 403)
    # Other WABAs are unaffected.
    assert (await sim.send_template(B1_NUMBER, UK_USER, "appointment_reminder", ["a", "b"]))[
        0
    ] == 200
    await post(
        sim,
        "/_sim/webhooks/account_update",
        {"waba_id": WABA_A1, "event": "DISABLED_UPDATE", "ban_state": "REINSTATE"},
    )
    assert (await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE))[0] == 200


async def test_other_account_updates_carry_their_objects(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/account_update",
        {
            "waba_id": WABA_A1,
            "event": "ACCOUNT_VIOLATION",
            "extra": {"violation_info": {"violation_type": "ADULT"}},
        },
    )
    [(_, change)] = await emitted(receiver, "account_update")
    assert change["value"] == {
        "event": "ACCOUNT_VIOLATION",
        "violation_info": {"violation_type": "ADULT"},
    }
    status, body = await sim.control(
        "POST", "/_sim/webhooks/account_update", {"waba_id": WABA_A1, "event": "DISABLED_UPDATE"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_request"


# -- users ----------------------------------------------------------------------------------


async def test_marketing_stop_makes_marketing_fail_with_131050_until_resume(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await post(
        sim,
        "/_sim/webhooks/user_preferences",
        {"phone_number_id": A1_NUMBER, "wa_id": UK_USER, "value": "stop", "name": "Sam"},
    )
    [(entry, change)] = await emitted(receiver, "user_preferences")
    assert entry["id"] == WABA_A1 and "time" not in entry  # a field with metadata
    assert change["value"] == {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001001", "phone_number_id": A1_NUMBER},
        "contacts": [{"profile": {"name": "Sam"}, "wa_id": "447700900123"}],
        "user_preferences": [
            {
                "wa_id": "447700900123",
                "detail": "User requested to stop marketing messages",
                "category": "marketing_messages",
                "value": "stop",
                "timestamp": int(sim.clock.wall()),
            }
        ],
    }

    async def outcome(name: str, params: list[str]) -> dict:
        status, body = await sim.send_template(A1_NUMBER, UK_USER, name, params)
        assert status == 200, body  # accepted: the refusal arrives by webhook
        wamid = body["messages"][0]["id"]
        await sim.advance(1.0)
        statuses = await wait_for(lambda: receiver.statuses_for(wamid), what="first status")
        return statuses[0]

    stopped = await outcome("summer_sale", SALE)
    assert stopped["status"] == "failed" and stopped["errors"][0]["code"] == 131050
    # Only marketing is stopped: a utility template still goes out.
    assert (await outcome("hello_world", []))["status"] == "sent"
    await post(
        sim,
        "/_sim/webhooks/user_preferences",
        {"phone_number_id": A1_NUMBER, "wa_id": UK_USER, "value": "resume"},
    )
    assert (await outcome("summer_sale", SALE))["status"] == "sent"


async def test_message_echoes(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    answer = await post(
        sim,
        "/_sim/webhooks/smb_message_echoes",
        {
            "phone_number_id": B1_NUMBER,
            "to": UK_USER,
            "message": {"type": "text", "text": {"body": "Sent from the app"}},
        },
    )
    [(entry, change)] = await emitted(receiver, "smb_message_echoes")
    assert entry["id"] == WABA_B1 and "time" not in entry
    assert change["value"] == {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550002001", "phone_number_id": B1_NUMBER},
        "message_echoes": [
            {
                "from": "15550002001",
                "to": "447700900123",
                "id": answer["wamid"],
                "timestamp": str(int(sim.clock.wall())),
                "type": "text",
                "text": {"body": "Sent from the app"},
            }
        ],
    }
    # An echo is not the user writing: no window opens.
    assert (await sim.send_text(B1_NUMBER, UK_USER))[0] == 400


async def test_generic_emit_sends_any_field_signed(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(receiver)
    value = {"decision": "APPROVED"}
    await post(
        sim,
        "/_sim/webhooks/emit",
        {"waba_id": WABA_A1, "field": "account_review_update", "value": value},
    )
    [(entry, change)] = await emitted(receiver, "account_review_update")
    account_level(entry, WABA_A1, sim)
    assert change == {"value": value, "field": "account_review_update"}
    status, body = await sim.control(
        "POST", "/_sim/webhooks/emit", {"waba_id": WABA_A1, "field": "", "value": {}}
    )
    assert status == 400 and body["error"]["code"] == "invalid_request"


# -- statuses: free entry point -------------------------------------------------------------


async def test_free_entry_point_window_prices_and_carries_conversation(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await sim.inbound(
        A1_NUMBER,
        UK_USER,
        text="Hi, I saw your ad",
        referral={"source_type": "ad", "source_id": "1", "source_url": "https://fb.me/x"},
    )
    _, first = await sim.send_text(A1_NUMBER, UK_USER, "Welcome!")
    _, second = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.advance(1.0)
    wamids = [first["messages"][0]["id"], second["messages"][0]["id"]]
    await wait_for(lambda: all(receiver.statuses_for(w) for w in wamids), what="sent statuses")
    sent = [receiver.statuses_for(w)[0] for w in wamids]
    for status in sent:
        assert status["pricing"] == {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_entry_point",
            "category": "referral_conversion",
        }
        # v24+ omits `conversation` except inside a free-entry-point window: one id per window.
        assert status["conversation"]["origin"] == {"type": "referral_conversion"}
        assert status["conversation"]["expiration_timestamp"] == str(
            int(sim.clock.wall()) - 1 + 72 * 3600
        )
    assert sent[0]["conversation"]["id"] == sent[1]["conversation"]["id"]
    # After 72 h (and a fresh customer-service window) prices are normal again.
    await sim.advance(72 * 3600)
    await sim.inbound(A1_NUMBER, UK_USER)
    _, later = await sim.send_text(A1_NUMBER, UK_USER, "Hello again")
    await sim.advance(1.0)
    wamid = later["messages"][0]["id"]
    [status] = await wait_for(lambda: receiver.statuses_for(wamid), what="sent")
    assert status["pricing"]["type"] == "free_customer_service" and "conversation" not in status


async def test_referral_older_than_24h_opens_no_free_entry_point(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(receiver)
    await sim.inbound(A1_NUMBER, UK_USER, referral={"source_type": "ad"}, age_seconds=86_400)
    _, body = await sim.send_template(A1_NUMBER, UK_USER, "summer_sale", SALE)
    await sim.advance(1.0)
    wamid = body["messages"][0]["id"]
    [status] = await wait_for(lambda: receiver.statuses_for(wamid), what="sent")
    assert status["pricing"]["type"] == "regular" and "conversation" not in status
