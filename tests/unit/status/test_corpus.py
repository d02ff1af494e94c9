"""Every real webhook of the corpus (tests/corpus/webhooks/SOURCES.md) is planned whole: nothing
malformed, every item of every kind found, and the processor handles each without an error."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import INBOUND_RECEIVED, WebhookReceived
from tests.corpus.webhooks import corpus_files, expected_counts, load
from tests.unit.status.fakes import FakePublisher, FakeStore

RECEIVED_AT = 1_764_000_000_000
FILES = corpus_files()


def test_the_corpus_is_large_and_every_file_has_a_source() -> None:
    assert len(FILES) >= 40
    sources = (FILES[0].parent / "SOURCES.md").read_text()
    assert all(f"`{path.name}`" in sources for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_real_webhook_is_planned_whole(path: Path) -> None:
    raw, payload = load(path)
    plan = core.plan_webhook(raw, RECEIVED_AT)
    counts = {kind: n for kind, n in plan.counts().items() if n}
    assert plan.malformed_items == 0
    assert counts == {kind: n for kind, n in expected_counts(payload).items() if n}


def test_the_corpus_covers_every_field_and_inbound_type_meta_documents() -> None:
    fields: set[str] = set()
    inbound_types: set[str] = set()
    statuses: set[str] = set()
    for path in FILES:
        plan = core.plan_webhook(load(path)[0], RECEIVED_AT)
        fields.update(plan.ignored_fields)
        fields.update(f"template:{u.kind}" for u in plan.template_updates)
        fields.update(u.field for u in plan.number_updates)
        fields.update(f.field for f in plan.waba_facts)
        fields.update("account_update" for _ in plan.account_updates)
        fields.update("user_preferences" for _ in plan.user_preferences)
        fields.update("value_errors" for _ in plan.value_errors)
        inbound_types.update(f"{m.direction}:{m.message_type}" for m in plan.inbound)
        statuses.update(s.meta_status for s in plan.statuses)
    assert {
        "template:status",
        "template:quality",
        "template:category",
        "template:components",
        "phone_number_quality_update",
        "phone_number_name_update",
        "account_update",
        "account_review_update",
        "account_alerts",
        "security",
        "business_capability_update",
        "user_preferences",
        "value_errors",
        "flows",
        "history",
        "smb_app_state_sync",
        "partner_solutions",
        "payment_configuration_update",
        "automatic_events",
        "calls",
    } <= fields
    assert {
        f"inbound:{t}"
        for t in (
            "text",
            "image",
            "video",
            "audio",
            "document",
            "sticker",
            "location",
            "contacts",
            "interactive",
            "button",
            "reaction",
            "order",
            "system",
            "unsupported",
            "request_welcome",
            "edit",
            "revoke",
        )
    } <= inbound_types
    assert "echo:text" in inbound_types
    assert {"sent", "delivered", "read", "failed", "played"} <= statuses


def _only_inbound(name: str) -> core.InboundMessage:
    [message] = core.plan_webhook((FILES[0].parent / name).read_bytes(), RECEIVED_AT).inbound
    return message


def test_inbound_details_are_read_from_real_payloads() -> None:
    image = _only_inbound("meta--webhooks-reference-messages-image--example.json")
    assert image.media_id and image.media_id == image.content["id"]
    assert image.contact_name and image.opens_window

    reaction = _only_inbound("pywa--message--reaction.json")
    assert reaction.context_wamid == reaction.content["message_id"]
    assert not reaction.opens_window

    reply = _only_inbound("pywa--callback-button--button.json")
    assert reply.context_wamid and reply.message_type == "interactive"

    bsuid = _only_inbound("meta--business-scoped-user-ids--incoming-messages-webhooks.json")
    item = json.loads(bsuid.raw)
    assert item["from"] == "" and bsuid.wa_id == item["from_user_id"] == bsuid.user_id

    ad = _only_inbound("meta--webhooks-reference-messages-text--click-to-whatsapp-ad.json")
    assert ad.referral is not None and ad.referral["source_type"] == "ad"

    echo = _only_inbound("meta--webhooks-reference-smb-message-echoes--example.json")
    assert (echo.direction, echo.wa_id, echo.opens_window) == ("echo", "16505551234", False)

    system = _only_inbound("pywa--system--phone-number-change.json")
    assert system.message_type == "system" and not system.opens_window

    welcome = _only_inbound("derived--request-welcome.json")
    assert welcome.opens_window


async def test_the_processor_handles_every_real_webhook() -> None:
    store, publisher = FakeStore(), FakePublisher()
    processor = WebhookProcessor(store, publisher, FakeClock(start_ms=RECEIVED_AT))
    inbound_wamids: set[str] = set()
    for path in FILES:
        raw, _ = load(path)
        plan = core.plan_webhook(raw, RECEIVED_AT)
        inbound_wamids.update(m.wamid for m in plan.inbound)
        await processor.handle(
            WebhookReceived(
                event_id=core.webhook_event_id("w", raw),
                received_at=RECEIVED_AT,
                payload=msgspec.Raw(raw),
            )
        )
    assert set(store.inbound) == inbound_wamids
    published = {e.wamid for e in publisher.events(INBOUND_RECEIVED)}
    assert published == {w for w, d in store.inbound.items() if d["direction"] == "inbound"}
