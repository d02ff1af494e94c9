"""What the processor does with each webhook field besides statuses, with an in-memory store:
inbound messages and echoes, templates we know and do not know, tier and throughput, WABA holds,
WABA facts, user preferences."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import (
    INBOUND_RECEIVED,
    NUMBER_QUALITY_CHANGED,
    TEMPLATE_STATUS_CHANGED,
    THROUGHPUT_CHANGED,
    WABA_STATUS_CHANGED,
    WebhookReceived,
)
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.meta_examples import WABA_ID, body

NUMBER_ID = "106540352242922"
DISPLAY = "15550783881"
RECEIVED_AT = 1_750_000_000_000


def change(
    field: str, value: dict[str, Any], time: int | None = 1_750_000_000, waba_id: str = WABA_ID
) -> bytes:
    entry: dict[str, Any] = {"id": waba_id, "changes": [{"field": field, "value": value}]}
    if time is not None:
        entry["time"] = time
    return body({"object": "whatsapp_business_account", "entry": [entry]})


def messages_value(
    *messages: dict[str, Any],
    field: str = "messages",
    key: str = "messages",
    contacts: list[dict[str, Any]] | None = None,
) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY, "phone_number_id": NUMBER_ID},
        key: list(messages),
    }
    if contacts is not None:
        value["contacts"] = contacts
    return change(field, value, time=None)


def message(wamid: str, type_: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"from": "16505551234", "id": wamid, "timestamp": str(ts), "type": type_, **extra}


@pytest.fixture
def store() -> FakeStore:
    store = FakeStore()
    store.phone_numbers[NUMBER_ID] = {
        "_id": NUMBER_ID,
        "account_id": "acc_1",
        "waba_id": WABA_ID,
        "display_phone_number": DISPLAY,
        "throughput_mps": 80,
        "messaging_limit": "TIER_2K",
    }
    return store


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def processor(store: FakeStore, publisher: FakePublisher) -> WebhookProcessor:
    return WebhookProcessor(store, publisher, FakeClock(start_ms=RECEIVED_AT + 500))


async def handle(processor: WebhookProcessor, raw: bytes) -> None:
    await processor.handle(
        WebhookReceived(
            event_id=core.webhook_event_id(WABA_ID, raw),
            received_at=RECEIVED_AT,
            payload=msgspec.Raw(raw),
        )
    )


# --- inbound messages ---------------------------------------------------------------------------


async def test_an_inbound_message_is_stored_with_its_content_and_opens_the_window(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    raw = messages_value(
        message(
            "wamid.IMG",
            "image",
            1_750_000_100,
            image={"id": "media.1", "mime_type": "image/jpeg", "caption": "this one"},
            context={"from": DISPLAY, "id": "wamid.OUT"},
        ),
        contacts=[{"profile": {"name": "Sheena"}, "wa_id": "16505551234"}],
    )
    await handle(processor, raw)
    await handle(processor, raw)  # a redelivery stores nothing twice

    doc = store.inbound["wamid.IMG"]
    assert {
        k: doc[k]
        for k in (
            "account_id",
            "wa_id",
            "direction",
            "type",
            "media_id",
            "context_wamid",
            "contact_name",
            "sent_at",
            "received_at",
        )
    } == {
        "account_id": "acc_1",
        "wa_id": "16505551234",
        "direction": "inbound",
        "type": "image",
        "media_id": "media.1",
        "context_wamid": "wamid.OUT",
        "contact_name": "Sheena",
        "sent_at": 1_750_000_100_000,
        "received_at": RECEIVED_AT,
    }
    assert msgspec.json.decode(doc["content"])["image"]["caption"] == "this one"
    conversation = store.conversations[f"{NUMBER_ID}:16505551234"]
    assert (
        conversation["last_inbound_at"],
        conversation["window_expires_at"],
        conversation["account_id"],
        conversation["contact_name"],
    ) == (1_750_000_100_000, 1_750_000_100_000 + 86_400_000, "acc_1", "Sheena")
    event = publisher.events(INBOUND_RECEIVED)[0]
    assert (event.account_id, event.media_id, event.context_wamid, event.opens_window) == (
        "acc_1",
        "media.1",
        "wamid.OUT",
        True,
    )


async def test_reactions_system_notices_and_echoes_do_not_open_the_window(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await handle(
        processor,
        messages_value(
            message(
                "wamid.R",
                "reaction",
                1_750_000_200,
                reaction={"message_id": "wamid.OUT", "emoji": ""},
            ),
            message(
                "wamid.S",
                "system",
                1_750_000_300,
                system={"body": "changed", "type": "user_changed_number"},
            ),
        ),
    )
    await handle(
        processor,
        messages_value(
            {
                "from": DISPLAY,
                "to": "16505551234",
                "id": "wamid.E",
                "timestamp": "1750000400",
                "type": "text",
                "text": {"body": "sent from the app"},
            },
            field="smb_message_echoes",
            key="message_echoes",
        ),
    )

    conversation = store.conversations[f"{NUMBER_ID}:16505551234"]
    assert "last_inbound_at" not in conversation
    assert conversation["last_message_at"] == 1_750_000_400_000
    assert store.inbound["wamid.R"]["context_wamid"] == "wamid.OUT"
    assert store.inbound["wamid.E"]["direction"] == "echo"
    # users' messages are published (the sender counts them); the business's echo is not
    assert [e.wamid for e in publisher.events(INBOUND_RECEIVED)] == ["wamid.R", "wamid.S"]


async def test_a_late_inbound_message_never_rewinds_the_window(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    await handle(
        processor, messages_value(message("wamid.NEW", "text", 1_750_000_500, text={"body": "b"}))
    )
    await handle(
        processor, messages_value(message("wamid.OLD", "text", 1_750_000_100, text={"body": "a"}))
    )
    conversation = store.conversations[f"{NUMBER_ID}:16505551234"]
    assert conversation["last_inbound_at"] == 1_750_000_500_000


async def test_an_inbound_message_for_a_number_we_do_not_know_is_kept_without_account(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    del store.phone_numbers[NUMBER_ID]
    await handle(processor, messages_value(message("wamid.X", "text", 1, text={"body": "?"})))
    assert store.inbound["wamid.X"]["account_id"] is None


async def test_the_number_is_read_once_for_a_burst_of_messages(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    for i in range(5):
        await handle(
            processor, messages_value(message(f"wamid.{i}", "text", 1, text={"body": "x"}))
        )
    assert store.phone_number_reads == 1


# --- templates ------------------------------------------------------------------------------------


def template_value(**fields: Any) -> dict[str, Any]:
    return {
        "message_template_id": 77,
        "message_template_name": "promo",
        "message_template_language": "en-US",
        **fields,
    }


async def test_a_status_update_for_a_template_we_do_not_know_creates_a_minimal_one(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await handle(
        processor,
        change(
            "message_template_status_update",
            template_value(event="APPROVED", reason=None, message_template_category="MARKETING"),
        ),
    )
    [doc] = store.templates
    assert {
        k: doc[k]
        for k in ("_id", "shape_known", "status", "status_reason", "category", "template_id")
    } == {
        "_id": f"{WABA_ID}:promo:en_US",
        "shape_known": False,
        "status": "APPROVED",
        "status_reason": None,
        "category": "MARKETING",
        "template_id": "77",
    }
    [event] = publisher.events(TEMPLATE_STATUS_CHANGED)
    assert event.status == "APPROVED"


async def test_template_kinds_update_their_own_fields_and_never_rewind(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    store.templates.append(
        {
            "_id": f"{WABA_ID}:promo:en_US",
            "waba_id": WABA_ID,
            "template_id": "77",
            "name": "promo",
            "language": "en_US",
            "status": "APPROVED",
            "category": "MARKETING",
        }
    )
    # Meta's own quality example is labelled message_template_status_update (no event)
    await handle(
        processor,
        change(
            "message_template_status_update",
            template_value(previous_quality_score="GREEN", new_quality_score="YELLOW"),
            time=1_750_000_010,
        ),
    )
    await handle(
        processor,
        change(
            "template_category_update",
            template_value(
                new_category="MARKETING",
                correct_category="UTILITY",
                category_update_timestamp=1_750_086_400,
            ),
            time=1_750_000_020,
        ),
    )
    await handle(
        processor,
        change(
            "message_template_components_update",
            template_value(message_template_element="Hi {{1}}"),
            time=1_750_000_030,
        ),
    )
    await handle(
        processor,
        change(
            "message_template_status_update",
            template_value(event="PAUSED", reason="NONE"),
            time=1_750_000_050,
        ),
    )
    await handle(
        processor,
        change(
            "message_template_status_update",
            template_value(event="APPROVED", reason="NONE"),
            time=1_750_000_040,
        ),
    )  # late: ignored
    [doc] = store.templates
    assert (
        doc["quality_score"],
        doc["pending_category"],
        doc["pending_category_at"],
        doc["needs_sync"],
        doc["status"],
        doc["category"],
    ) == ("YELLOW", "UTILITY", 1_750_086_400_000, True, "PAUSED", "MARKETING")
    await handle(
        processor,
        change(
            "template_category_update",
            template_value(previous_category="MARKETING", new_category="UTILITY"),
            time=1_750_086_400,
        ),
    )
    assert (doc["category"], doc["pending_category"]) == ("UTILITY", None)


async def test_a_status_update_without_an_event_changes_nothing(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    await handle(processor, change("message_template_status_update", template_value()))
    assert store.templates == []


# --- tier and throughput ----------------------------------------------------------------------


def quality(event: str, time: int, **fields: Any) -> bytes:
    return change(
        "phone_number_quality_update",
        {"display_phone_number": DISPLAY, "event": event, **fields},
        time=time,
    )


async def test_a_tier_change_keeps_an_earlier_throughput_upgrade(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await handle(
        processor, quality("THROUGHPUT_UPGRADE", 1_750_000_100, current_limit="TIER_UNLIMITED")
    )
    await handle(processor, quality("FLAGGED", 1_750_000_200, current_limit="TIER_10K"))
    await handle(
        processor,
        quality(
            "ONBOARDING",
            1_750_000_000,
            current_limit="TIER_250",
            max_daily_conversations_per_business="TIER_2K",
        ),
    )  # late
    events = publisher.events(THROUGHPUT_CHANGED)
    assert [(e.messages_per_second, e.messaging_limit) for e in events] == [
        (1000, "TIER_UNLIMITED"),
        (1000, "TIER_10K"),
    ]
    assert events[-1].occurred_at == 1_750_000_200_000
    state = store.number_states[NUMBER_ID]
    assert (state["messages_per_second"], state["messaging_limit"], state["quality_event"]) == (
        1000,
        "TIER_10K",
        "ONBOARDING",
    )


async def test_a_tier_change_without_an_upgrade_keeps_the_registered_throughput(
    processor: WebhookProcessor, publisher: FakePublisher
) -> None:
    await handle(
        processor,
        quality(
            "ONBOARDING",
            1_750_000_000,
            current_limit="TIER_250",
            max_daily_conversations_per_business=2000,
        ),
    )
    [event] = publisher.events(THROUGHPUT_CHANGED)
    assert (event.phone_number_id, event.messages_per_second, event.messaging_limit) == (
        NUMBER_ID,
        80,
        "TIER_2K",
    )


async def test_every_quality_webhook_of_a_number_is_published_for_notify_once_per_event(
    processor: WebhookProcessor, publisher: FakePublisher
) -> None:
    flagged = quality("FLAGGED", 1_750_000_200, current_limit="TIER_10K")
    await handle(processor, flagged)
    await handle(processor, flagged)  # Meta's duplicate: the same event id
    await handle(processor, quality("THROUGHPUT_UPGRADE", 1_750_000_300))
    events = publisher.events(NUMBER_QUALITY_CHANGED)
    assert [
        (e.event_id, e.event, e.messaging_limit, e.messages_per_second, e.account_id)
        for e in events
    ] == [
        (f"{NUMBER_ID}:FLAGGED:1750000200", "FLAGGED", "TIER_10K", None, "acc_1"),
        (f"{NUMBER_ID}:FLAGGED:1750000200", "FLAGGED", "TIER_10K", None, "acc_1"),
        (f"{NUMBER_ID}:THROUGHPUT_UPGRADE:1750000300", "THROUGHPUT_UPGRADE", None, 1000, "acc_1"),
    ]


async def test_a_business_capability_change_repaces_every_number_of_the_waba(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    store.phone_numbers["2"] = {
        "_id": "2",
        "account_id": "acc_1",
        "waba_id": WABA_ID,
        "throughput_mps": 1000,
        "messaging_limit": "TIER_2K",
    }
    await handle(
        processor,
        change(
            "business_capability_update",
            {
                "max_daily_conversation_per_phone": 100000,
                "max_daily_conversations_per_business": 100000,
            },
        ),
    )
    events = {e.phone_number_id: e for e in publisher.events(THROUGHPUT_CHANGED)}
    assert {n: (e.messages_per_second, e.messaging_limit) for n, e in events.items()} == {
        NUMBER_ID: (80, "TIER_100K"),
        "2": (1000, "TIER_100K"),
    }
    assert store.number_states[f"waba:{WABA_ID}"]["messaging_limit"] == "TIER_100K"


async def test_a_name_decision_is_kept_for_the_number(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    await handle(
        processor,
        change(
            "phone_number_name_update",
            {
                "display_phone_number": DISPLAY,
                "decision": "REJECTED",
                "requested_verified_name": "Lucky Shrub",
                "rejection_reason": None,
            },
        ),
    )
    state = store.number_states[NUMBER_ID]
    assert (state["name_decision"], state["requested_verified_name"]) == ("REJECTED", "Lucky Shrub")


# --- WABA holds and facts ---------------------------------------------------------------------


def account(event: str, time: int, waba_id: str = WABA_ID, **value: Any) -> bytes:
    return change("account_update", {"event": event, **value}, time=time, waba_id=waba_id)


async def test_a_ban_holds_the_waba_and_reinstate_releases_it(
    processor: WebhookProcessor, store: FakeStore, publisher: FakePublisher
) -> None:
    await handle(
        processor, account("DISABLED_UPDATE", 1_750_000_100, ban_info={"waba_ban_state": "DISABLE"})
    )
    await handle(
        processor,
        account("DISABLED_UPDATE", 1_750_000_050, ban_info={"waba_ban_state": "REINSTATE"}),
    )  # older: stale
    await handle(
        processor,
        account(
            "DISABLED_UPDATE", 1_750_000_200, ban_info={"waba_ban_state": "SCHEDULE_FOR_DISABLE"}
        ),
    )
    await handle(
        processor,
        account("DISABLED_UPDATE", 1_750_000_300, ban_info={"waba_ban_state": "REINSTATE"}),
    )
    events = publisher.events(WABA_STATUS_CHANGED)
    assert [(e.waba_id, e.held, e.reasons) for e in events] == [
        (WABA_ID, True, ["banned"]),
        (WABA_ID, False, []),
    ]
    state = store.number_states[f"waba:{WABA_ID}"]
    assert state["held"] is False and state["ban_state"] == "REINSTATE"


async def test_partner_events_are_routed_by_the_waba_they_name(
    processor: WebhookProcessor, publisher: FakePublisher
) -> None:
    portfolio = "2949482758682047"
    await handle(
        processor,
        account(
            "PARTNER_APP_UNINSTALLED",
            1_750_000_100,
            waba_id=portfolio,
            waba_info={"waba_id": "184943124712545"},
        ),
    )
    await handle(processor, account("ACCOUNT_DELETED", 1_750_000_200, waba_id="184943124712545"))
    await handle(
        processor,
        account(
            "PARTNER_APP_INSTALLED",
            1_750_000_300,
            waba_id=portfolio,
            waba_info={"waba_id": "184943124712545"},
        ),
    )
    assert [(e.waba_id, e.held, e.reasons) for e in publisher.events(WABA_STATUS_CHANGED)] == [
        ("184943124712545", True, ["app_uninstalled"]),
        ("184943124712545", True, ["deleted", "app_uninstalled"]),
        ("184943124712545", True, ["deleted"]),
    ]


async def test_account_review_alerts_and_security_are_kept_for_the_waba(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    await handle(processor, change("account_review_update", {"decision": "APPROVED"}))
    await handle(
        processor,
        change(
            "account_alerts",
            {
                "entity_type": "WABA",
                "entity_id": "1",
                "alert_info": {
                    "alert_severity": "WARNING",
                    "alert_status": "ACTIVE",
                    "alert_type": "OBA_REJECTED",
                    "alert_description": "...",
                },
            },
        ),
    )
    await handle(
        processor, change("security", {"display_phone_number": DISPLAY, "event": "PIN_CHANGED"})
    )
    state = store.number_states[f"waba:{WABA_ID}"]
    assert (
        state["account_review_update"]["event"],
        state["account_alerts"]["event"],
        state["security"]["event"],
    ) == ("APPROVED", "OBA_REJECTED", "PIN_CHANGED")


# --- user preferences ----------------------------------------------------------------------------


def preference(value: str, ts: int) -> dict[str, Any]:
    return {
        "wa_id": "16505551234",
        "detail": f"User requested to {value}",
        "category": "marketing_messages",
        "value": value,
        "timestamp": ts,
    }


async def test_the_latest_user_preference_wins(
    processor: WebhookProcessor, store: FakeStore
) -> None:
    for pref in (preference("stop", 1_750_000_200), preference("resume", 1_750_000_100)):
        await handle(
            processor, messages_value(pref, field="user_preferences", key="user_preferences")
        )
    doc = store.user_preferences[f"{NUMBER_ID}:16505551234:marketing_messages"]
    assert (doc["value"], doc["at"], doc["account_id"]) == ("stop", 1_750_000_200_000, "acc_1")


# --- values at the edge -----------------------------------------------------------------------


@pytest.mark.parametrize("timestamp", ["99999999999999999999999", "-5", "1e9", "", "abc"])
def test_a_timestamp_that_is_not_a_time_makes_the_item_malformed(timestamp: str) -> None:
    plan = core.plan_webhook(
        messages_value(
            {"from": "1", "id": "wamid.1", "timestamp": timestamp, "type": "text"},
            {"from": "1", "id": "wamid.2", "timestamp": "5", "type": "text"},
        ),
        RECEIVED_AT,
    )
    assert [m.wamid for m in plan.inbound] == ["wamid.2"] and plan.malformed_items == 1


def test_an_entry_time_that_is_not_a_time_falls_back_to_the_receive_time() -> None:
    plan = core.plan_webhook(change("account_update", {"event": "X"}, time=10**30), RECEIVED_AT)
    assert plan.account_updates[0].occurred_at == RECEIVED_AT


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        ("TIER_2K", "TIER_2K"),
        ("tier_10k", "TIER_10K"),
        (2000, "TIER_2K"),
        (-1, "TIER_UNLIMITED"),
        ("2000", "TIER_2K"),
        (7, None),
        ("lots", None),
        (None, None),
        (True, None),
    ],
)
def test_messaging_limits_are_read_as_tier_names(value: Any, tier: str | None) -> None:
    assert core.messaging_tier(value) == tier
