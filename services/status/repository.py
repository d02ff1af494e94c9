"""status's MongoDB adapter: the collections it reads and writes, with driver failures
translated into the error tree (a database outage is transient; nothing here is permanent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.status.batch_plan import (
    MessageWrite,
    TemplateOutcomes,
    TemplateWrite,
    plan_latest,
)
from services.status.core import (
    CallbackMessage,
    MessageRef,
    MessageState,
    NumberRef,
    callback_message_from_doc,
    message_ref_from_doc,
    number_ref_from_doc,
    state_from_doc,
)
from shared.collections import (
    CONVERSATIONS,
    INBOUND_MESSAGES,
    MESSAGES,
    NUMBER_STATES,
    OPT_OUT_KEYWORDS,
    PARKED_STATUSES,
    PHONE_NUMBERS,
    SUPPRESSIONS,
    TEMPLATES,
    USER_PREFERENCES,
    WAMID_INDEX,
)
from shared.mongo import DUPLICATE_KEY, InsertBatcher, find_by_ids, unavailable

T = TypeVar("T")
Doc = dict[str, Any]

# Statements per `update` command. FerretDB 1.24 (SQLite) answers an update command of 80
# statements on existing documents in ~0.1 s and one of 100 not within 20 s (measured
# 2026-12-06 on the shared database): larger batches are written in commands of this size.
UPDATES_PER_COMMAND = 50

# What the processor reads of a message found by its callback data.
_CALLBACK_FIELDS = {"account_id": 1, "recipient_region": 1, "wamid": 1}


class ProcessorStore(Protocol):
    """What the webhook processor needs from the database (a fake implements it in tests)."""

    async def find_by_wamid(self, wamid: str) -> MessageRef | None: ...

    async def find_by_wamids(self, wamids: Sequence[str]) -> dict[str, MessageRef]:
        """The indexed ones among these wamids, in one read."""
        ...

    async def find_messages(self, message_ids: Sequence[str]) -> dict[str, CallbackMessage]:
        """Our messages among these ids (callback data), in one read."""
        ...

    async def park_status(self, doc: Doc) -> None: ...
    async def delete_parked_many(self, parked_ids: Sequence[str]) -> None: ...
    async def phone_number(self, phone_number_id: str) -> NumberRef | None: ...
    async def find_phone_number(self, display_variants: list[str]) -> NumberRef | None: ...
    async def numbers_of_waba(self, waba_id: str) -> list[NumberRef]: ...

    async def store_inbound(self, doc: Doc) -> bool:
        """Insert an inbound message or echo; False when its wamid is already stored."""
        ...

    async def update_conversation(self, conversation_id: str, update: Doc) -> None: ...

    async def apply_template(
        self,
        doc_id: str,
        template_id: str,
        waba_id: str,
        fields: Doc,
        at_field: str,
        at_ms: int,
        minimal: Doc | None,
    ) -> str:
        """Set `fields` on the template (by id, else by Meta's template id in the WABA) unless
        a later webhook of the same kind already did. Returns "applied", "created" (from
        `minimal`), "stale" or "unknown"."""
        ...

    async def number_state(self, state_id: str) -> Doc | None: ...
    async def update_number_state(self, state_id: str, fields: Doc, now_ms: int) -> None: ...

    async def save_user_preference(self, doc: Doc) -> bool:
        """Upsert unless a later preference of the same user and category is stored; False
        when this one is older."""
        ...

    async def save_suppression(self, doc: Doc) -> bool:
        """Upsert the contact's suppression unless a later fact about it is stored (any
        source); False when this one is older."""
        ...

    async def opt_out_keywords(self, account_id: str) -> Doc | None:
        """The account's keyword configuration (`opt_out_keywords`), None for the defaults."""
        ...

    # --- a batch's writes: one command per collection (in chunks of UPDATES_PER_COMMAND) ----
    async def park_statuses(self, docs: Sequence[Doc]) -> None:
        """Insert-only: the first parking of a status keeps its `parked_at`."""
        ...

    async def store_inbound_many(self, docs: Sequence[Doc]) -> set[str]:
        """Insert inbound messages and echoes; the wamids that were already stored."""
        ...

    async def update_conversations(self, updates: Mapping[str, Doc]) -> None:
        """One upsert per conversation (`batch_plan.merge_update` merged a batch's)."""
        ...

    async def apply_templates(self, writes: Sequence[TemplateWrite]) -> TemplateOutcomes:
        """`apply_template` for each write, in order, in a few commands."""
        ...

    async def update_number_states(self, sets: Mapping[str, Doc], now_ms: int) -> None:
        """`$set` these fields (and `updated_at`) on each state, creating it if needed."""
        ...

    async def save_user_preferences(self, docs: Sequence[Doc]) -> list[bool]:
        """Each preference saved unless a later one is stored (as one at a time would)."""
        ...

    async def save_suppressions(self, docs: Sequence[Doc]) -> list[bool]:
        """Each fact saved unless a later fact about the contact is stored."""
        ...


