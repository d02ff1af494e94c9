"""status's processor keeps the marketing suppression list: a user's whole-message STOP (in
the account's keywords) suppresses the contact for that number, START undoes it, Meta's
`user_preferences` stop/resume does the same, and so do clients' and operators' requests —
the latest fact wins whatever its source; sentences, echoes and unregistered numbers change
nothing."""

from __future__ import annotations

import msgspec

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import SuppressionChangeRequested, WebhookReceived
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.meta_examples import WABA_ID, body

NUMBER = "106540352242922"
USER = "16505551234"
T0 = 1_750_000_000  # seconds


def inbound(
    text: str,
    at: int,
    *,
    kind: str = "text",
    field: str = "messages",
    key: str = "messages",
    wamid: str | None = None,
) -> WebhookReceived:
    item: dict[str, object] = {
        "from": USER,
        "id": wamid or f"wamid.{at}.{text!r}",
        "timestamp": str(at),
        "type": kind,
    }
    if kind == "text":
        item["text"] = {"body": text}
    else:
        item["button"] = {"text": text, "payload": "p"}
    if key == "message_echoes":
        item = {**item, "from": "15550783881", "to": USER}
    payload = body(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "field": field,
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": NUMBER,
                                },
                                key: [item],
                            },
                        }
                    ],
                }
            ],
        }
    )
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=at * 1000 + 500,
        payload=msgspec.Raw(payload),
    )


def preference(value: str, at: int, category: str = "marketing_messages") -> WebhookReceived:
    payload = body(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "field": "user_preferences",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": NUMBER,
                                },
                                "user_preferences": [
                                    {
                                        "wa_id": USER,
                                        "detail": f"User asked to {value}",
                                        "category": category,
                                        "value": value,
                                        "timestamp": at,
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, payload),
        received_at=at * 1000 + 500,
        payload=msgspec.Raw(payload),
    )


def request(suppressed: bool, at_ms: int, account: str = "acc_1") -> SuppressionChangeRequested:
    return SuppressionChangeRequested(
        event_id=f"supr_{at_ms}",
        account_id=account,
        waba_id=WABA_ID,
        phone_number_id=NUMBER,
        wa_id=USER,
        suppressed=suppressed,
        source="api",
        note="by phone",
        requested_at=at_ms,
    )


def setup(registered: bool = True) -> tuple[WebhookProcessor, FakeStore, FakeClock]:
    store = FakeStore()
    if registered:
        store.phone_numbers[NUMBER] = {"_id": NUMBER, "account_id": "acc_1", "waba_id": WABA_ID}
    clock = FakeClock(start_ms=T0 * 1000 + 10_000)
    return WebhookProcessor(store, FakePublisher(), clock), store, clock


def entry(store: FakeStore) -> dict[str, object]:
    return store.suppressions[f"{NUMBER}:{USER}"]


async def test_a_users_stop_suppresses_and_start_resubscribes_that_contact_on_that_number() -> None:
    processor, store, _ = setup()
    await processor.handle(inbound("STOP!", T0))
    doc = entry(store)
    assert (doc["suppressed"], doc["source"], doc["keyword"], doc["account_id"], doc["at"]) == (
        True,
        "keyword",
        "stop",
        "acc_1",
        T0 * 1000,
    )
    await processor.handle(inbound("start", T0 + 60))
    assert entry(store)["suppressed"] is False
    # the inbound message itself is still stored and still reaches the client
    assert len(store.inbound) == 2


async def test_keywords_in_other_languages_and_quick_reply_buttons_count() -> None:
    processor, store, _ = setup()
    await processor.handle(inbound("إلغاء", T0))
    assert entry(store)["suppressed"] is True
    await processor.handle(inbound("Reprendre", T0 + 1, kind="button"))
    assert entry(store)["suppressed"] is False


async def test_sentences_echoes_and_unregistered_numbers_change_nothing() -> None:
    processor, store, _ = setup()
    await processor.handle(inbound("don't stop the deals", T0))
    await processor.handle(
        inbound("STOP", T0 + 1, field="smb_message_echoes", key="message_echoes")
    )
    assert store.suppressions == {}
    assert [d["direction"] for d in store.inbound.values()] == ["inbound", "echo"]
    unregistered, store2, _ = setup(registered=False)
    await unregistered.handle(inbound("STOP", T0))
    assert store2.suppressions == {} and len(store2.inbound) == 1


