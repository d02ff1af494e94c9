"""The processor writes a batch's documents together (one call per collection at the end of the
batch): a batch gives the same documents and the same events as its records handled one at a
time, including records that depend on an earlier one of the same batch (a tier after an
upgrade, a reinstate after a ban, a STOP then an older START, a redelivered message)."""

from __future__ import annotations

from typing import Any

import msgspec

from services.status import core
from services.status.processor import WebhookProcessor
from shared.clock import FakeClock
from shared.messages import WebhookReceived
from tests.unit.status.fakes import FakePublisher, FakeStore
from tests.unit.status.meta_examples import TEMPLATE_APPROVED, WABA_ID, status_item, status_webhook
from tests.unit.status.test_fields import account, change, message, messages_value, quality
from tests.unit.status.test_suppressions import preference, request

NUMBER_ID = "106540352242922"
T0 = 1_750_000_000
REF = core.MessageRef("msg_01", "acc_1", "GB")


def received(raw: bytes, at_s: int = T0) -> WebhookReceived:
    return WebhookReceived(
        event_id=core.webhook_event_id(WABA_ID, raw),
        received_at=at_s * 1000,
        payload=msgspec.Raw(raw),
    )


def text(wamid: str, body: str, at_s: int, sender: str = "16505551234") -> WebhookReceived:
    item = message(wamid, "text", at_s, text={"body": body})
    item["from"] = sender
    return received(
        messages_value(item, contacts=[{"profile": {"name": f"N{at_s}"}, "wa_id": sender}]), at_s
    )


def records() -> list[Any]:
    stopped = status_item(
        "wamid.M", "failed", T0 + 9, errors=[{"code": 131050, "title": "stopped"}]
    )
    return [
        text("wamid.in1", "hello", T0 + 1),
        text("wamid.in2", "STOP", T0 + 5),
        text("wamid.in1", "hello", T0 + 1),  # Meta's retry
        text("wamid.in3", "start", T0 + 2),  # older than the STOP: stale; its name is the last
        text("wamid.in4", "other contact", T0 + 3, sender="16505559999"),
        received(status_webhook(status_item("wamid.M", "delivered", T0 + 4))),
        received(status_webhook(status_item("wamid.unknown", "read", T0 + 4))),  # parked
        received(status_webhook(stopped)),
        preference("stop", T0 + 6),
        preference("resume", T0 + 4),  # older: stale
        request(False, (T0 + 20) * 1000),
        received(TEMPLATE_APPROVED),
        received(TEMPLATE_APPROVED),
        received(
            change(
                "message_template_quality_update",
                {
                    "previous_quality_score": "GREEN",
                    "new_quality_score": "YELLOW",
                    "message_template_id": 1689556908129832,
                    "message_template_name": "order_confirmation",
                    "message_template_language": "en-US",
                },
                time=T0 + 7,
            )
        ),
        received(quality("THROUGHPUT_UPGRADE", T0 + 100, current_limit="TIER_UNLIMITED")),
        received(quality("FLAGGED", T0 + 200, current_limit="TIER_10K")),
        received(account("DISABLED_UPDATE", T0 + 100, ban_info={"waba_ban_state": "DISABLE"})),
        received(account("DISABLED_UPDATE", T0 + 300, ban_info={"waba_ban_state": "REINSTATE"})),
    ]


def world() -> tuple[WebhookProcessor, FakeStore, FakePublisher]:
    store, publisher = FakeStore(), FakePublisher()
    store.phone_numbers[NUMBER_ID] = {
        "_id": NUMBER_ID,
        "account_id": "acc_1",
        "waba_id": WABA_ID,
        "display_phone_number": "15550783881",
        "throughput_mps": 80,
        "messaging_limit": "TIER_2K",
    }
    store.wamid_index["wamid.M"] = core.wamid_index_doc("wamid.M", REF)
    processor = WebhookProcessor(store, publisher, FakeClock(start_ms=(T0 + 1000) * 1000))
    return processor, store, publisher


def documents(store: FakeStore) -> dict[str, Any]:
    return {
        "inbound": store.inbound,
        "conversations": store.conversations,
        "templates": sorted(store.templates, key=lambda d: str(d["_id"])),
        "number_states": store.number_states,
        "user_preferences": store.user_preferences,
        "suppressions": store.suppressions,
        "parked": store.parked,
    }


async def test_one_batch_gives_the_documents_and_events_of_its_records_one_at_a_time() -> None:
    alone, alone_store, alone_published = world()
    for record in records():
        await alone.handle_events([record])
    together, batch_store, batch_published = world()
    await together.handle_events(records())

    assert documents(batch_store) == documents(alone_store)
    assert sorted(map(repr, batch_published.published)) == sorted(
        map(repr, alone_published.published)
    )
    # what the records did, so that the comparison is not between two empty worlds
    docs = documents(batch_store)
    assert len(docs["inbound"]) == 4 and len(docs["conversations"]) == 2
    assert docs["suppressions"][f"{NUMBER_ID}:16505551234"]["suppressed"] is False  # the request
    assert docs["number_states"][f"waba:{WABA_ID}"]["held"] is False
    assert docs["number_states"][NUMBER_ID]["messages_per_second"] == 1000
    assert docs["number_states"][NUMBER_ID]["messaging_limit"] == "TIER_10K"
    assert list(docs["parked"]) == ["wamid.unknown:read"]
    assert docs["templates"][0]["quality_score"] == "YELLOW"
    # one call per collection for the whole batch (number states: once more, read mid-batch)
    assert batch_store.batch_writes["store_inbound_many"] == 1
    assert batch_store.batch_writes["update_conversations"] == 1
    assert batch_store.batch_writes["apply_templates"] == 1
    assert batch_store.batch_writes["save_suppressions"] == 1
    assert batch_store.batch_writes["save_user_preferences"] == 1
    assert batch_store.batch_writes["park_statuses"] == 1
    assert batch_store.batch_writes["update_number_states"] <= 3
