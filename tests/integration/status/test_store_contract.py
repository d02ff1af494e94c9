"""The in-memory FakeStore used by unit tests behaves like the real repository on FerretDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.status import core
from services.status.batch_plan import TemplateOutcomes, TemplateWrite
from services.status.repository import StatusRepository
from shared.collections import (
    INBOUND_MESSAGES,
    MESSAGES,
    PARKED_STATUSES,
    PHONE_NUMBERS,
    TEMPLATES,
    USER_PREFERENCES,
    ensure_indexes,
)
from shared.mongo import make_client
from tests.unit.status.fakes import FakeStore

REF = core.MessageRef("msg_1", "acc_1", "GB")


class Seeds:
    """Writes the documents other services own, in the fake or in the database."""

    def __init__(self, store: Any, db: Any) -> None:
        self.store, self.db = store, db

    async def message(self, doc: dict[str, Any]) -> None:
        if self.db is None:
            self.store.messages[doc["_id"]] = dict(doc)
        else:
            await self.db["messages"].insert_one(dict(doc))

    async def template(self, doc: dict[str, Any]) -> None:
        if self.db is None:
            self.store.templates.append(dict(doc))
        else:
            await self.db["templates"].insert_one(dict(doc))

    async def phone_number(self, doc: dict[str, Any]) -> None:
        if self.db is None:
            self.store.phone_numbers[doc["_id"]] = dict(doc)
        else:
            await self.db["phone_numbers"].insert_one(dict(doc))


@pytest.fixture(params=["fake", "ferretdb"])
async def store_and_seeds(
    request: pytest.FixtureRequest, mongodb_url: str, unique: str
) -> AsyncIterator[tuple[Any, Seeds]]:
    if request.param == "fake":
        fake = FakeStore()
        yield fake, Seeds(fake, None)
        return
    mongo = make_client(mongodb_url)
    db = mongo[f"it_{unique}"]
    await ensure_indexes(
        db, MESSAGES, TEMPLATES, PARKED_STATUSES, INBOUND_MESSAGES, USER_PREFERENCES, PHONE_NUMBERS
    )
    try:
        yield StatusRepository(db), Seeds(None, db)
    finally:
        await mongo.drop_database(f"it_{unique}")
        await mongo.close()


async def test_the_wamid_index_keeps_its_first_entry(store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    assert await store.find_by_wamid("wamid.1") is None
    await store.index_wamid(core.wamid_index_doc("wamid.1", REF))
    await store.index_wamid(core.wamid_index_doc("wamid.1", core.MessageRef("msg_2", "acc_2")))
    assert await store.find_by_wamid("wamid.1") == REF


async def test_messages_are_found_by_id_only_with_an_account(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    store, seeds = store_and_seeds
    await seeds.message(
        {"_id": "msg_1", "account_id": "acc_1", "recipient_region": "GB", "idempotency_key": "k1"}
    )
    await seeds.message({"_id": "msg_odd", "idempotency_key": "k2"})
    await seeds.message(
        {"_id": "msg_sent", "account_id": "acc_1", "wamid": "wamid.S", "idempotency_key": "k3"}
    )
    assert await store.find_messages([]) == {}
    assert await store.find_messages(["msg_1", "msg_odd", "msg_none", "msg_sent"]) == {
        "msg_1": core.CallbackMessage(REF, ""),
        "msg_sent": core.CallbackMessage(core.MessageRef("msg_sent", "acc_1"), "wamid.S"),
    }


async def test_parking_is_idempotent_and_keeps_the_first_parked_time(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    store, _ = store_and_seeds
    doc = {
        "_id": "wamid.1:read",
        "wamid": "wamid.1",
        "status": "read",
        "raw": "{}",
        "waba_id": "w",
        "phone_number_id": "p",
        "parked_at": 100,
    }
    await store.park_status(doc)
    await store.park_status({**doc, "parked_at": 999})
    await store.park_status({**doc, "_id": "wamid.2:read", "wamid": "wamid.2"})
    parked = await store.parked_for("wamid.1")
    assert [(p["_id"], p["parked_at"]) for p in parked] == [("wamid.1:read", 100)]
    await store.delete_parked("wamid.1:read")
    await store.delete_parked("wamid.1:read")
    assert await store.parked_for("wamid.1") == []
    assert len(await store.parked_for("wamid.2")) == 1


async def test_saving_a_message_creates_a_minimal_document_only_when_missing(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    store, seeds = store_and_seeds
    state, doc = await store.load_message("msg_new")
    assert (state, doc) == (core.MessageState(), None)
    await store.save_message(
        "msg_new",
        {"status": "rejected", "history": []},
        {"account_id": "acc_1", "idempotency_key": "none:msg_new"},
    )
    await store.save_message(
        "msg_new2",
        {"status": "rejected", "history": []},
        {"account_id": "acc_1", "idempotency_key": "none:msg_new2"},
    )
    _, doc = await store.load_message("msg_new")
    assert doc is not None and doc["account_id"] == "acc_1"

    await seeds.message(
        {
            "_id": "msg_1",
            "account_id": "acc_1",
            "recipient": "+44",
            "idempotency_key": "k",
            "status": "accepted",
            "history": [],
        }
    )
    await store.save_message(
        "msg_1",
        {
            "status": "sent",
            "wamid": "wamid.1",
            "history": [{"status": "sent", "at": 1, "source": "sender"}],
        },
        {},
    )
    state, doc = await store.load_message("msg_1")
    assert doc is not None and doc["account_id"] == "acc_1"
    assert state.status == "sent" and state.wamid == "wamid.1"


async def test_an_inbound_message_is_stored_once(store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    doc = {
        "_id": "wamid.1",
        "account_id": "acc_1",
        "wa_id": "u",
        "content": "{}",
        "sent_at": 1,
        "received_at": 2,
    }
    assert await store.store_inbound(doc)
    assert not await store.store_inbound({**doc, "content": "other"})
    stored = await _read(store, "inbound_messages", "inbound", "wamid.1")
    assert stored["content"] == "{}"


async def test_the_conversation_only_moves_forward(store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds

    def update(at: int, name: str, window: bool = True) -> dict[str, Any]:
        latest = {"last_message_at": at, **({"last_inbound_at": at} if window else {})}
        return {
            "$max": latest,
            "$set": {"account_id": "acc_1", "contact_name": name},
            "$setOnInsert": {"phone_number_id": "p", "wa_id": "u"},
        }

    for at, name, window in (
        (200, "a", True),
        (100, "b", True),
        (300, "c", False),
        (250, "d", True),
    ):
        await store.update_conversation("p:u", update(at, name, window))
    doc = await _read(store, "conversations", "conversations", "p:u")
    assert (doc["last_inbound_at"], doc["last_message_at"], doc["wa_id"], doc["contact_name"]) == (
        250,
        300,
        "u",
        "d",
    )


async def test_template_updates_apply_create_and_never_rewind(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    store, seeds = store_and_seeds
    minimal = {
        "_id": "w:promo:en_US",
        "waba_id": "w",
        "template_id": "9",
        "name": "promo",
        "language": "en_US",
        "shape_known": False,
        "status": "APPROVED",
        "status_event_at": 10,
    }
    assert (
        await store.apply_template(
            "w:promo:en_US",
            "9",
            "w",
            {"status": "APPROVED", "status_event_at": 10},
            "status_event_at",
            10,
            minimal,
        )
        == "created"
    )
    assert (
        await store.apply_template(
            "w:promo:en_US",
            "9",
            "w",
            {"status": "PAUSED", "status_event_at": 5},
            "status_event_at",
            5,
            minimal,
        )
        == "stale"
    )
    assert (
        await store.apply_template(
            "w:promo:en_US",
            "9",
            "w",
            {"quality_score": "RED", "quality_event_at": 7},
            "quality_event_at",
            7,
            minimal,
        )
        == "applied"
    )
    # without a name, only a template we hold (by Meta's id) can be updated
    assert (
        await store.apply_template(
            "w::", "9", "w", {"needs_sync": True}, "components_event_at", 8, None
        )
        == "applied"
    )
    assert (
        await store.apply_template(
            "w::", "404", "w", {"needs_sync": True}, "components_event_at", 8, None
        )
        == "unknown"
    )
    await seeds.template(
        {
            "_id": "w:other:en_US",
            "waba_id": "w",
            "name": "other",
            "language": "en_US",
            "status": "PENDING",
        }
    )
    assert (
        await store.apply_template(
            "w:other:en_US",
            "",
            "w",
            {"status": "APPROVED", "status_event_at": 30},
            "status_event_at",
            30,
            {"_id": "w:other:en_US"},
        )
        == "applied"
    )
    doc = await _read(store, "templates", "templates", "w:promo:en_US")
    assert (doc["status"], doc["quality_score"], doc["needs_sync"], doc["shape_known"]) == (
        "APPROVED",
        "RED",
        True,
        False,
    )


async def test_phone_numbers_are_found_by_id_display_number_and_waba(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    store, seeds = store_and_seeds
    await seeds.phone_number(
        {
            "_id": "1065",
            "account_id": "acc_1",
            "waba_id": "w",
            "display_phone_number": "+1555",
            "throughput_mps": 1000,
            "messaging_limit": "TIER_10K",
        }
    )
    await seeds.phone_number({"_id": "1066", "waba_id": "w", "display_phone_number": "1556"})
    ref = core.NumberRef("1065", "acc_1", "w", 1000, "TIER_10K")
    assert await store.phone_number("1065") == ref
    assert await store.phone_number("404") is None
    assert await store.find_phone_number(core.display_number_variants("1555")) == ref
    assert await store.find_phone_number(core.display_number_variants("1999")) is None
    assert await store.find_phone_number([]) is None
    assert sorted(n.phone_number_id for n in await store.numbers_of_waba("w")) == ["1065", "1066"]


async def test_number_states_are_set_field_by_field(store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    assert await store.number_state("waba:w") is None
    await store.update_number_state(
        "waba:w", {"security.event": "PIN_CHANGED", "security.at": 1}, now_ms=5
    )
    await store.update_number_state(
        "waba:w",
        {"account_update.event": "X", "holds": {"banned": {"on": True, "at": 2}}, "held": True},
        now_ms=6,
    )
    doc = await store.number_state("waba:w")
    assert doc is not None
    assert (doc["security"], doc["account_update"], doc["held"], doc["updated_at"]) == (
        {"event": "PIN_CHANGED", "at": 1},
        {"event": "X"},
        True,
        6,
    )


async def test_the_latest_user_preference_wins(store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    doc = {
        "_id": "p:u:marketing_messages",
        "account_id": "acc_1",
        "wa_id": "u",
        "category": "marketing_messages",
        "value": "stop",
        "at": 200,
        "detail": "",
    }
    assert await store.save_user_preference(doc)
    assert not await store.save_user_preference({**doc, "value": "resume", "at": 100})
    assert await store.save_user_preference({**doc, "value": "resume", "at": 300})
    stored = await _read(store, "user_preferences", "user_preferences", doc["_id"])
    assert (stored["value"], stored["at"]) == ("resume", 300)


async def _read(store: Any, collection: str, fake_attribute: str, doc_id: str) -> Any:
    if isinstance(store, FakeStore):
        found = getattr(store, fake_attribute)
        if isinstance(found, list):  # the fake keeps templates in a list
            return next(d for d in found if d["_id"] == doc_id)
        return found[doc_id]
    return await store._db[collection].find_one({"_id": doc_id})


async def test_a_batchs_writes_give_the_documents_of_its_items_one_at_a_time(
    store_and_seeds: tuple[Any, Seeds],
) -> None:
    """The processor's batch writes (one command per collection) on the fake and the database."""
    store, _ = store_and_seeds
    inbound = {"_id": "wamid.in1", "direction": "inbound", "content": "hi"}
    assert await store.store_inbound_many([inbound, {**inbound, "_id": "wamid.in2"}, inbound]) == {
        "wamid.in1"
    }
    assert await store.store_inbound_many([{**inbound, "content": "other"}]) == {"wamid.in1"}
    assert (await _read(store, "inbound_messages", "inbound", "wamid.in1"))["content"] == "hi"

    await store.update_conversations(
        {"p:u": {"$max": {"last_message_at": 20}, "$set": {"contact_name": "B"}}}
    )
    await store.update_conversations(
        {"p:u": {"$max": {"last_message_at": 10}, "$set": {"contact_name": "C"}}}
    )
    conversation = await _read(store, "conversations", "conversations", "p:u")
    assert (conversation["last_message_at"], conversation["contact_name"]) == (20, "C")

    minimal = {"_id": "w:t:en_US", "waba_id": "w", "template_id": "9", "status": "APPROVED"}
    minimal["status_event_at"] = 10
    outcomes = await store.apply_templates(
        [
            TemplateWrite(
                "w:t:en_US",
                "9",
                "w",
                {"status": "APPROVED", "status_event_at": 10},
                "status_event_at",
                10,
                minimal,
            ),
            TemplateWrite(
                "w:t:en_US",
                "9",
                "w",
                {"status": "PAUSED", "status_event_at": 5},
                "status_event_at",
                5,
                minimal,
            ),
            TemplateWrite(
                "w:t:en_US",
                "9",
                "w",
                {"quality_score": "RED", "quality_event_at": 7},
                "quality_event_at",
                7,
                minimal,
            ),
            TemplateWrite("w::", "404", "w", {"needs_sync": True}, "components_event_at", 8, None),
        ]
    )
    assert outcomes == TemplateOutcomes(created=1, applied=1, not_applied=2)
    template = await _read(store, "templates", "templates", "w:t:en_US")
    assert (template["status"], template["quality_score"]) == ("APPROVED", "RED")

    await store.update_number_states({"waba:w": {"security.event": "X", "held": True}}, 5)
    await store.update_number_states({"waba:w": {"held": False}, "n1": {"tier": "T"}}, 6)
    state = await store.number_state("waba:w")
    assert (state["security"], state["held"], state["updated_at"]) == ({"event": "X"}, False, 6)
    assert (await store.number_state("n1"))["tier"] == "T"

    fact = {"_id": "p:a", "account_id": "acc_1", "suppressed": True, "source": "api"}
    assert await store.save_suppressions(
        [
            {**fact, "at": 200},
            {**fact, "at": 100, "suppressed": False},
            {**fact, "_id": "p:b", "at": 50},
            {**fact, "at": 300, "suppressed": False},
        ]
    ) == [True, False, True, True]
    assert await store.save_suppressions([{**fact, "at": 250}]) == [False]
    assert (await _read(store, "suppressions", "suppressions", "p:a"))["suppressed"] is False
    assert (await _read(store, "suppressions", "suppressions", "p:b"))["at"] == 50

    parked = {"_id": "wamid.1:read", "wamid": "wamid.1", "status": "read", "parked_at": 1}
    await store.park_statuses([parked, {**parked, "parked_at": 2}])
    await store.park_statuses([{**parked, "parked_at": 3}])
    assert (await _read(store, "parked_statuses", "parked", "wamid.1:read"))["parked_at"] == 1
