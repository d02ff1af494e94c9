"""In-memory stand-ins for ingest's adapters, and a small world of two accounts to test with.

Every contact has an open customer-service window unless a test says otherwise
(`world.inbox.windows_open_by_default = False`, then `world.inbox.user_wrote(...)`): the window
rule has its own tests, and the others send free-form messages freely.

The idempotency store keeps the unique `_id` of the real `idempotency_keys` collection;
tests/integration/ingest/test_store_contract.py runs the same checks against the real database.
The message store stands for `messages`, which status writes: `World.store_published()` plays
status, making the documents of the events ingest published.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from services.ingest.app import create_app
from services.ingest.cache import RecentMessages
from services.ingest.calls import Calls
from services.ingest.contact_handlers import ContactHandlers
from services.ingest.conversations import WINDOW_MS, ConversationQuery, Cursor, ThreadQuery
from services.ingest.core import ListQuery, hash_api_key, to_ms
from services.ingest.endpoint_handlers import EndpointHandlers
from services.ingest.handlers import Ingest
from services.ingest.limiter import RequestLimiter
from services.ingest.meta_client import Download, MetaAnswer
from services.ingest.passthrough import PassThroughPacer
from services.ingest.rate_limits import Rate
from services.ingest.repository import CachedDirectory, CachedWindows, DuplicateMessage
from services.ingest.send_rules import SendRules
from shared import contact_lists
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable
from shared.message_docs import message_document
from shared.messages import NotifyRequested, SendRequested, SuppressionChangeRequested
from shared.pricing import load_rate_card
from shared.secrets import TokenVault, new_key

KEY_A = "hw_live_" + "a" * 32
KEY_B = "hw_live_" + "b" * 32
KEY_REVOKED = "hw_live_" + "r" * 32
KEY_SUSPENDED = "hw_live_" + "s" * 32
PHONE_A = "109731225428301"
PHONE_B = "118243906275101"
WABA_A = "102290129340398"
WABA_B = "117552438690213"


class FakeDirectory:
    def __init__(self) -> None:
        self.api_keys: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.phones: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.balances: dict[str, dict[str, Any]] = {}
        self.reads = 0

    async def api_key(self, key_hash: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.api_keys.get(key_hash))

    async def account(self, account_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.accounts.get(account_id))

    async def phone_number(self, phone_number_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.phones.get(phone_number_id))

    async def template(self, waba_id: str, name: str, language: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.templates.get(f"{waba_id}:{name}:{language}"))

    async def balance(self, account_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.balances.get(account_id))

    async def access_token(self, phone_number_id: str) -> dict[str, Any] | None:
        self.reads += 1
        phone = self.phones.get(phone_number_id)
        return (
            {
                "account_id": phone["account_id"],
                "access_token_encrypted": phone.get("access_token_encrypted"),
            }
            if phone
            else None
        )


class FakeIdempotencyStore:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.fail = False

    async def insert(self, record: dict[str, Any]) -> None:
        if self.fail:
            raise DependencyUnavailable("database unavailable", details={"dependency": "mongodb"})
        if record["_id"] in self.records:
            raise DuplicateMessage(record["_id"])
        self.records[record["_id"]] = copy.deepcopy(record)

    async def find(self, record_ids: list[str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.records[i]) for i in record_ids if i in self.records]


class FakeMessageStore:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.ledger: dict[str, dict[str, Any]] = {}  # billing's entries, by _id
        self.ledger_reads = 0  # calls of ledger_entries_of: one per page

    async def get(self, account_id: str, message_id: str) -> dict[str, Any] | None:
        doc = self.docs.get(message_id)
        return copy.deepcopy(doc) if doc and doc["account_id"] == account_id else None

    async def ledger_entries(
        self, message_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return self._entries(message_id)

    def _entries(self, m: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        # A late charge supersedes the release under `:settle` (as MongoMessageStore does).
        settled = self.ledger.get(f"{m}:late-charge") or self.ledger.get(f"{m}:settle")
        return self.ledger.get(f"{m}:reserve"), settled

    async def ledger_entries_of(
        self, message_ids: list[str]
    ) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        self.ledger_reads += 1
        return {m: self._entries(m) for m in message_ids}

    async def list(self, account_id: str, query: ListQuery) -> list[dict[str, Any]]:
        docs = [d for d in self.docs.values() if d["account_id"] == account_id]
        if query.status:
            docs = [d for d in docs if d["status"] == query.status]
        if query.since:
            docs = [d for d in docs if d["created_at"] >= query.since]
        if query.until:
            docs = [d for d in docs if d["created_at"] < query.until]
        if query.after:
            after = (to_ms(query.after[0]), query.after[1])
            docs = [d for d in docs if (to_ms(d["created_at"]), d["_id"]) < after]
        docs.sort(key=lambda d: (to_ms(d["created_at"]), d["_id"]), reverse=True)
        return [copy.deepcopy(d) for d in docs[: query.limit + 1]]


class FakeInbox:
    """status's `conversations` and `inbound_messages`, and (through the message store) our
    sends. tests/integration/ingest/test_store_contract.py runs the same reads against the
    real database."""

    def __init__(self, clock: FakeClock, messages: FakeMessageStore) -> None:
        self.clock = clock
        self.messages = messages
        self.conversation_docs: dict[str, dict[str, Any]] = {}
        self.inbound: dict[str, dict[str, Any]] = {}
        self.windows_open_by_default = True
        self.conversation_reads = 0

    def user_wrote(
        self,
        account_id: str,
        phone_number_id: str,
        wa_id: str,
        *,
        ago_seconds: float = 60,
        wamid: str | None = None,
        message_type: str = "text",
        content: Any = None,
        media_id: str | None = None,
        name: str = "Ana",
    ) -> dict[str, Any]:
        """What status stores when the user writes (`ago_seconds` before now)."""
        sent_at = self.clock.now_ms() - round(ago_seconds * 1000)
        wamid = wamid or f"wamid.IN{len(self.inbound) + 1:04d}"
        item = {
            "from": wa_id,
            "id": wamid,
            "timestamp": str(sent_at // 1000),
            "type": message_type,
            message_type: content if content is not None else {"body": "hello"},
        }
        doc = {
            "_id": wamid,
            "account_id": account_id,
            "waba_id": "w",
            "phone_number_id": phone_number_id,
            "wa_id": wa_id,
            "direction": "inbound",
            "type": message_type,
            "content": orjson.dumps(item).decode(),
            "sent_at": sent_at,
            "received_at": sent_at + 500,
            "opens_window": True,
            "contact_name": name,
        }
        if media_id is not None:
            doc["media_id"] = media_id
        self.inbound[wamid] = doc
        key = f"{phone_number_id}:{wa_id}"
        conversation = self.conversation_docs.setdefault(
            key,
            {
                "_id": key,
                "account_id": account_id,
                "phone_number_id": phone_number_id,
                "wa_id": wa_id,
                "contact_name": name,
            },
        )
        conversation["last_message_at"] = max(conversation.get("last_message_at", 0), sent_at)
        conversation["last_inbound_at"] = max(conversation.get("last_inbound_at", 0), sent_at)
        conversation["window_expires_at"] = max(
            conversation.get("window_expires_at", 0), sent_at + WINDOW_MS
        )
        return doc

    async def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        self.conversation_reads += 1
        found = self.conversation_docs.get(conversation_id)
        if found is None and self.windows_open_by_default:
            return {"_id": conversation_id, "window_expires_at": self.clock.now_ms() + 3600_000}
        return copy.deepcopy(found)

    async def inbound_message(self, wamid: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.inbound.get(wamid))

    async def inbound_with_media(self, media_id: str) -> dict[str, Any] | None:
        found = [d for d in self.inbound.values() if d.get("media_id") == media_id]
        return copy.deepcopy(found[0]) if found else None

    async def conversations_of(self, account_id: str) -> list[dict[str, Any]]:
        return [c for c in self.conversation_docs.values() if c["account_id"] == account_id]

    async def conversations(
        self, account_id: str, query: ConversationQuery
    ) -> list[dict[str, Any]]:
        docs = sorted(
            await self.conversations_of(account_id),
            key=lambda c: (c.get("last_message_at", 0), c["_id"]),
            reverse=True,
        )
        if query.after is not None:
            docs = [
                c
                for c in docs
                if (c.get("last_message_at", 0), c["_id"]) < (query.after.at, query.after.id)
            ]
        return copy.deepcopy(docs[: query.limit + 1])

    async def last_inbound(
        self, account_id: str, phone_number_id: str, wa_id: str
    ) -> dict[str, Any] | None:
        docs = [
            d
            for d in self.inbound.values()
            if d["account_id"] == account_id
            and d["phone_number_id"] == phone_number_id
            and d["wa_id"] == wa_id
        ]
        return copy.deepcopy(max(docs, key=lambda d: (d["sent_at"], d["_id"]), default=None))

    async def last_outbound(
        self, account_id: str, phone_number_id: str, recipient: str
    ) -> dict[str, Any] | None:
        docs = [
            d
            for d in self.messages.docs.values()
            if d["account_id"] == account_id
            and d["phone_number_id"] == phone_number_id
            and d["recipient"] == recipient
        ]
        return copy.deepcopy(
            max(docs, key=lambda d: (to_ms(d["created_at"]), d["_id"]), default=None)
        )

    async def thread_inbound(self, account_id: str, query: ThreadQuery) -> list[dict[str, Any]]:
        docs = [
            d
            for d in self.inbound.values()
            if d["account_id"] == account_id
            and d["wa_id"] == query.wa_id
            and query.phone_number_id in (None, d["phone_number_id"])
        ]
        return _past(docs, lambda d: (d["sent_at"], d["_id"]), query)

    async def thread_outbound(self, account_id: str, query: ThreadQuery) -> list[dict[str, Any]]:
        docs = [
            d
            for d in self.messages.docs.values()
            if d["account_id"] == account_id
            and d["recipient"] == query.recipient
            and query.phone_number_id in (None, d["phone_number_id"])
        ]
        return _past(docs, lambda d: (to_ms(d["created_at"]), d["_id"]), query)


def _past(docs: list[dict[str, Any]], key: Any, query: ThreadQuery) -> list[dict[str, Any]]:
    docs = sorted(docs, key=key, reverse=query.newest_first)
    if query.after is not None:
        cursor = (query.after.at, query.after.id)
        docs = [d for d in docs if (key(d) < cursor if query.newest_first else key(d) > cursor)]
    return copy.deepcopy(docs[: query.limit + 1])


class FakeMediaStore:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def insert(self, doc: dict[str, Any]) -> None:
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def get(self, media_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.docs.get(media_id))

    async def mark_deleted(self, media_id: str, now_ms: int) -> None:
        if media_id in self.docs:
            self.docs[media_id]["deleted_at"] = now_ms


TOKEN_A = "EAA-token-of-a"
TOKEN_B = "EAA-token-of-b"


class FakeMeta:
    """Meta's Graph API for pass-through calls: records each call with the token it carried;
    media uploaded here (or `received`) can be looked up, downloaded and deleted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []  # (call, token, what)
        self.files: dict[str, tuple[str, bytes]] = {}  # media id -> (mime, bytes)
        self.refuse: MetaAnswer | None = None
        self.cut_download_after: int | None = None  # bytes, then the connection drops
        self.next_id = 900_000_000_000_001

    def received(self, media_id: str, mime: str, data: bytes) -> None:
        self.files[media_id] = (mime, data)

    async def mark_read(self, phone_number_id: str, token: str, body: dict[str, Any]) -> MetaAnswer:
        self.calls.append(("read", token, {"phone_number_id": phone_number_id, **body}))
        return self.refuse or MetaAnswer(200, {"success": True})

    async def upload(
        self,
        phone_number_id: str,
        token: str,
        file: IO[bytes],
        *,
        mime_type: str,
        filename: str,
        extra: dict[str, str],
    ) -> MetaAnswer:
        data = file.read()
        self.calls.append(
            (
                "upload",
                token,
                {
                    "phone_number_id": phone_number_id,
                    "mime_type": mime_type,
                    "filename": filename,
                    "size": len(data),
                    **extra,
                },
            )
        )
        if self.refuse:
            return self.refuse
        media_id = str(self.next_id)
        self.next_id += 1
        self.files[media_id] = (mime_type, data)
        return MetaAnswer(200, {"id": media_id})

    async def media_info(self, media_id: str, token: str) -> MetaAnswer:
        self.calls.append(("media_url", token, media_id))
        if self.refuse:
            return self.refuse
        if media_id not in self.files:
            return MetaAnswer(
                400,
                {
                    "error": {
                        "message": f"Unsupported get request. Object with ID '{media_id}' does not "
                        "exist",
                        "type": "GraphMethodException",
                        "code": 100,
                        "error_subcode": 33,
                        "fbtrace_id": "x",
                    }
                },
            )
        mime, data = self.files[media_id]
        return MetaAnswer(
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"https://lookaside.test/dl/{media_id}",
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": str(len(data)),
                "id": media_id,
            },
        )

    async def delete_media(self, media_id: str, token: str) -> MetaAnswer:
        self.calls.append(("delete_media", token, media_id))
        if self.refuse:
            return self.refuse
        self.files.pop(media_id, None)
        return MetaAnswer(200, {"success": True})

    @asynccontextmanager
    async def download(self, url: str, token: str) -> AsyncIterator[Download]:
        self.calls.append(("download", token, url))
        media_id = url.rsplit("/", 1)[-1]
        mime, data = self.files[media_id]

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 1000):
                if self.cut_download_after is not None and i >= self.cut_download_after:
                    raise DependencyUnavailable(
                        "Meta did not answer (ClientPayloadError)", details={"dependency": "meta"}
                    )
                yield data[i : i + 1000]

        yield Download(200, mime, len(data), chunks())


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[SendRequested] = []
        self.notify_requests: list[NotifyRequested] = []
        self.suppression_requests: list[SuppressionChangeRequested] = []
        self.fail = False

    async def send_requested(self, event: SendRequested) -> None:
        if self.fail:
            raise DependencyUnavailable("broker unavailable", details={"dependency": "kafka"})
        self.events.append(event)

    async def notify_requested(self, event: NotifyRequested) -> None:
        if self.fail:
            raise DependencyUnavailable("broker unavailable", details={"dependency": "kafka"})
        self.notify_requests.append(event)

    async def suppression_change_requested(self, event: SuppressionChangeRequested) -> None:
        if self.fail:
            raise DependencyUnavailable("broker unavailable", details={"dependency": "kafka"})
        self.suppression_requests.append(event)


