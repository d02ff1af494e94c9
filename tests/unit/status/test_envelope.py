"""Splitting Meta's webhooks (the reference's §4.8 examples) into what the processor acts on."""

from __future__ import annotations

import json

import pytest

from services.status import core
from shared.errors import PermanentError
from shared.messages import MetaError, Pricing
from tests.unit.status.meta_examples import (
    BATCHED_STATUSES,
    INBOUND_TEXT,
    STATUS_SENT,
    TEMPLATE_APPROVED,
    THROUGHPUT_UPGRADE,
    WABA_ID,
    body,
    status_item,
    status_webhook,
)

RECEIVED_AT = 1_750_030_100_000


def test_a_batched_post_yields_every_status_with_its_own_phone_number() -> None:
    plan = core.plan_webhook(BATCHED_STATUSES, RECEIVED_AT)
    assert [(s.wamid, s.meta_status, s.phone_number_id) for s in plan.statuses] == [
        ("wamid.AAA", "delivered", "106540352242922"),
        ("wamid.BBB", "read", "106540352242922"),
        ("wamid.CCC", "failed", "106540352242923"),
    ]
    delivered, read, failed = plan.statuses
    assert delivered.occurred_at == 1_750_030_080_000
    assert delivered.waba_id == WABA_ID
    assert delivered.pricing == Pricing(
        billable=False, pricing_model="PMP", type="free_customer_service", category="utility"
    )
    assert read.pricing is None and read.error is None
    assert failed.error == MetaError(
        code=131047,
        title="Re-engagement message",
        details="Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number.",
    )
    assert plan.malformed_items == 0 and plan.inbound == []


def test_a_pre_v24_sent_status_with_conversation_keeps_its_pricing() -> None:
    [sent] = core.plan_webhook(STATUS_SENT, RECEIVED_AT).statuses
    assert sent.meta_status == "sent"
    assert sent.pricing == Pricing(
        billable=True, pricing_model="PMP", type="regular", category="marketing"
    )
    # The raw item is kept as sent (to park it) and parses back to the same status.
    assert core.parse_status_item(sent.raw, sent.waba_id, sent.phone_number_id) == sent


def test_an_inbound_text_yields_the_sender_time_and_content() -> None:
    plan = core.plan_webhook(INBOUND_TEXT, RECEIVED_AT)
    [message] = plan.inbound
    assert (
        message.wamid,
        message.waba_id,
        message.phone_number_id,
        message.wa_id,
        message.direction,
        message.message_type,
        message.sent_at,
        message.content,
        message.contact_name,
    ) == (
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        WABA_ID,
        "106540352242922",
        "16505551234",
        "inbound",
        "text",
        1_749_416_383_000,
        {"body": "Does it come in another color?"},
        "Sheena Nelson",
    )
    assert json.loads(message.raw)["text"] == {"body": "Does it come in another color?"}
    assert message.opens_window and message.window_expires_at == 1_749_416_383_000 + 86_400_000
    event = core.inbound_received(message, "acc_1", RECEIVED_AT)
    assert (event.event_id, event.account_id, event.contact_name, event.sender) == (
        message.wamid,
        "acc_1",
        "Sheena Nelson",
        "16505551234",
    )
    assert (
        core.conversation_id(message.phone_number_id, message.wa_id)
        == "106540352242922:16505551234"
    )


def test_a_template_approval_is_normalised_to_the_send_language_form() -> None:
    plan = core.plan_webhook(TEMPLATE_APPROVED, RECEIVED_AT)
    [update] = plan.template_updates
    assert update == core.TemplateUpdate(
        kind="status",
        waba_id=WABA_ID,
        template_id="1689556908129832",
        name="order_confirmation",
        language="en_US",
        event="APPROVED",
        reason="NONE",
        category="UTILITY",
        occurred_at=1_751_247_548_000,
    )
    event = core.template_status_changed(update)
    assert event.event_id == "1689556908129832:APPROVED:1751247548"
    assert (event.status, event.language) == ("APPROVED", "en_US")


def test_a_throughput_upgrade_becomes_1000_messages_per_second_for_the_number() -> None:
    plan = core.plan_webhook(THROUGHPUT_UPGRADE, RECEIVED_AT)
    [upgrade] = plan.number_updates
    assert upgrade.display_phone_number == "15550783881"
    assert upgrade.throughput_upgrade and upgrade.messaging_limit == "TIER_UNLIMITED"
    assert core.display_number_variants(upgrade.display_phone_number) == [
        "15550783881",
        "+15550783881",
    ]
    number = core.NumberRef("106540352242922", "acc_1", WABA_ID, 80, "TIER_2K")
    pacing = core.next_pacing(
        core.pacing_of(None, number), 1000, upgrade.messaging_limit, upgrade.occurred_at
    )
    assert pacing is not None
    event = core.throughput_changed(number, pacing, upgrade.event, upgrade.occurred_at)
    assert (event.phone_number_id, event.messages_per_second, event.messaging_limit) == (
        "106540352242922",
        1000,
        "TIER_UNLIMITED",
    )
    assert event.event_id == "106540352242922:THROUGHPUT_UPGRADE:1748454394"
    assert event.occurred_at == 1_748_454_394_000


