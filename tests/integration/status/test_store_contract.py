"""The in-memory FakeStore used by unit tests behaves like the real repository on FerretDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.status import core
from services.status.repository import StatusRepository
from shared.collections import MESSAGES, PARKED_STATUSES, TEMPLATES, ensure_indexes
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
async def store_and_seeds(request: pytest.FixtureRequest, mongodb_url: str, unique: str
                          ) -> AsyncIterator[tuple[Any, Seeds]]:
    if request.param == "fake":
        fake = FakeStore()
        yield fake, Seeds(fake, None)
        return
    mongo = make_client(mongodb_url)
    db = mongo[f"it_{unique}"]
    await ensure_indexes(db, MESSAGES, TEMPLATES, PARKED_STATUSES)
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
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, seeds = store_and_seeds
    await seeds.message({"_id": "msg_1", "account_id": "acc_1", "recipient_region": "GB",
                         "idempotency_key": "k1"})
    await seeds.message({"_id": "msg_odd", "idempotency_key": "k2"})
    assert await store.find_message("msg_1") == REF
    assert await store.find_message("msg_odd") is None
    assert await store.find_message("msg_none") is None


async def test_parking_is_idempotent_and_keeps_the_first_parked_time(
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    doc = {"_id": "wamid.1:read", "wamid": "wamid.1", "status": "read", "raw": "{}",
           "waba_id": "w", "phone_number_id": "p", "parked_at": 100}
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
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, seeds = store_and_seeds
    state, doc = await store.load_message("msg_new")
    assert (state, doc) == (core.MessageState(), None)
    await store.save_message("msg_new", {"status": "rejected", "history": []},
                             {"account_id": "acc_1", "idempotency_key": "none:msg_new"})
    await store.save_message("msg_new2", {"status": "rejected", "history": []},
                             {"account_id": "acc_1", "idempotency_key": "none:msg_new2"})
    _, doc = await store.load_message("msg_new")
    assert doc is not None and doc["account_id"] == "acc_1"

    await seeds.message({"_id": "msg_1", "account_id": "acc_1", "recipient": "+44",
                         "idempotency_key": "k", "status": "accepted", "history": []})
    await store.save_message("msg_1", {"status": "sent", "wamid": "wamid.1",
                                       "history": [{"status": "sent", "at": 1,
                                                    "source": "sender"}]}, {})
    state, doc = await store.load_message("msg_1")
    assert doc is not None and doc["account_id"] == "acc_1"
    assert state.status == "sent" and state.wamid == "wamid.1"


async def test_the_conversation_keeps_the_latest_inbound_time(
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, _ = store_and_seeds
    await store.record_inbound("p:u", "p", "u", at_ms=200, now_ms=1)
    await store.record_inbound("p:u", "p", "u", at_ms=100, now_ms=2)
    await store.record_inbound("p:u", "p", "u", at_ms=300, now_ms=3)
    await store.record_inbound("p:u", "p", "u", at_ms=250, now_ms=4)
    if isinstance(store, FakeStore):
        doc = store.conversations["p:u"]
    else:
        doc = await store._db["conversations"].find_one({"_id": "p:u"})
    assert doc["last_inbound_at"] == 300 and doc["wa_id"] == "u"


async def test_template_status_applies_only_to_known_templates_and_never_rewinds(
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, seeds = store_and_seeds
    assert not await store.apply_template_status("w", "promo", "en_US", "APPROVED", None, 10)
    await seeds.template({"_id": "w:promo:en_US", "waba_id": "w", "name": "promo",
                          "language": "en_US", "status": "PENDING"})
    assert await store.apply_template_status("w", "promo", "en_US", "PAUSED", None, 20)
    assert not await store.apply_template_status("w", "promo", "en_US", "APPROVED", "NONE", 10)
    assert await store.apply_template_status("w", "promo", "en_US", "APPROVED", "NONE", 30)


async def test_phone_numbers_are_found_by_display_number_variants(
        store_and_seeds: tuple[Any, Seeds]) -> None:
    store, seeds = store_and_seeds
    await seeds.phone_number({"_id": "1065", "waba_id": "w", "display_phone_number": "+1555"})
    assert await store.find_phone_number(core.display_number_variants("1555")) == ("1065", "w")
    assert await store.find_phone_number(core.display_number_variants("1999")) is None
    assert await store.find_phone_number([]) is None
