"""A template status update for a template we never synced is a normal event (templates are
created in WhatsApp Manager all the time). It used to raise TypeError in the processor's log call
(`event=` collides with structlog's own positional `event`), which stopped the status service on
every restart."""

from __future__ import annotations

import msgspec
import structlog

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import TEMPLATE_STATUS_CHANGED, WebhookReceived
from tests.unit.status.fakes import FakePublisher, FakeStore

WABA_ID = "102290129340398"
UNKNOWN_TEMPLATE_APPROVED = b"""{ "object": "whatsapp_business_account", "entry": [{
    "id": "102290129340398", "time": 1751247548, "changes": [{
      "field": "message_template_status_update", "value": {
        "event": "APPROVED", "message_template_id": 9988776655443322,
        "message_template_name": "created_in_whatsapp_manager",
        "message_template_language": "en_US", "reason": null } }] }] }"""


async def test_an_update_for_a_template_we_do_not_know_is_processed_and_logged() -> None:
    store, publisher = FakeStore(), FakePublisher()
    processor = WebhookProcessor(store, publisher, FakeClock(start_ms=1_751_247_600_000))
    event = WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, UNKNOWN_TEMPLATE_APPROVED),
        received_at=1_751_247_549_000,
        payload=msgspec.Raw(UNKNOWN_TEMPLATE_APPROVED),
    )

    with structlog.testing.capture_logs() as lines:
        await processor.handle(event)

    # The template is recorded with what the webhook says (its shape is learnt at the next sync).
    [stored] = store.templates
    assert (stored["name"], stored["status"], stored["shape_known"]) == (
        "created_in_whatsapp_manager",
        "APPROVED",
        False,
    )
    assert [line["outcome"] for line in lines if line["event"] == "webhook_processed"] == [
        "processed"
    ]
    published = [e for topic, e in publisher.published if topic is TEMPLATE_STATUS_CHANGED]
    assert [e.name for e in published] == ["created_in_whatsapp_manager"]
