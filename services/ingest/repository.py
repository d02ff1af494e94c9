"""ingest's MongoDB adapter: the lookups a send request needs (cached briefly in memory), the
idempotency records of keyed requests (ingest's own collection), and reads of `messages` (written
by status) and of billing's ledger.

Driver failures become DependencyUnavailable (503); a duplicate key becomes DuplicateMessage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.ingest.cache import MISSING, TtlCache
from services.ingest.conversations import (
    ConversationQuery,
    ThreadQuery,
    Window,
    cursor_time,
    latest_window,
    window_cache_seconds,
    window_of,
)
from services.ingest.core import ListQuery
from services.ingest.metrics import INSERT_BATCH, INSERT_DURATION
from shared.clock import Clock
from shared.collections import (
    ACCOUNTS,
    API_KEYS,
    BALANCES,
    CONVERSATIONS,
    IDEMPOTENCY_KEYS,
    INBOUND_MESSAGES,
    LEDGER,
    MEDIA,
    MESSAGES,
    PHONE_NUMBERS,
    TEMPLATES,
)
from shared.mongo import InsertBatcher, find_by_ids, unavailable

Doc = dict[str, Any]


class DuplicateMessage(Exception):
    """The (account, idempotency key) pair is already taken."""


class Directory(Protocol):
    """Who is asking and what they may use: documents written by the admin CLI and billing."""

    async def api_key(self, key_hash: str) -> Doc | None: ...
    async def account(self, account_id: str) -> Doc | None: ...
    async def phone_number(self, phone_number_id: str) -> Doc | None: ...
    async def template(self, waba_id: str, name: str, language: str) -> Doc | None: ...
    async def balance(self, account_id: str) -> Doc | None: ...
    async def access_token(self, phone_number_id: str) -> Doc | None:
        """The number's encrypted access token (`access_token_encrypted`), for pass-through
        calls to Meta."""
        ...


class IdempotencyStore(Protocol):
    async def insert(self, record: Doc) -> None:
        """Raises DuplicateMessage when the record's id is taken."""
        ...

    async def find(self, record_ids: list[str]) -> list[Doc]: ...


class MessageStore(Protocol):
    async def get(self, account_id: str, message_id: str) -> Doc | None: ...
    async def ledger_entries(self, message_id: str) -> tuple[Doc | None, Doc | None]:
        """Billing's reserve and settle entries of a message (read-only)."""
        ...

    async def ledger_entries_of(
        self, message_ids: list[str]
    ) -> dict[str, tuple[Doc | None, Doc | None]]:
        """The reserve and settle entries of each message (a page's: at most 100)."""
        ...

    async def list(self, account_id: str, query: ListQuery) -> list[Doc]:
        """Newest first, up to query.limit + 1 documents."""
        ...


# Only the fields ingest reads; never the phone number's encrypted access token.
_PHONE_FIELDS = {"account_id": 1, "waba_id": 1, "portfolio_id": 1, "display_phone_number": 1}
_TEMPLATE_FIELDS = {"components_json": 0}


class MongoDirectory:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db

    async def _find_one(
        self, collection: str, _id: str, projection: dict[str, int] | None = None
    ) -> Doc | None:
        try:
            return await self._db[collection].find_one({"_id": _id}, projection)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def api_key(self, key_hash: str) -> Doc | None:
        return await self._find_one(
            API_KEYS, key_hash, {"account_id": 1, "revoked_at": 1, "rate_limit": 1}
        )

    async def account(self, account_id: str) -> Doc | None:
        return await self._find_one(
            ACCOUNTS, account_id, {"status": 1, "customer_service_window_check": 1, "rate_limit": 1}
        )

    async def phone_number(self, phone_number_id: str) -> Doc | None:
        return await self._find_one(PHONE_NUMBERS, phone_number_id, _PHONE_FIELDS)

    async def template(self, waba_id: str, name: str, language: str) -> Doc | None:
        return await self._find_one(TEMPLATES, f"{waba_id}:{name}:{language}", _TEMPLATE_FIELDS)

    async def balance(self, account_id: str) -> Doc | None:
        # in_flight and in_flight_limit: billing's count of the account's open reservations
        # and the cap it applies (in_flight.py).
        return await self._find_one(
            BALANCES,
            account_id,
            {"available": 1, "reserved": 1, "currency": 1, "in_flight": 1, "in_flight_limit": 1},
        )

    async def access_token(self, phone_number_id: str) -> Doc | None:
        return await self._find_one(
            PHONE_NUMBERS, phone_number_id, {"account_id": 1, "access_token_encrypted": 1}
        )


