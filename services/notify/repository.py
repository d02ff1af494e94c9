"""notify's database adapter: its own collections (events, deliveries, attempts, endpoint
states, email alerts; it is their only writer) and what it reads of others' (endpoints from
ingest, accounts/WABAs/numbers from the CLI, messages and the wamid index from status, balances
from billing). Driver failures become DependencyUnavailable; a duplicate key is an answer.

The consumer writes a batch's events and deliveries with one insert_many each (unordered: a
duplicate key is a normal answer for its document, the others are written); attempts go out in
groups (one insert_many for whatever arrived meanwhile), and deliveries that succeeded are
marked with one update_many per group: FerretDB's writes cost per command.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.notify.core import accepted_event_id
from shared.collections import (
    ACCOUNTS,
    BALANCES,
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    EMAIL_ALERTS,
    ENDPOINT_STATES,
    MESSAGES,
    NOTIFY_EVENTS,
    PHONE_NUMBERS,
    WABAS,
    WAMID_INDEX,
    WEBHOOK_ENDPOINTS,
)
from shared.group_commit import GroupCommit
from shared.mongo import DUPLICATE_KEY, InsertBatcher, find_by_ids, unavailable

Doc = dict[str, Any]
T = TypeVar("T")


async def _call(action: Callable[[], Awaitable[T]]) -> T:
    try:
        return await action()
    except DuplicateKeyError:
        raise
    except PyMongoError as exc:
        raise unavailable(exc) from exc


class NotifyStore(Protocol):
    """What the worker, the dispatcher and the mailer need (a fake implements it in unit
    tests; tests/integration/notify runs the contract against the real database)."""

    async def endpoints_of_account(self, account_id: str) -> list[Doc]: ...
    async def endpoint(self, endpoint_id: str) -> Doc | None: ...
    async def endpoint_states(self) -> list[Doc]: ...
    async def save_endpoint_state(self, endpoint_id: str, account_id: str, fields: Doc) -> None: ...
    async def insert_events(self, docs: Sequence[Doc]) -> list[bool]: ...
    async def event(self, event_id: str) -> Doc | None: ...
    async def events_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]: ...
    async def events_in_range(
        self, account_id: str, since: int, until: int, limit: int
    ) -> list[Doc]: ...
    async def insert_deliveries(self, docs: Sequence[Doc]) -> list[bool]: ...
    async def insert_attempt(self, doc: Doc) -> None: ...
    async def mark_delivered(self, delivery_id: str, now: int) -> None: ...
    async def update_delivery(self, delivery_id: str, fields: Doc) -> None: ...
    async def due_deliveries(self, now: int, limit: int) -> list[Doc]: ...
    async def unattempted_deliveries(self, after_id: str, limit: int) -> list[Doc]: ...
    async def message_details(self, message_id: str) -> Doc | None: ...
    async def message_doc(self, message_id: str) -> Doc | None: ...
    async def messages_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]: ...
    async def wamid_messages(self, wamids: Sequence[str]) -> dict[str, Doc]: ...
    async def account_of_waba(self, waba_id: str) -> str | None: ...
    async def account_of_number(self, phone_number_id: str) -> str | None: ...
    async def account(self, account_id: str) -> Doc | None: ...
    async def currency(self, account_id: str) -> str | None: ...
    async def insert_alert(self, doc: Doc) -> bool: ...
    async def due_alerts(self, now: int, limit: int) -> list[Doc]: ...
    async def update_alert(self, key: str, fields: Doc) -> None: ...
    async def sweep(self, before: int) -> int: ...


class NotifyRepository:
    def __init__(self, db: AsyncDatabase[Doc], max_batch: int = 500) -> None:
        self._db = db
        self._max_batch = max_batch
        self._attempts = InsertBatcher(db[DELIVERY_ATTEMPTS], max_batch=max_batch)
        self._delivered: GroupCommit[tuple[str, int], None] = GroupCommit(
            self._mark_delivered_batch, max_batch=max_batch
        )

    # --- endpoints (ingest's) and their health (ours) --------------------------------------

    async def endpoints_of_account(self, account_id: str) -> list[Doc]:
        return await _call(
            lambda: (
                self._db[WEBHOOK_ENDPOINTS]
                .find({"account_id": account_id, "deleted_at": None})
                .to_list(None)
            )
        )

    async def endpoint(self, endpoint_id: str) -> Doc | None:
        return await _call(lambda: self._db[WEBHOOK_ENDPOINTS].find_one({"_id": endpoint_id}))

    async def endpoint_states(self) -> list[Doc]:
        return await _call(lambda: self._db[ENDPOINT_STATES].find({}).to_list(None))

    async def save_endpoint_state(self, endpoint_id: str, account_id: str, fields: Doc) -> None:
        states = self._db[ENDPOINT_STATES]
        update = {"$set": {**fields, "account_id": account_id}}
        try:
            await _call(lambda: states.update_one({"_id": endpoint_id}, update, upsert=True))
        except DuplicateKeyError:
            # Two attempts' upserts raced to create the document (MongoDB retries that itself,
            # FerretDB does not): it exists now, so the update applies to it.
            await _call(lambda: states.update_one({"_id": endpoint_id}, update))

    # --- events ----------------------------------------------------------------------------

    async def insert_events(self, docs: Sequence[Doc]) -> list[bool]:
        """Each document: True when inserted, False when one with its _id exists."""
        return await self._insert_all(NOTIFY_EVENTS, docs)

    async def _insert_all(self, collection: str, docs: Sequence[Doc]) -> list[bool]:
        """One unordered insert_many per `max_batch` documents. A failure other than a
        duplicate key is transient (the whole batch is tried again: its documents that were
        written are then duplicates)."""
        outcomes: list[bool] = []
        for start in range(0, len(docs), self._max_batch):
            chunk = list(docs[start : start + self._max_batch])
            done = [True] * len(chunk)
            try:
                await self._db[collection].insert_many(chunk, ordered=False)
            except BulkWriteError as exc:
                for error in exc.details.get("writeErrors", []):
                    if error.get("code") != DUPLICATE_KEY:
                        raise unavailable(exc) from exc
                    done[int(error["index"])] = False
            except PyMongoError as exc:
                raise unavailable(exc) from exc
            outcomes.extend(done)
        return outcomes

    async def event(self, event_id: str) -> Doc | None:
        return await _call(lambda: self._db[NOTIFY_EVENTS].find_one({"_id": event_id}))

    async def events_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]:
        if not ids:
            return {}
        docs = await _call(lambda: find_by_ids(self._db[NOTIFY_EVENTS], ids))
        return {d["_id"]: d for d in docs}

    async def events_in_range(
        self, account_id: str, since: int, until: int, limit: int
    ) -> list[Doc]:
        return await _call(
            lambda: (
                self._db[NOTIFY_EVENTS]
                .find(
                    {"account_id": account_id, "at": {"$gte": since, "$lte": until}},
                    {"payload": 0, "details": 0},
                )
                .sort("at", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        )

    # --- deliveries and attempts -----------------------------------------------------------

    async def insert_deliveries(self, docs: Sequence[Doc]) -> list[bool]:
        """Each document: True when inserted, False when one with its _id exists."""
        return await self._insert_all(DELIVERIES, docs)

    async def insert_attempt(self, doc: Doc) -> None:
        await self._attempts.insert(doc)  # a repeated attempt number is already recorded

    async def mark_delivered(self, delivery_id: str, now: int) -> None:
        await self._delivered.submit((delivery_id, now))

    async def _mark_delivered_batch(
        self, items: list[tuple[str, int]]
    ) -> list[BaseException | None]:
        # One command for the whole group (delivered_at: the group's latest; each attempt's
        # own time is in delivery_attempts).
        ids = [delivery_id for delivery_id, _ in items]
        done_at = max(now for _, now in items)
        try:
            await self._db[DELIVERIES].update_many(
                {"_id": {"$in": ids}},
                {
                    "$set": {"state": "delivered", "done_at": done_at, "next_at": None},
                    "$inc": {"attempts": 1},
                },
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return [None] * len(items)

    async def update_delivery(self, delivery_id: str, fields: Doc) -> None:
        await _call(lambda: self._db[DELIVERIES].update_one({"_id": delivery_id}, {"$set": fields}))

    async def due_deliveries(self, now: int, limit: int) -> list[Doc]:
        return await _call(
            lambda: (
                self._db[DELIVERIES]
                .find({"state": "pending", "next_at": {"$lte": now}})
                .sort("next_at", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        )

    async def unattempted_deliveries(self, after_id: str, limit: int) -> list[Doc]:
        """Pending deliveries never attempted (a restart finds them at once, not after their
        grace), by id in pages."""
        return await _call(
            lambda: (
                self._db[DELIVERIES]
                .find({"state": "pending", "attempts": 0, "_id": {"$gt": after_id}})
                .sort("_id", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        )

    # --- what others wrote -----------------------------------------------------------------

    async def message_details(self, message_id: str) -> Doc | None:
        """The details our own message.accepted event kept."""
        doc = await _call(
            lambda: self._db[NOTIFY_EVENTS].find_one(
                {"_id": accepted_event_id(message_id)}, {"details": 1}
            )
        )
        return doc.get("details") if doc else None

    async def message_doc(self, message_id: str) -> Doc | None:
        return await _call(
            lambda: self._db[MESSAGES].find_one(
                {"_id": message_id},
                {
                    "phone_number_id": 1,
                    "recipient": 1,
                    "type": 1,
                    "client_reference": 1,
                    "callback_data": 1,
                    "account_id": 1,
                },
            )
        )

    async def messages_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]:
        if not ids:
            return {}
        docs = await _call(
            lambda: find_by_ids(self._db[MESSAGES], ids, {"callback_data": 1, "account_id": 1})
        )
        return {d["_id"]: d for d in docs}

    async def wamid_messages(self, wamids: Sequence[str]) -> dict[str, Doc]:
        if not wamids:
            return {}
        docs = await _call(lambda: find_by_ids(self._db[WAMID_INDEX], wamids))
        return {d["_id"]: d for d in docs}

    async def account_of_waba(self, waba_id: str) -> str | None:
        doc = await _call(lambda: self._db[WABAS].find_one({"_id": waba_id}, {"account_id": 1}))
        return doc.get("account_id") if doc else None

    async def account_of_number(self, phone_number_id: str) -> str | None:
        doc = await _call(
            lambda: self._db[PHONE_NUMBERS].find_one({"_id": phone_number_id}, {"account_id": 1})
        )
        return doc.get("account_id") if doc else None

    async def account(self, account_id: str) -> Doc | None:
        return await _call(
            lambda: self._db[ACCOUNTS].find_one(
                {"_id": account_id}, {"email": 1, "alert_emails": 1, "name": 1}
            )
        )

    async def currency(self, account_id: str) -> str | None:
        doc = await _call(lambda: self._db[BALANCES].find_one({"_id": account_id}, {"currency": 1}))
        return doc.get("currency") if doc else None

    # --- email alerts ----------------------------------------------------------------------

    async def insert_alert(self, doc: Doc) -> bool:
        try:
            await _call(lambda: self._db[EMAIL_ALERTS].insert_one(doc))
            return True
        except DuplicateKeyError:
            return False

    async def due_alerts(self, now: int, limit: int) -> list[Doc]:
        return await _call(
            lambda: (
                self._db[EMAIL_ALERTS]
                .find({"state": "pending", "next_at": {"$lte": now}})
                .sort("next_at", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        )

    async def update_alert(self, key: str, fields: Doc) -> None:
        await _call(lambda: self._db[EMAIL_ALERTS].update_one({"_id": key}, {"$set": fields}))

    # --- retention -------------------------------------------------------------------------

    async def sweep(self, before: int) -> int:
        """Delete events, finished deliveries and attempts older than `before` (ms)."""
        removed = 0
        for name, query in (
            (DELIVERY_ATTEMPTS, {"at": {"$lt": before}}),
            (DELIVERIES, {"created_at": {"$lt": before}, "state": {"$ne": "pending"}}),
            (NOTIFY_EVENTS, {"created_at": {"$lt": before}}),
        ):
            result = await _call(lambda n=name, q=query: self._db[n].delete_many(q))  # type: ignore[misc]
            removed += result.deleted_count
        return removed
