"""status's MongoDB adapter: the collections it reads and writes, with driver failures
translated into the error tree (a database outage is transient; nothing here is permanent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.status.core import MessageRef, MessageState, message_ref_from_doc, state_from_doc
from shared.collections import (
    CONVERSATIONS,
    MESSAGES,
    PARKED_STATUSES,
    PHONE_NUMBERS,
    TEMPLATES,
    WAMID_INDEX,
)
from shared.mongo import InsertBatcher, unavailable

T = TypeVar("T")
Doc = dict[str, Any]


class ProcessorStore(Protocol):
    """What the webhook processor needs from the database (a fake implements it in tests)."""

    async def find_by_wamid(self, wamid: str) -> MessageRef | None: ...
    async def find_message(self, message_id: str) -> MessageRef | None: ...
    async def park_status(self, doc: Doc) -> None: ...
    async def delete_parked(self, parked_id: str) -> None: ...
    async def record_inbound(self, conversation_id: str, phone_number_id: str, sender: str,
                             at_ms: int, now_ms: int) -> None: ...
    async def apply_template_status(self, waba_id: str, name: str, language: str, status: str,
                                    reason: str | None, at_ms: int) -> bool: ...
    async def find_phone_number(self, display_variants: list[str]) -> tuple[str, str] | None: ...


class StateStore(Protocol):
    """What the state writer needs from the database."""

    async def load_message(self, message_id: str) -> tuple[MessageState, Doc | None]: ...

    async def create_message(self, doc: Doc) -> bool:
        """Insert a new document; False when its id is taken."""
        ...

    async def save_message(self, message_id: str, fields: Doc,
                           fields_if_new: Doc) -> None: ...
    async def index_wamid(self, doc: Doc) -> None: ...
    async def parked_for(self, wamid: str) -> list[Doc]: ...
    async def delete_parked(self, parked_id: str) -> None: ...


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except DuplicateKeyError:
        raise
    except PyMongoError as exc:
        raise unavailable(exc) from exc


async def _call(action: Callable[[], Awaitable[T]]) -> T:
    async with _translated():
        return await action()


class StatusRepository:
    """The real store, over one database (implements ProcessorStore and StateStore)."""

    def __init__(self, db: AsyncDatabase[Doc], max_batch: int = 500) -> None:
        self._db = db
        self._creations = InsertBatcher(db[MESSAGES], max_batch=max_batch)

    # --- resolving wamids ------------------------------------------------------------------
    async def find_by_wamid(self, wamid: str) -> MessageRef | None:
        doc = await _call(lambda: self._db[WAMID_INDEX].find_one({"_id": wamid}))
        return message_ref_from_doc(doc)

    async def find_message(self, message_id: str) -> MessageRef | None:
        doc = await _call(lambda: self._db[MESSAGES].find_one(
            {"_id": message_id}, {"account_id": 1, "recipient_region": 1}))
        return message_ref_from_doc(doc)

    async def index_wamid(self, doc: Doc) -> None:
        """Insert-only: the first writer wins and a replay is a no-op."""
        try:
            await _call(lambda: self._db[WAMID_INDEX].insert_one(dict(doc)))
        except DuplicateKeyError:
            pass

    # --- parked statuses -------------------------------------------------------------------
    async def park_status(self, doc: Doc) -> None:
        # $setOnInsert keeps the first parked_at, so re-delivery does not extend its life.
        fields = {k: v for k, v in doc.items() if k != "_id"}
        try:
            await _call(lambda: self._db[PARKED_STATUSES].update_one(
                {"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True))
        except DuplicateKeyError:
            pass  # two upserts raced; the other one parked it

    async def parked_for(self, wamid: str) -> list[Doc]:
        return await _call(lambda: self._db[PARKED_STATUSES].find({"wamid": wamid})
                           .to_list(None))

    async def delete_parked(self, parked_id: str) -> None:
        await _call(lambda: self._db[PARKED_STATUSES].delete_one({"_id": parked_id}))

    async def delete_parked_before(self, before_ms: int) -> int:
        result = await _call(lambda: self._db[PARKED_STATUSES].delete_many(
            {"parked_at": {"$lt": before_ms}}))
        return result.deleted_count

    async def count_parked(self) -> int:
        return await _call(lambda: self._db[PARKED_STATUSES].count_documents({}))

    # --- messages --------------------------------------------------------------------------
    async def load_message(self, message_id: str) -> tuple[MessageState, Doc | None]:
        doc = await _call(lambda: self._db[MESSAGES].find_one(
            {"_id": message_id},
            {"history": 1, "wamid": 1, "account_id": 1, "recipient_region": 1,
             "created_at": 1, "type": 1}))
        return state_from_doc(doc), doc

    async def create_message(self, doc: Doc) -> bool:
        # Concurrently handled requests' documents go in one insert_many (group commit).
        return await self._creations.insert(doc)

    async def save_message(self, message_id: str, fields: Doc, fields_if_new: Doc) -> None:
        """Set the state writer's fields; create a minimal document if ingest's is missing."""
        update: Doc = {"$set": fields}
        if fields_if_new:
            update["$setOnInsert"] = fields_if_new
        await _call(lambda: self._db[MESSAGES].update_one({"_id": message_id}, update,
                                                          upsert=True))

    async def stuck_unknown(self, before_ms: int, limit: int) -> list[MessageRef]:
        docs = await _call(lambda: self._db[MESSAGES].find(
            {"status": "unknown", "status_at": {"$lt": before_ms}},
            {"account_id": 1, "recipient_region": 1}).limit(limit).to_list(None))
        return [ref for ref in map(message_ref_from_doc, docs) if ref is not None]

    async def messages_to_anonymise(self, before_ms: int, limit: int) -> list[Doc]:
        # ingest's created_at may be epoch ms or a BSON date: match either.
        before_date = datetime.fromtimestamp(before_ms / 1000, tz=UTC)
        query = {"anonymised_at": {"$exists": False},
                 "$or": [{"created_at": {"$lt": before_ms}},
                         {"created_at": {"$lt": before_date}}]}
        return await _call(lambda: self._db[MESSAGES].find(query, {"recipient": 1})
                           .limit(limit).to_list(None))

    async def anonymise_message(self, message_id: str, update: Doc) -> None:
        await _call(lambda: self._db[MESSAGES].update_one(
            {"_id": message_id, "anonymised_at": {"$exists": False}}, update))

    # --- conversations (the 24 h customer-service window) ----------------------------------
    async def record_inbound(self, conversation_id: str, phone_number_id: str, sender: str,
                             at_ms: int, now_ms: int) -> None:
        try:
            await _call(lambda: self._db[CONVERSATIONS].update_one(
                {"_id": conversation_id},
                {"$max": {"last_inbound_at": at_ms},
                 "$set": {"updated_at": now_ms},
                 "$setOnInsert": {"phone_number_id": phone_number_id, "wa_id": sender}},
                upsert=True))
        except DuplicateKeyError:
            pass  # a concurrent upsert created it; a redelivery will move last_inbound_at

    async def delete_conversations_before(self, before_ms: int) -> int:
        result = await _call(lambda: self._db[CONVERSATIONS].delete_many(
            {"last_inbound_at": {"$lt": before_ms}}))
        return result.deleted_count

    # --- templates and phone numbers -------------------------------------------------------
    async def apply_template_status(self, waba_id: str, name: str, language: str, status: str,
                                    reason: str | None, at_ms: int) -> bool:
        """Set Meta's status on our template unless a later webhook already did (webhooks
        arrive out of order). False when nothing was updated: no such template, or a later
        status is already recorded."""
        result = await _call(lambda: self._db[TEMPLATES].update_one(
            {"waba_id": waba_id, "name": name, "language": language,
             "$or": [{"status_event_at": {"$exists": False}},
                     {"status_event_at": {"$lte": at_ms}}]},
            {"$set": {"status": status, "status_reason": reason, "status_event_at": at_ms}}))
        return result.matched_count > 0

    async def find_phone_number(self, display_variants: list[str]) -> tuple[str, str] | None:
        """(phone_number_id, waba_id) of the number Meta names by its display number."""
        if not display_variants:
            return None
        doc = await _call(lambda: self._db[PHONE_NUMBERS].find_one(
            {"display_phone_number": {"$in": display_variants}}, {"waba_id": 1}))
        if doc is None:
            return None
        return str(doc["_id"]), str(doc.get("waba_id") or "")
