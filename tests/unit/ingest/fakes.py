"""In-memory stand-ins for ingest's adapters, and a small world of two accounts to test with.

The idempotency store keeps the unique `_id` of the real `idempotency_keys` collection;
tests/integration/ingest/test_store_contract.py runs the same checks against the real database.
The message store stands for `messages`, which status writes: `World.store_published()` plays
status, making the documents of the events ingest published.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from services.ingest.app import create_app
from services.ingest.cache import RecentMessages
from services.ingest.core import ListQuery, hash_api_key, to_ms
from services.ingest.handlers import Ingest
from services.ingest.repository import CachedDirectory, DuplicateMessage
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable
from shared.message_docs import message_document
from shared.messages import SendRequested
from shared.pricing import load_rate_card

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

    async def ledger_entries(self, message_id: str) -> tuple[dict[str, Any] | None,
                                                             dict[str, Any] | None]:
        return self.ledger.get(f"{message_id}:reserve"), self.ledger.get(f"{message_id}:settle")

    async def ledger_entries_of(self, message_ids: list[str]
                                ) -> dict[str, tuple[dict[str, Any] | None,
                                                     dict[str, Any] | None]]:
        self.ledger_reads += 1
        return {m: (self.ledger.get(f"{m}:reserve"), self.ledger.get(f"{m}:settle"))
                for m in message_ids}

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
        return [copy.deepcopy(d) for d in docs[:query.limit + 1]]


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[SendRequested] = []
        self.fail = False

    async def send_requested(self, event: SendRequested) -> None:
        if self.fail:
            raise DependencyUnavailable("broker unavailable", details={"dependency": "kafka"})
        self.events.append(event)


def template(waba_id: str, name: str, *, language: str = "en_US", category: str = "UTILITY",
             status: str = "APPROVED", body_params: list[str] | None = None,
             parameter_format: str = "POSITIONAL", header_format: str | None = None,
             header_params: list[str] | None = None,
             button_params: list[dict[str, int]] | None = None) -> dict[str, Any]:
    return {"_id": f"{waba_id}:{name}:{language}", "waba_id": waba_id, "name": name,
            "language": language, "category": category, "status": status,
            "parameter_format": parameter_format, "header_format": header_format,
            "header_params": header_params or [], "body_params": body_params or [],
            "button_params": button_params or []}


def two_accounts() -> FakeDirectory:
    """acc_a and acc_b with a number and templates each; a revoked key; a suspended account."""
    d = FakeDirectory()
    d.accounts = {"acc_a": {"_id": "acc_a", "status": "active"},
                  "acc_b": {"_id": "acc_b", "status": "active"},
                  "acc_s": {"_id": "acc_s", "status": "suspended"}}
    d.api_keys = {
        hash_api_key(KEY_A): {"account_id": "acc_a", "revoked_at": None},
        hash_api_key(KEY_B): {"account_id": "acc_b", "revoked_at": None},
        hash_api_key(KEY_REVOKED): {"account_id": "acc_a", "revoked_at": "2026-01-01"},
        hash_api_key(KEY_SUSPENDED): {"account_id": "acc_s", "revoked_at": None},
    }
    d.phones = {
        PHONE_A: {"_id": PHONE_A, "account_id": "acc_a", "waba_id": WABA_A,
                  "portfolio_id": "880011223344556", "display_phone_number": "15550001001"},
        PHONE_B: {"_id": PHONE_B, "account_id": "acc_b", "waba_id": WABA_B,
                  "portfolio_id": "880011223344557", "display_phone_number": "15550002001"},
    }
    for t in (
        template(WABA_A, "order_confirmation", body_params=["1", "2"], header_format="IMAGE",
                 button_params=[{"index": 0, "count": 1}]),
        template(WABA_A, "reservation_confirmation", parameter_format="NAMED",
                 body_params=["number_of_guests", "day"]),
        template(WABA_A, "summer_sale", category="MARKETING", body_params=["1", "2"],
                 header_format="TEXT"),
        template(WABA_A, "holiday_promo", category="MARKETING", status="PENDING",
                 body_params=["1"]),
        template(WABA_A, "delivery_update", status="PAUSED", body_params=["1"]),
        template(WABA_B, "appointment_reminder", body_params=["1", "2"]),
    ):
        d.templates[t["_id"]] = t
    d.balances = {"acc_a": {"available": 50_000_000, "reserved": 0, "currency": "USD"},
                  "acc_b": {"available": 50_000_000, "reserved": 0, "currency": "USD"}}
    return d


class World:
    """An ingest app over fakes, served in-process, with a fake clock."""

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self.clock = FakeClock()
        self.directory = two_accounts()
        self.idempotency = FakeIdempotencyStore()
        self.messages = FakeMessageStore()
        self.publisher = FakePublisher()
        self.ingest = Ingest(directory=CachedDirectory(self.directory, self.clock, ttl_seconds),
                             idempotency=self.idempotency, messages=self.messages,
                             recent=RecentMessages(self.clock, 30.0), publisher=self.publisher,
                             clock=self.clock, rate_card=load_rate_card())
        self.app = create_app({}, self.ingest)

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
    return {"from": PHONE_A, "to": "+447912345678", "type": "text",
            "text": {"body": "Your order shipped"}, **overrides}


def template_body(**overrides: Any) -> dict[str, Any]:
    return {"from": PHONE_A, "to": "+447912345678", "type": "template",
            "template": {"name": "reservation_confirmation", "language": {"code": "en_US"},
                         "components": [{"type": "body", "parameters": [
                             {"type": "text", "parameter_name": "number_of_guests", "text": "4"},
                             {"type": "text", "parameter_name": "day", "text": "Saturday"}]}]},
            **overrides}


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