def test_unknown_fields_and_enum_values_are_data_not_errors() -> None:
    payload = json.loads(BATCHED_STATUSES)
    payload["brand_new_top_level"] = {"x": 1}
    change = payload["entry"][0]["changes"][0]
    change["value"]["contacts"] = [{"wa_id": "16505551234", "user_id": "BSUID.1"}]
    first = change["value"]["statuses"][0]
    first.update(recipient_participant_user_id="u1", status="delivered")
    first["pricing"].update(category="general_purpose_ai", type="some_new_type", extra=True)
    change["value"]["statuses"].append(status_item("wamid.DDD", "played", 1750030099))
    change["value"]["statuses"].append(status_item("wamid.EEE", "teleported", 1750030099))
    payload["entry"][0]["changes"].append(
        {"field": "account_update", "value": {"event": "PARTNER_ADDED"}}
    )
    payload["entry"][0]["changes"].append(
        {
            "field": "phone_number_quality_update",
            "value": {"display_phone_number": "1", "event": "FLAGGED", "current_limit": "TIER_1K"},
        }
    )
    plan = core.plan_webhook(body(payload), RECEIVED_AT)
    assert [s.meta_status for s in plan.statuses] == [
        "delivered",
        "read",
        "played",
        "teleported",
        "failed",
    ]
    assert plan.statuses[0].pricing == Pricing(
        billable=False, pricing_model="PMP", type="some_new_type", category="general_purpose_ai"
    )
    assert plan.ignored_fields == []
    [account] = plan.account_updates
    assert (account.event, account.waba_id) == ("PARTNER_ADDED", WABA_ID)
    [tier] = plan.number_updates
    assert (tier.event, tier.messaging_limit, tier.throughput_upgrade) == (
        "FLAGGED",
        "TIER_1K",
        False,
    )
    assert plan.malformed_items == 0
    assert [core.message_status_of(s.meta_status) for s in plan.statuses] == [
        "delivered",
        "read",
        None,
        None,
        "failed",
    ]
    assert core.status_metric_label("teleported") == "other"
    assert core.field_metric_label("brand_new_field") == "other"


def test_one_unreadable_item_or_change_does_not_cost_the_others() -> None:
    raw = status_webhook(
        status_item("wamid.OK1", "sent", 1750030000),
        {"id": "wamid.BAD", "status": "sent", "timestamp": "not-a-number"},
        {"status": "delivered"},  # no wamid
        status_item("wamid.OK2", "delivered", 1750030001),
    )
    payload = json.loads(raw)
    payload["entry"][0]["changes"].append({"field": "messages", "value": "not an object"})
    payload["entry"][0]["changes"].append(
        {
            "field": "messages",
            "value": {
                "metadata": {"phone_number_id": "1"},
                "messages": [
                    {"id": "wamid.IN"},
                    {
                        "from": "1",
                        "id": "wamid.IN2",
                        "timestamp": "5",
                        "type": "sticker",
                        "sticker": {"id": "m"},
                    },
                ],
            },
        }
    )
    plan = core.plan_webhook(body(payload), RECEIVED_AT)
    assert [s.wamid for s in plan.statuses] == ["wamid.OK1", "wamid.OK2"]
    assert [m.wamid for m in plan.inbound] == ["wamid.IN2"]
    assert plan.inbound[0].content == {"id": "m"}
    assert plan.malformed_items == 4


def test_pricing_without_billable_or_type_is_completed_and_categories_use_underscores() -> None:
    raw = status_webhook(
        status_item(
            "wamid.1",
            "delivered",
            1,
            pricing={"type": "regular", "category": "authentication-international"},
        ),
        status_item(
            "wamid.2",
            "delivered",
            1,
            pricing={"billable": False, "pricing_model": "CBP", "category": "service"},
        ),
    )
    first, second = core.plan_webhook(raw, RECEIVED_AT).statuses
    assert first.pricing == Pricing(
        billable=True, pricing_model="PMP", type="regular", category="authentication_international"
    )
    assert second.pricing == Pricing(
        billable=False, pricing_model="CBP", type="free_customer_service", category="service"
    )


def test_template_updates_without_entry_time_use_the_receive_time() -> None:
    raw = body(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "field": "message_template_status_update",
                            "value": {
                                "event": "PAUSED",
                                "message_template_id": "77",
                                "message_template_name": "promo",
                                "message_template_language": "pt_BR",
                                "reason": None,
                                "other_info": {
                                    "title": "FIRST_PAUSE",
                                    "description": "low quality",
                                },
                            },
                        }
                    ],
                }
            ],
        }
    )
    [update] = core.plan_webhook(raw, RECEIVED_AT).template_updates
    assert (update.event, update.language, update.occurred_at, update.reason) == (
        "PAUSED",
        "pt_BR",
        RECEIVED_AT,
        None,
    )


@pytest.mark.parametrize("raw", [b"[]", b"nope", b'{"entry": 5}'])
def test_an_unreadable_envelope_is_a_permanent_error(raw: bytes) -> None:
    with pytest.raises(PermanentError):
        core.plan_webhook(raw, RECEIVED_AT)