class FakeContactStore:
    """`account_holds` (guard's), `suppressions` (status's), and ingest's `blocked_recipients`
    and `opt_out_keywords`. tests/integration/trust/ runs the API against the real database."""

    def __init__(self) -> None:
        self.holds: dict[str, dict[str, Any]] = {}
        self.blocked_docs: dict[str, dict[str, Any]] = {}
        self.suppression_docs: dict[str, dict[str, Any]] = {}
        self.keyword_docs: dict[str, dict[str, Any]] = {}
        self.reads = 0

    async def hold(self, account_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.holds.get(account_id))

    async def blocked(self, blocked_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.blocked_docs.get(blocked_id))

    async def suppression(self, suppression_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.suppression_docs.get(suppression_id))

    async def suppressions(
        self, account_id: str, phone_number_id: str | None, limit: int, after: Cursor | None
    ) -> list[dict[str, Any]]:
        docs = [
            d
            for d in self.suppression_docs.values()
            if d["account_id"] == account_id
            and d["suppressed"] is True
            and phone_number_id in (None, d["phone_number_id"])
        ]
        return _newest_first(docs, "at", limit, after)

    async def blocked_page(
        self, account_id: str, limit: int, after: Cursor | None
    ) -> list[dict[str, Any]]:
        docs = [
            d
            for d in self.blocked_docs.values()
            if d["account_id"] == account_id and not d.get("marker")
        ]
        return _newest_first(docs, "created_at", limit, after)

    async def block(self, doc: dict[str, Any]) -> bool:
        marker = contact_lists.blocks_marker_doc(doc["account_id"], doc["created_at"])
        self.blocked_docs.setdefault(marker["_id"], marker)
        if doc["_id"] in self.blocked_docs:
            return False
        self.blocked_docs[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def unblock(self, blocked_id: str) -> bool:
        return self.blocked_docs.pop(blocked_id, None) is not None

    async def keywords(self, account_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.keyword_docs.get(account_id))

    async def replace_keywords(self, doc: dict[str, Any]) -> None:
        self.keyword_docs[doc["_id"]] = copy.deepcopy(doc)


class FakeEndpointStore:
    """`webhook_endpoints` (ingest's), and notify's `endpoint_states` and `delivery_attempts`
    as notify would have written them. tests/integration/ingest/test_webhook_endpoints.py runs
    the same API against the real database."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.state_docs: dict[str, dict[str, Any]] = {}
        self.attempt_docs: dict[str, dict[str, Any]] = {}

    async def insert(self, doc: dict[str, Any]) -> None:
        assert doc["_id"] not in self.endpoints
        self.endpoints[doc["_id"]] = copy.deepcopy(doc)

    async def get(self, endpoint_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.endpoints.get(endpoint_id))

    async def count_in_use(self, account_id: str) -> int:
        return sum(
            1
            for d in self.endpoints.values()
            if d["account_id"] == account_id and d.get("deleted_at") is None
        )

    async def page(self, account_id: str, limit: int, after: Cursor | None) -> list[dict[str, Any]]:
        docs = [
            d
            for d in self.endpoints.values()
            if d["account_id"] == account_id and d.get("deleted_at") is None
        ]
        return _newest_first(docs, "created_at", limit, after)

    async def update(self, endpoint_id: str, changes: dict[str, Any]) -> None:
        if endpoint_id in self.endpoints:
            self.endpoints[endpoint_id].update(copy.deepcopy(changes))

    async def states(self, endpoint_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: copy.deepcopy(self.state_docs[i]) for i in endpoint_ids if i in self.state_docs}

    async def attempts(
        self, endpoint_id: str, limit: int, after: Cursor | None
    ) -> list[dict[str, Any]]:
        docs = [d for d in self.attempt_docs.values() if d["endpoint_id"] == endpoint_id]
        return _newest_first(docs, "at", limit, after)


def _newest_first(
    docs: list[dict[str, Any]], field: str, limit: int, after: Cursor | None
) -> list[dict[str, Any]]:
    docs = sorted(docs, key=lambda d: (d[field], d["_id"]), reverse=True)
    if after is not None:
        docs = [d for d in docs if (d[field], d["_id"]) < (after.at, after.id)]
    return copy.deepcopy(docs[: limit + 1])


def template(
    waba_id: str,
    name: str,
    *,
    language: str = "en_US",
    category: str = "UTILITY",
    status: str = "APPROVED",
    body_params: list[str] | None = None,
    parameter_format: str = "POSITIONAL",
    header_format: str | None = None,
    header_params: list[str] | None = None,
    button_params: list[dict[str, int]] | None = None,
) -> dict[str, Any]:
    return {
        "_id": f"{waba_id}:{name}:{language}",
        "waba_id": waba_id,
        "name": name,
        "language": language,
        "category": category,
        "status": status,
        "parameter_format": parameter_format,
        "header_format": header_format,
        "header_params": header_params or [],
        "body_params": body_params or [],
        "button_params": button_params or [],
    }


VAULT = TokenVault(new_key())


def two_accounts() -> FakeDirectory:
    """acc_a and acc_b with a number and templates each; a revoked key; a suspended account."""
    d = FakeDirectory()
    d.accounts = {
        "acc_a": {"_id": "acc_a", "status": "active"},
        "acc_b": {"_id": "acc_b", "status": "active"},
        "acc_s": {"_id": "acc_s", "status": "suspended"},
    }
    d.api_keys = {
        hash_api_key(KEY_A): {"account_id": "acc_a", "revoked_at": None},
        hash_api_key(KEY_B): {"account_id": "acc_b", "revoked_at": None},
        hash_api_key(KEY_REVOKED): {"account_id": "acc_a", "revoked_at": "2026-01-01"},
        hash_api_key(KEY_SUSPENDED): {"account_id": "acc_s", "revoked_at": None},
    }
    d.phones = {
        PHONE_A: {
            "_id": PHONE_A,
            "account_id": "acc_a",
            "waba_id": WABA_A,
            "portfolio_id": "880011223344556",
            "display_phone_number": "15550001001",
            "access_token_encrypted": VAULT.encrypt(TOKEN_A),
        },
        PHONE_B: {
            "_id": PHONE_B,
            "account_id": "acc_b",
            "waba_id": WABA_B,
            "portfolio_id": "880011223344557",
            "display_phone_number": "15550002001",
            "access_token_encrypted": VAULT.encrypt(TOKEN_B),
        },
    }
    for t in (
        template(
            WABA_A,
            "order_confirmation",
            body_params=["1", "2"],
            header_format="IMAGE",
            button_params=[{"index": 0, "count": 1}],
        ),
        template(
            WABA_A,
            "reservation_confirmation",
            parameter_format="NAMED",
            body_params=["number_of_guests", "day"],
        ),
        template(
            WABA_A,
            "summer_sale",
            category="MARKETING",
            body_params=["1", "2"],
            header_format="TEXT",
        ),
        template(
            WABA_A, "holiday_promo", category="MARKETING", status="PENDING", body_params=["1"]
        ),
        template(WABA_A, "delivery_update", status="PAUSED", body_params=["1"]),
        template(WABA_B, "appointment_reminder", body_params=["1", "2"]),
    ):
        d.templates[t["_id"]] = t
    d.balances = {
        "acc_a": {"available": 50_000_000, "reserved": 0, "currency": "USD"},
        "acc_b": {"available": 50_000_000, "reserved": 0, "currency": "USD"},
    }
    return d


class World:
    """An ingest app over fakes, served in-process, with a fake clock."""

    def __init__(
        self,
        ttl_seconds: float = 5.0,
        *,
        pace: tuple[float, int, float] = (10, 20, 1),
        window_closed_cache_seconds: float = 1.0,
        send_rules_cache_seconds: float = 2.0,
        rate_limit: Rate | None = None,
        key_rate_limit: Rate | None = None,
    ) -> None:
        """`rate_limit`: every account's request rate limit (None: no limits at all)."""
        self.clock = FakeClock()
        self.directory = two_accounts()
        self.idempotency = FakeIdempotencyStore()
        self.messages = FakeMessageStore()
        self.publisher = FakePublisher()
        self.inbox = FakeInbox(self.clock, self.messages)
        self.media = FakeMediaStore()
        self.meta = FakeMeta()
        self.slept: list[float] = []
        self.contacts = FakeContactStore()
        self.send_rules = SendRules(self.contacts, self.clock, send_rules_cache_seconds)
        self.ingest = Ingest(
            directory=CachedDirectory(self.directory, self.clock, ttl_seconds),
            idempotency=self.idempotency,
            messages=self.messages,
            recent=RecentMessages(self.clock, 30.0),
            publisher=self.publisher,
            clock=self.clock,
            rate_card=load_rate_card(),
            inbox=self.inbox,
            windows=CachedWindows(self.inbox, self.clock, window_closed_cache_seconds),
            send_rules=self.send_rules,
        )
        self.calls = Calls(
            ingest=self.ingest,
            media=self.media,
            meta=self.meta,
            vault=VAULT,
            pacer=PassThroughPacer(*pace),
            clock=self.clock,
            sleep=self.sleep,
        )
        self.endpoints = FakeEndpointStore()
        self.webhooks = EndpointHandlers(
            self.ingest, self.endpoints, self.publisher, VAULT, allow_loopback_http=True
        )
        self.contact_handlers = ContactHandlers(
            self.ingest, self.contacts, self.publisher, self.send_rules
        )
        self.limiter = (
            RequestLimiter(self.clock, account_default=rate_limit, key_default=key_rate_limit)
            if rate_limit is not None
            else None
        )
        self.app = create_app(
            self.calls, webhooks=self.webhooks, contacts=self.contact_handlers, limiter=self.limiter
        )

    async def sleep(self, seconds: float) -> None:
        """What a pass-through call waits for its turn: recorded, and the clock moves."""
        self.slept.append(seconds)
        self.clock.advance(seconds)

    def store_published(self) -> None:
        """Do what status does with every event published so far: make its document."""
        for event in self.publisher.events:
            self.messages.docs.setdefault(event.message_id, message_document(event))

    async def __aenter__(self) -> World:
        self.client = TestClient(TestServer(self.app))
        await self.client.start_server()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.close()


def text_body(**overrides: Any) -> dict[str, Any]:
    return {
        "from": PHONE_A,
        "to": "+447912345678",
        "type": "text",
        "text": {"body": "Your order shipped"},
        **overrides,
    }


def template_body(**overrides: Any) -> dict[str, Any]:
    return {
        "from": PHONE_A,
        "to": "+447912345678",
        "type": "template",
        "template": {
            "name": "reservation_confirmation",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
                        {"type": "text", "parameter_name": "day", "text": "Saturday"},
                    ],
                }
            ],
        },
        **overrides,
    }


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