class StateStore(Protocol):
    """What the state writer needs from the database: a few commands per batch."""

    async def load_messages(self, message_ids: Sequence[str]) -> dict[str, Doc]:
        """The stored documents among these ids (the fields the state writer reads): one read."""
        ...

    async def create_messages(self, docs: Sequence[Doc]) -> set[str]:
        """Insert new documents in one command; the ids that were taken already."""
        ...

    async def write_messages(self, writes: Sequence[MessageWrite]) -> None:
        """Every message's upsert, in `bulk_write`s of UPDATES_PER_COMMAND."""
        ...

    async def index_wamids(self, docs: Sequence[Doc]) -> None:
        """Insert-only in one command: the first writer of a wamid wins, a replay is a no-op."""
        ...

    async def parked_for_wamids(self, wamids: Sequence[str]) -> list[Doc]: ...
    async def delete_parked_many(self, parked_ids: Sequence[str]) -> None: ...


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except (DuplicateKeyError, BulkWriteError):  # about our data: the caller decides
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

    async def find_by_wamids(self, wamids: Sequence[str]) -> dict[str, MessageRef]:
        if not wamids:
            return {}
        docs = await _call(lambda: find_by_ids(self._db[WAMID_INDEX], wamids))
        found = {str(doc["_id"]): message_ref_from_doc(doc) for doc in docs}
        return {wamid: ref for wamid, ref in found.items() if ref is not None}

    async def find_messages(self, message_ids: Sequence[str]) -> dict[str, CallbackMessage]:
        if not message_ids:
            return {}
        docs = await _call(lambda: find_by_ids(self._db[MESSAGES], message_ids, _CALLBACK_FIELDS))
        found = {str(doc["_id"]): callback_message_from_doc(doc) for doc in docs}
        return {message_id: msg for message_id, msg in found.items() if msg is not None}

    async def index_wamid(self, doc: Doc) -> None:
        """Insert-only: the first writer wins and a replay is a no-op."""
        try:
            await _call(lambda: self._db[WAMID_INDEX].insert_one(dict(doc)))
        except DuplicateKeyError:
            pass

    async def index_wamids(self, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        try:
            await _call(
                lambda: self._db[WAMID_INDEX].bulk_write(
                    [InsertOne(dict(doc)) for doc in docs], ordered=False
                )
            )
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise unavailable(exc) from exc

    # --- parked statuses -------------------------------------------------------------------
    async def park_status(self, doc: Doc) -> None:
        # $setOnInsert keeps the first parked_at, so re-delivery does not extend its life.
        fields = {k: v for k, v in doc.items() if k != "_id"}
        try:
            await _call(
                lambda: self._db[PARKED_STATUSES].update_one(
                    {"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True
                )
            )
        except DuplicateKeyError:
            pass  # two upserts raced; the other one parked it

    async def parked_for(self, wamid: str) -> list[Doc]:
        return await _call(lambda: self._db[PARKED_STATUSES].find({"wamid": wamid}).to_list(None))

    async def delete_parked(self, parked_id: str) -> None:
        await _call(lambda: self._db[PARKED_STATUSES].delete_one({"_id": parked_id}))

    async def parked_for_wamids(self, wamids: Sequence[str]) -> list[Doc]:
        if not wamids:
            return []
        return await _call(
            lambda: self._db[PARKED_STATUSES].find({"wamid": {"$in": list(wamids)}}).to_list(None)
        )

    async def delete_parked_many(self, parked_ids: Sequence[str]) -> None:
        if parked_ids:
            await _call(
                lambda: self._db[PARKED_STATUSES].delete_many({"_id": {"$in": list(parked_ids)}})
            )

    async def delete_parked_before(self, before_ms: int) -> int:
        result = await _call(
            lambda: self._db[PARKED_STATUSES].delete_many({"parked_at": {"$lt": before_ms}})
        )
        return result.deleted_count

    async def count_parked(self) -> int:
        return await _call(lambda: self._db[PARKED_STATUSES].count_documents({}))

    # --- messages --------------------------------------------------------------------------
    async def load_message(self, message_id: str) -> tuple[MessageState, Doc | None]:
        doc = await _call(lambda: self._db[MESSAGES].find_one({"_id": message_id}, _STATE_FIELDS))
        return state_from_doc(doc), doc

    async def load_messages(self, message_ids: Sequence[str]) -> dict[str, Doc]:
        if not message_ids:
            return {}
        docs = await _call(lambda: find_by_ids(self._db[MESSAGES], message_ids, _STATE_FIELDS))
        return {str(doc["_id"]): doc for doc in docs}

    async def create_messages(self, docs: Sequence[Doc]) -> set[str]:
        if not docs:
            return set()
        try:
            await _call(
                lambda: self._db[MESSAGES].insert_many([dict(doc) for doc in docs], ordered=False)
            )
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise unavailable(exc) from exc
            return {str(docs[error["index"]]["_id"]) for error in exc.details["writeErrors"]}
        return set()

    async def write_messages(self, writes: Sequence[MessageWrite]) -> None:
        """One `update` command for the batch. The state writer is its accounts' only writer,
        so an upsert cannot race another; if one ever did (a duplicate key), the document now
        exists and the same update is applied to it."""
        ops = [_message_update(write) for write in writes]
        for start in range(0, len(ops), UPDATES_PER_COMMAND):
            await self._bulk_update(ops[start : start + UPDATES_PER_COMMAND])

    async def _bulk_update(self, ops: list[UpdateOne]) -> None:
        try:
            await _call(lambda: self._db[MESSAGES].bulk_write(ops, ordered=False))
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise unavailable(exc) from exc
            again = [ops[error["index"]] for error in exc.details.get("writeErrors", [])]
            await _call(lambda: self._db[MESSAGES].bulk_write(again, ordered=False))

    async def create_message(self, doc: Doc) -> bool:
        # Concurrently handled requests' documents go in one insert_many (group commit).
        return await self._creations.insert(doc)

    async def save_message(self, message_id: str, fields: Doc, fields_if_new: Doc) -> None:
        """Set the state writer's fields; create a minimal document if ingest's is missing."""
        update: Doc = {"$set": fields}
        if fields_if_new:
            update["$setOnInsert"] = fields_if_new
        await _call(lambda: self._db[MESSAGES].update_one({"_id": message_id}, update, upsert=True))

    async def stuck_unknown(self, before_ms: int, limit: int) -> list[MessageRef]:
        docs = await _call(
            lambda: (
                self._db[MESSAGES]
                .find(
                    {"status": "unknown", "status_at": {"$lt": before_ms}},
                    {"account_id": 1, "recipient_region": 1},
                )
                .limit(limit)
                .to_list(None)
            )
        )
        return [ref for ref in map(message_ref_from_doc, docs) if ref is not None]

    async def messages_to_anonymise(self, before_ms: int, limit: int) -> list[Doc]:
        # ingest's created_at may be epoch ms or a BSON date: match either.
        before_date = datetime.fromtimestamp(before_ms / 1000, tz=UTC)
        query = {
            "anonymised_at": {"$exists": False},
            "$or": [{"created_at": {"$lt": before_ms}}, {"created_at": {"$lt": before_date}}],
        }
        return await _call(
            lambda: self._db[MESSAGES].find(query, {"recipient": 1}).limit(limit).to_list(None)
        )

    async def anonymise_message(self, message_id: str, update: Doc) -> None:
        await _call(
            lambda: self._db[MESSAGES].update_one(
                {"_id": message_id, "anonymised_at": {"$exists": False}}, update
            )
        )

    # --- inbound messages and conversations (the 24 h customer-service window) -------------
    async def store_inbound(self, doc: Doc) -> bool:
        try:
            await _call(lambda: self._db[INBOUND_MESSAGES].insert_one(dict(doc)))
        except DuplicateKeyError:
            return False  # already stored: a redelivered webhook
        return True

    async def update_conversation(self, conversation_id: str, update: Doc) -> None:
        try:
            await _call(
                lambda: self._db[CONVERSATIONS].update_one(
                    {"_id": conversation_id}, update, upsert=True
                )
            )
        except DuplicateKeyError:
            # A concurrent upsert created it: apply the same update to the document now there.
            await _call(
                lambda: self._db[CONVERSATIONS].update_one({"_id": conversation_id}, update)
            )

    async def delete_conversations_before(self, before_ms: int) -> int:
        """Conversations with no message since the cutoff (older documents have only
        last_inbound_at)."""
        result = await _call(
            lambda: self._db[CONVERSATIONS].delete_many(
                {
                    "$or": [
                        {"last_message_at": {"$lt": before_ms}},
                        {
                            "last_message_at": {"$exists": False},
                            "last_inbound_at": {"$lt": before_ms},
                        },
                    ]
                }
            )
        )
        return result.deleted_count

    async def inbound_to_anonymise(self, before_ms: int, limit: int) -> list[Doc]:
        return await _call(
            lambda: (
                self._db[INBOUND_MESSAGES]
                .find(
                    {"received_at": {"$lt": before_ms}, "anonymised_at": {"$exists": False}},
                    {"wa_id": 1},
                )
                .limit(limit)
                .to_list(None)
            )
        )

    async def anonymise_inbound(self, wamid: str, update: Doc) -> None:
        await _call(
            lambda: self._db[INBOUND_MESSAGES].update_one(
                {"_id": wamid, "anonymised_at": {"$exists": False}}, update
            )
        )

    # --- templates ---------------------------------------------------------------------------
    async def apply_template(
        self,
        doc_id: str,
        template_id: str,
        waba_id: str,
        fields: Doc,
        at_field: str,
        at_ms: int,
        minimal: Doc | None,
    ) -> str:
        """Templates arrive out of order: a kind's fields are set only when this webhook is not
        older than the last one of its kind. FerretDB's conditional update is not atomic, but
        status's processor is the only webhook writer of a WABA's templates (the topic is keyed
        by WABA) and the CLI's sync writes Meta's truth either way."""
        not_later = {"$or": [{at_field: {"$exists": False}}, {at_field: {"$lte": at_ms}}]}
        target: Doc = (
            {"_id": doc_id}
            if minimal is not None
            else {"waba_id": waba_id, "template_id": template_id}
        )
        result = await _call(
            lambda: self._db[TEMPLATES].update_one({**target, **not_later}, {"$set": fields})
        )
        if result.matched_count:
            return "applied"
        if minimal is None:
            return "unknown"
        try:
            await _call(lambda: self._db[TEMPLATES].insert_one(dict(minimal)))
        except DuplicateKeyError:
            return "stale"  # it exists, with a later webhook of this kind already applied
        return "created"

    # --- phone numbers and their state -------------------------------------------------------
    async def phone_number(self, phone_number_id: str) -> NumberRef | None:
        doc = await _call(
            lambda: self._db[PHONE_NUMBERS].find_one({"_id": phone_number_id}, _NUMBER_FIELDS)
        )
        return number_ref_from_doc(doc)

    async def find_phone_number(self, display_variants: list[str]) -> NumberRef | None:
        """The number Meta names by its display number."""
        if not display_variants:
            return None
        doc = await _call(
            lambda: self._db[PHONE_NUMBERS].find_one(
                {"display_phone_number": {"$in": display_variants}}, _NUMBER_FIELDS
            )
        )
        return number_ref_from_doc(doc)

    async def numbers_of_waba(self, waba_id: str) -> list[NumberRef]:
        docs = await _call(
            lambda: self._db[PHONE_NUMBERS].find({"waba_id": waba_id}, _NUMBER_FIELDS).to_list(None)
        )
        return [ref for ref in map(number_ref_from_doc, docs) if ref is not None]

    async def number_state(self, state_id: str) -> Doc | None:
        return await _call(lambda: self._db[NUMBER_STATES].find_one({"_id": state_id}))

    async def update_number_state(self, state_id: str, fields: Doc, now_ms: int) -> None:
        """status's processor is the only writer of `number_states` (one WABA's webhooks are
        handled in order), so a read-then-set needs no atomic conditional update."""
        update = {"$set": {**fields, "updated_at": now_ms}}
        try:
            await _call(
                lambda: self._db[NUMBER_STATES].update_one({"_id": state_id}, update, upsert=True)
            )
        except DuplicateKeyError:
            await _call(lambda: self._db[NUMBER_STATES].update_one({"_id": state_id}, update))

    # --- user preferences --------------------------------------------------------------------
    async def save_user_preference(self, doc: Doc) -> bool:
        return await self._save_latest(USER_PREFERENCES, doc)

    # --- the marketing suppression list (status's processor is its only writer) -------------
    async def save_suppression(self, doc: Doc) -> bool:
        return await self._save_latest(SUPPRESSIONS, doc)

    async def opt_out_keywords(self, account_id: str) -> Doc | None:
        return await _call(lambda: self._db[OPT_OUT_KEYWORDS].find_one({"_id": account_id}))

    async def _save_latest(self, collection: str, doc: Doc) -> bool:
        """Set the document unless the stored one is about a later moment (`at`). FerretDB's
        conditional update is not atomic, but one contact's facts come to one processor in
        order (its WABA's webhooks and the change requests share the WABA key)."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        result = await _call(
            lambda: self._db[collection].update_one(
                {"_id": doc["_id"], "at": {"$lte": doc["at"]}}, {"$set": fields}
            )
        )
        if result.matched_count:
            return True
        try:
            await _call(lambda: self._db[collection].insert_one(dict(doc)))
        except DuplicateKeyError:
            return False  # a later fact is stored
        return True

    # --- a batch's writes ----------------------------------------------------------------------
    async def park_statuses(self, docs: Sequence[Doc]) -> None:
        await self._insert_new(PARKED_STATUSES, docs)

    async def store_inbound_many(self, docs: Sequence[Doc]) -> set[str]:
        taken = await self._insert_new(INBOUND_MESSAGES, docs)
        return {str(docs[i]["_id"]) for i in taken}

    async def update_conversations(self, updates: Mapping[str, Doc]) -> None:
        ops = [UpdateOne({"_id": i}, update, upsert=True) for i, update in updates.items()]
        await self._bulk_updates(CONVERSATIONS, ops)

    async def apply_templates(self, writes: Sequence[TemplateWrite]) -> TemplateOutcomes:
        """Insert first the documents of the templates named in full (a stored one is a
        duplicate: nothing else is read), then every other write as a conditional update (a
        later webhook of its kind wins). Same documents as `apply_template` one at a time."""
        named = [w for w in writes if w.minimal is not None]
        taken = await self._insert_new(TEMPLATES, [w.minimal for w in named if w.minimal])
        updates = [w for w in writes if w.minimal is None]
        updates += [named[i] for i in sorted(taken)]
        ops = [
            UpdateOne(
                {
                    **(
                        {"_id": w.doc_id}
                        if w.minimal is not None
                        else {"waba_id": w.waba_id, "template_id": w.template_id}
                    ),
                    "$or": [{w.at_field: {"$exists": False}}, {w.at_field: {"$lte": w.at_ms}}],
                },
                {"$set": w.fields},
            )
            for w in updates
        ]
        matched = await self._bulk_updates(TEMPLATES, ops)
        return TemplateOutcomes(len(named) - len(taken), matched, len(ops) - matched)

    async def update_number_states(self, sets: Mapping[str, Doc], now_ms: int) -> None:
        ops = [
            UpdateOne({"_id": i}, {"$set": {**fields, "updated_at": now_ms}}, upsert=True)
            for i, fields in sets.items()
        ]
        await self._bulk_updates(NUMBER_STATES, ops)

    async def save_user_preferences(self, docs: Sequence[Doc]) -> list[bool]:
        return await self._save_latest_many(USER_PREFERENCES, docs)

    async def save_suppressions(self, docs: Sequence[Doc]) -> list[bool]:
        return await self._save_latest_many(SUPPRESSIONS, docs)

    async def _save_latest_many(self, collection: str, docs: Sequence[Doc]) -> list[bool]:
        """One read of the stored `at`s (by `_id`), then the documents' last facts: the new
        ones inserted in one command, the others set in one (each still conditional on `at`)."""
        if not docs:
            return []
        ids = list(dict.fromkeys(str(doc["_id"]) for doc in docs))
        stored = await _call(lambda: find_by_ids(self._db[collection], ids, {"at": 1}))
        plan = plan_latest({str(d["_id"]): d["at"] for d in stored if "at" in d}, docs)
        taken = await self._insert_new(collection, plan.inserts)
        again = [plan.inserts[i] for i in sorted(taken)]  # only if another writer raced
        ops = [
            UpdateOne(
                {"_id": doc["_id"], "at": {"$lte": doc["at"]}},
                {"$set": {k: v for k, v in doc.items() if k != "_id"}},
            )
            for doc in [*plan.updates, *again]
        ]
        await self._bulk_updates(collection, ops)
        return plan.saved

    async def _insert_new(self, collection: str, docs: Sequence[Doc]) -> set[int]:
        """Insert-only, in one command: the indexes of the documents already stored."""
        if not docs:
            return set()
        try:
            await _call(
                lambda: self._db[collection].insert_many([dict(doc) for doc in docs], ordered=False)
            )
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise unavailable(exc) from exc
            return {int(error["index"]) for error in exc.details["writeErrors"]}
        return set()

    async def _bulk_updates(self, collection: str, ops: Sequence[UpdateOne]) -> int:
        """Updates in commands of UPDATES_PER_COMMAND; the documents they matched."""
        matched = 0
        for start in range(0, len(ops), UPDATES_PER_COMMAND):
            chunk = list(ops[start : start + UPDATES_PER_COMMAND])
            try:
                result = await _call(
                    lambda chunk=chunk: self._db[collection].bulk_write(chunk, ordered=True)  # type: ignore[misc]
                )
            except BulkWriteError as exc:
                if not _only_duplicates(exc):
                    raise unavailable(exc) from exc
                # Two upserts raced (the processor is these collections' only writer, so this
                # is not expected): the documents exist now, the same updates apply to them.
                result = await _call(
                    lambda chunk=chunk: self._db[collection].bulk_write(chunk, ordered=True)  # type: ignore[misc]
                )
            matched += result.matched_count
        return matched


# What the state writer reads of a message (state_from_doc and batch_plan.KEPT_FIELDS).
_STATE_FIELDS = {
    "history": 1,
    "wamid": 1,
    "account_id": 1,
    "recipient_region": 1,
    "created_at": 1,
    "type": 1,
}


def _message_update(write: MessageWrite) -> UpdateOne:
    update: Doc = {}
    if write.set_fields:
        update["$set"] = write.set_fields
    if write.set_on_insert:
        update["$setOnInsert"] = write.set_on_insert
    return UpdateOne({"_id": write.message_id}, update, upsert=True)


def _only_duplicates(exc: BulkWriteError) -> bool:
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(error.get("code") == DUPLICATE_KEY for error in errors)


_NUMBER_FIELDS = {"account_id": 1, "waba_id": 1, "throughput_mps": 1, "messaging_limit": 1}