async def test_the_accounts_own_keywords_replace_the_defaults_and_are_cached() -> None:
    processor, store, clock = setup()
    store.keyword_configs["acc_1"] = {"_id": "acc_1", "opt_out": ["HALT"], "opt_in": None}
    await processor.handle(inbound("STOP", T0))
    assert store.suppressions == {}
    await processor.handle(inbound("halt", T0 + 1))
    assert entry(store)["suppressed"] is True
    assert store.keyword_reads == 1  # one read for both messages
    store.keyword_configs["acc_1"] = {"_id": "acc_1", "opt_out": None, "opt_in": ["GO ON"]}
    clock.advance(11)  # past the cache
    await processor.handle(inbound("go on", T0 + 2))
    assert entry(store)["suppressed"] is False and store.keyword_reads == 2


async def test_metas_user_preferences_stop_and_resume_change_the_marketing_list() -> None:
    processor, store, _ = setup()
    await processor.handle(preference("stop", T0))
    doc = entry(store)
    assert (doc["suppressed"], doc["source"], doc["detail"]) == (
        True,
        "user_preferences",
        "User asked to stop",
    )
    await processor.handle(preference("resume", T0 + 5))
    assert entry(store)["suppressed"] is False
    # another category, or a value that is not stop/resume, is only recorded as a preference
    await processor.handle(preference("stop", T0 + 10, category="other_messages"))
    await processor.handle(preference("signup", T0 + 11))
    assert entry(store)["suppressed"] is False
    assert len(store.user_preferences) == 2


async def test_the_latest_fact_wins_whatever_its_source_and_arrival_order() -> None:
    processor, store, _ = setup()
    await processor.handle(inbound("STOP", T0 + 100))
    await processor.handle(preference("resume", T0 + 50))  # older, arrives later
    assert entry(store)["suppressed"] is True
    await processor.handle_suppression_request(request(False, (T0 + 200) * 1000))
    doc = entry(store)
    assert (doc["suppressed"], doc["source"], doc["detail"]) == (False, "api", "by phone")
    await processor.handle(inbound("STOP", T0 + 150))  # redelivered late: older than the API
    assert entry(store)["suppressed"] is False


async def test_a_request_for_a_number_of_another_account_is_ignored() -> None:
    processor, store, _ = setup()
    await processor.handle_suppression_request(request(True, T0 * 1000, account="acc_2"))
    assert store.suppressions == {}


async def test_metas_131050_on_a_marketing_template_suppresses_the_contact() -> None:
    from tests.unit.status.meta_examples import status_item, status_webhook

    processor, store, _ = setup()
    store.wamid_index["wamid.M1"] = core.wamid_index_doc(
        "wamid.M1", core.MessageRef("msg_1", "acc_1", "US")
    )
    failed = status_item(
        "wamid.M1",
        "failed",
        T0,
        errors=[
            {
                "code": 131050,
                "title": "Unable to deliver the message. This recipient has chosen to "
                "stop receiving marketing messages on WhatsApp from your "
                "business.",
            }
        ],
    )
    failed["recipient_id"] = USER
    payload = status_webhook(failed, phone_number_id=NUMBER)
    await processor.handle(
        WebhookReceived(
            event_id=core.webhook_event_id(WABA_ID, payload),
            received_at=T0 * 1000,
            payload=msgspec.Raw(payload),
        )
    )
    doc = entry(store)
    assert (doc["suppressed"], doc["source"], doc["account_id"], doc["at"]) == (
        True,
        "meta",
        "acc_1",
        T0 * 1000,
    )
    # another failure code, or an unresolved status, suppresses nobody
    other, store2, _ = setup()
    payload = status_webhook(
        {**failed, "errors": [{"code": 131026, "title": "x"}]}, phone_number_id=NUMBER
    )
    await other.handle(
        WebhookReceived(
            event_id=core.webhook_event_id(WABA_ID, payload),
            received_at=T0 * 1000,
            payload=msgspec.Raw(payload),
        )
    )
    assert store2.suppressions == {}