class CachedDirectory:
    """A Directory that remembers answers for `ttl_seconds` (revocation, suspension and template
    changes take effect within it). Balances are cached too, but only a balance that passes the
    pre-check is trusted: `balance(fresh=True)` re-reads before a request is refused, and
    `note_spent` lowers the cached figure by what this process accepted since."""

    def __init__(self, source: Directory, clock: Clock, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._api_keys: TtlCache[str, Doc | None] = TtlCache(clock, ttl_seconds)
        self._accounts: TtlCache[str, Doc | None] = TtlCache(clock, ttl_seconds)
        self._phones: TtlCache[str, Doc | None] = TtlCache(clock, ttl_seconds)
        self._templates: TtlCache[tuple[str, str, str], Doc | None] = TtlCache(clock, ttl_seconds)
        self._balances: TtlCache[str, Doc | None] = TtlCache(clock, ttl_seconds)
        self._tokens: TtlCache[str, Doc | None] = TtlCache(clock, ttl_seconds)
        self._loading: dict[tuple[int, Any], asyncio.Future[Doc | None]] = {}

    async def api_key(self, key_hash: str) -> Doc | None:
        return await self._cached(self._api_keys, key_hash, self._source.api_key, key_hash)

    async def account(self, account_id: str) -> Doc | None:
        return await self._cached(self._accounts, account_id, self._source.account, account_id)

    async def phone_number(self, phone_number_id: str) -> Doc | None:
        return await self._cached(
            self._phones, phone_number_id, self._source.phone_number, phone_number_id
        )

    async def template(self, waba_id: str, name: str, language: str) -> Doc | None:
        return await self._cached(
            self._templates,
            (waba_id, name, language),
            self._source.template,
            waba_id,
            name,
            language,
        )

    async def balance(self, account_id: str, *, fresh: bool = False) -> Doc | None:
        return await self._cached(
            self._balances, account_id, self._fresh_balance, account_id, fresh=fresh
        )

    async def access_token(self, phone_number_id: str) -> Doc | None:
        return await self._cached(
            self._tokens, phone_number_id, self._source.access_token, phone_number_id
        )

    async def _fresh_balance(self, account_id: str) -> Doc | None:
        found = await self._source.balance(account_id)
        return dict(found) if found is not None else None  # note_spent changes the copy

    async def _cached(
        self,
        cache: TtlCache[Any, Doc | None],
        key: Any,
        load: Callable[..., Awaitable[Doc | None]],
        *args: str,
        fresh: bool = False,
    ) -> Doc | None:
        """The cached answer, or one load shared by every request that misses meanwhile: when an
        entry expires under load, the concurrent requests wait for one lookup instead of each
        sending its own. `fresh` reads anew: it never joins a load that started before it."""
        if not fresh:
            hit = cache.get(key)
            if hit is not MISSING:
                return hit  # type: ignore[return-value]
        flight_key = (id(cache), key)
        loading = self._loading.get(flight_key)
        if loading is None or fresh:
            loading = asyncio.ensure_future(load(*args))
            self._loading[flight_key] = loading
            try:
                value = await asyncio.shield(loading)
            finally:
                if self._loading.get(flight_key) is loading:
                    del self._loading[flight_key]
            cache.put(key, value)
            return value
        return await asyncio.shield(loading)

    def note_spent(self, account_id: str, amount: int) -> None:
        """This process accepted a message of the account: until the balance is read again,
        its cached figure has `amount` less available and one more message in flight."""
        cached = self._balances.get(account_id)
        if isinstance(cached, dict):
            cached["available"] = int(cached.get("available", 0)) - amount
            cached["in_flight"] = int(cached.get("in_flight") or 0) + 1

    @property
    def ttl_seconds(self) -> float:
        """How long a looked-up document is reused."""
        return self._ttl


class MongoIdempotencyStore:
    """`insert` is a group commit (shared.mongo.InsertBatcher): records that arrive while one
    insert_many is in flight go together in the next one, and each request still learns its own
    outcome."""

    def __init__(self, db: AsyncDatabase[Doc], max_batch: int = 500) -> None:
        self._records = db[IDEMPOTENCY_KEYS]
        self._inserts = InsertBatcher(
            self._records, max_batch=max_batch, observe_batch=INSERT_BATCH.observe
        )

    async def insert(self, record: Doc) -> None:
        started = time.perf_counter()
        try:
            inserted = await self._inserts.insert(record)
        finally:
            INSERT_DURATION.observe(time.perf_counter() - started)
        if not inserted:
            raise DuplicateMessage(record["_id"])

    async def created_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Ids of up to `limit` records created before `cutoff` (the sweeper's page)."""
        try:
            docs = await (
                self._records.find({"created_at": {"$lt": cutoff}}, {"_id": 1})
                .limit(limit)
                .to_list(None)
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return [str(doc["_id"]) for doc in docs]

    async def delete(self, record_ids: list[str]) -> int:
        try:
            result = await self._records.delete_many({"_id": {"$in": record_ids}})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return result.deleted_count

    async def find(self, record_ids: list[str]) -> list[Doc]:
        # One lookup by _id each: FerretDB pushes only a lone _id filter down to an index.
        try:
            found = [await self._records.find_one({"_id": record_id}) for record_id in record_ids]
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return [record for record in found if record is not None]


# The ledger entries that can settle a message, the later first wins: billing's settle (a charge,
# or a release), and its late charge when Meta billed a delivery after a guessed release
# (services/billing/core.py).
_SETTLING = ("settle", "late-charge")


class MongoMessageStore:
    """Reads of `messages` (status writes them) and of billing's ledger."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._messages = db[MESSAGES]
        self._ledger = db[LEDGER]  # billing's; read only, for a message's price

    async def get(self, account_id: str, message_id: str) -> Doc | None:
        # By _id alone, then the owner check here: FerretDB pushes only a lone _id filter down
        # to an index; adding account_id to the filter would scan every message.
        try:
            doc = await self._messages.find_one({"_id": message_id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return doc if doc is not None and doc.get("account_id") == account_id else None

    async def ledger_entries(self, message_id: str) -> tuple[Doc | None, Doc | None]:
        """The message's reservation and the entry that settled it (see _SETTLING)."""
        return (await self.ledger_entries_of([message_id]))[message_id]

    async def ledger_entries_of(
        self, message_ids: list[str]
    ) -> dict[str, tuple[Doc | None, Doc | None]]:
        # find_by_ids: one `$in` on MongoDB, concurrent _id lookups on FerretDB (whose `$in`
        # scans the whole ledger: 0.74 s for a page of 50 messages at 20,000 entries, measured).
        kinds = ("reserve", *_SETTLING)
        try:
            found = await find_by_ids(
                self._ledger, [f"{m}:{kind}" for m in message_ids for kind in kinds]
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        by_id = {doc["_id"]: doc for doc in found}
        entries: dict[str, tuple[Doc | None, Doc | None]] = {}
        for message_id in message_ids:
            reserve, settle, late_charge = (by_id.get(f"{message_id}:{kind}") for kind in kinds)
            entries[message_id] = (reserve, late_charge or settle)
        return entries

    async def list(self, account_id: str, query: ListQuery) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}]
        if query.status is not None:
            conditions.append({"status": query.status})
        if query.since is not None:
            conditions.append({"created_at": {"$gte": query.since}})
        if query.until is not None:
            conditions.append({"created_at": {"$lt": query.until}})
        if query.after is not None:
            created_at, message_id = query.after
            conditions.append(
                {
                    "$or": [
                        {"created_at": {"$lt": created_at}},
                        {"created_at": created_at, "_id": {"$lt": message_id}},
                    ]
                }
            )
        try:
            cursor = (
                self._messages.find({"$and": conditions}, {"content": 0})
                .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
                .limit(query.limit + 1)
            )
            return await cursor.to_list(None)
        except PyMongoError as exc:
            raise unavailable(exc) from exc


class Inbox(Protocol):
    """Reads of what status writes about contacts (`conversations`, `inbound_messages`) and of
    our own sends to them (`messages`)."""

    async def conversation(self, conversation_id: str) -> Doc | None: ...
    async def inbound_message(self, wamid: str) -> Doc | None: ...
    async def inbound_with_media(self, media_id: str) -> Doc | None:
        """An inbound message that carried this media id (any, the owner is checked by the
        caller)."""
        ...

    async def conversations(self, account_id: str, query: ConversationQuery) -> list[Doc]:
        """The account's contacts, latest message first, up to query.limit + 1."""
        ...

    async def last_inbound(
        self, account_id: str, phone_number_id: str, wa_id: str
    ) -> Doc | None: ...
    async def last_outbound(
        self, account_id: str, phone_number_id: str, recipient: str
    ) -> Doc | None: ...
    async def thread_inbound(self, account_id: str, query: ThreadQuery) -> list[Doc]:
        """A contact's inbound messages and echoes past the cursor in the query's order, up
        to query.limit + 1."""
        ...

    async def thread_outbound(self, account_id: str, query: ThreadQuery) -> list[Doc]:
        """Our sends to the contact past the cursor in the query's order, up to limit + 1."""
        ...


_INBOUND_FIELDS = {"account_id": 1, "phone_number_id": 1, "direction": 1}


class MongoInbox:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._conversations = db[CONVERSATIONS]
        self._inbound = db[INBOUND_MESSAGES]
        self._messages = db[MESSAGES]

    async def conversation(self, conversation_id: str) -> Doc | None:
        try:
            return await self._conversations.find_one(
                {"_id": conversation_id}, {"window_expires_at": 1}
            )
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def inbound_message(self, wamid: str) -> Doc | None:
        try:
            return await self._inbound.find_one({"_id": wamid}, _INBOUND_FIELDS)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def inbound_with_media(self, media_id: str) -> Doc | None:
        try:
            return await self._inbound.find_one({"media_id": media_id}, _INBOUND_FIELDS)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def conversations(self, account_id: str, query: ConversationQuery) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}]
        if query.after is not None:
            conditions.append(
                {
                    "$or": [
                        {"last_message_at": {"$lt": query.after.at}},
                        {"last_message_at": query.after.at, "_id": {"$lt": query.after.id}},
                    ]
                }
            )
        return await self._page(
            self._conversations,
            {"$and": conditions},
            [("last_message_at", DESCENDING), ("_id", DESCENDING)],
            query.limit + 1,
        )

    async def last_inbound(self, account_id: str, phone_number_id: str, wa_id: str) -> Doc | None:
        found = await self._page(
            self._inbound,
            {"account_id": account_id, "wa_id": wa_id, "phone_number_id": phone_number_id},
            [("sent_at", DESCENDING), ("_id", DESCENDING)],
            1,
        )
        return found[0] if found else None

    async def last_outbound(
        self, account_id: str, phone_number_id: str, recipient: str
    ) -> Doc | None:
        found = await self._page(
            self._messages,
            {"account_id": account_id, "recipient": recipient, "phone_number_id": phone_number_id},
            [("created_at", DESCENDING), ("_id", DESCENDING)],
            1,
        )
        return found[0] if found else None

    async def thread_inbound(self, account_id: str, query: ThreadQuery) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}, {"wa_id": query.wa_id}]
        if query.phone_number_id is not None:
            conditions.append({"phone_number_id": query.phone_number_id})
        if query.after is not None:
            conditions.append(_past("sent_at", query.after.at, query.after.id, query.newest_first))
        order = DESCENDING if query.newest_first else ASCENDING
        return await self._page(
            self._inbound,
            {"$and": conditions},
            [("sent_at", order), ("_id", order)],
            query.limit + 1,
        )

    async def thread_outbound(self, account_id: str, query: ThreadQuery) -> list[Doc]:
        conditions: list[Doc] = [{"account_id": account_id}, {"recipient": query.recipient}]
        if query.phone_number_id is not None:
            conditions.append({"phone_number_id": query.phone_number_id})
        if query.after is not None:
            conditions.append(
                _past("created_at", cursor_time(query.after), query.after.id, query.newest_first)
            )
        order = DESCENDING if query.newest_first else ASCENDING
        return await self._page(
            self._messages,
            {"$and": conditions},
            [("created_at", order), ("_id", order)],
            query.limit + 1,
        )

    @staticmethod
    async def _page(
        collection: Any, query: Doc, sort: list[tuple[str, int]], limit: int
    ) -> list[Doc]:
        try:
            return await collection.find(query).sort(sort).limit(limit).to_list(None)
        except PyMongoError as exc:
            raise unavailable(exc) from exc


def _past(field: str, at: Any, item_id: str, newest_first: bool) -> Doc:
    """Documents after the cursor (at, id) in the page's order."""
    op = "$lt" if newest_first else "$gt"
    return {"$or": [{field: {op: at}}, {field: at, "_id": {op: item_id}}]}


class CachedWindows:
    """The customer-service window of (number, contact), from `conversations`, remembered: an
    open window until it closes (status only ever moves it forward), a closed one for
    `closed_seconds` (the user may write any second)."""

    def __init__(self, inbox: Inbox, clock: Clock, closed_seconds: float) -> None:
        self._inbox = inbox
        self._clock = clock
        self._closed_seconds = closed_seconds
        self._cache: TtlCache[str, Window] = TtlCache(clock, closed_seconds)

    async def window(self, phone_number_id: str, wa_ids: list[str]) -> Window:
        """The longest-lasting window of the contact under any of its wa_id spellings."""
        now_ms = self._clock.now_ms()
        windows = []
        for wa_id in wa_ids:
            key = f"{phone_number_id}:{wa_id}"
            hit = self._cache.get(key)
            if isinstance(hit, Window) and (not hit.open or now_ms < (hit.expires_at or 0)):
                windows.append(hit)
                continue
            window = window_of(await self._inbox.conversation(key), now_ms)
            self._cache.put(key, window, window_cache_seconds(window, now_ms, self._closed_seconds))
            windows.append(window)
        best = latest_window(windows)
        return Window(best.expires_at is not None and now_ms < best.expires_at, best.expires_at)


class MediaStore(Protocol):
    """ingest's `media` collection: the files clients uploaded through us."""

    async def insert(self, doc: Doc) -> None: ...
    async def get(self, media_id: str) -> Doc | None: ...
    async def mark_deleted(self, media_id: str, now_ms: int) -> None: ...


class MongoMediaStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._media = db[MEDIA]

    async def insert(self, doc: Doc) -> None:
        try:
            # Meta's media ids are unique; an id seen again (a re-upload answered with the same
            # id) is the same file of the same account: the newer record replaces it.
            await self._media.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def get(self, media_id: str) -> Doc | None:
        try:
            return await self._media.find_one({"_id": media_id})
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    async def mark_deleted(self, media_id: str, now_ms: int) -> None:
        try:
            await self._media.update_one({"_id": media_id}, {"$set": {"deleted_at": now_ms}})
        except PyMongoError as exc:
            raise unavailable(exc) from exc
