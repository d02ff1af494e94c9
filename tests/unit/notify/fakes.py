"""In-memory stand-ins for notify's store, transport and mail server (the store's contract runs
against the real database in tests/integration/notify/test_store_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from services.notify.core import AttemptResult, accepted_event_id

Doc = dict[str, Any]


class FakeStore:
    def __init__(self) -> None:
        self.endpoints: dict[str, Doc] = {}
        self.states: dict[str, Doc] = {}
        self.events: dict[str, Doc] = {}
        self.deliveries: dict[str, Doc] = {}
        self.attempts: dict[str, Doc] = {}
        self.messages: dict[str, Doc] = {}
        self.wamid_index: dict[str, Doc] = {}
        self.wabas: dict[str, str] = {}
        self.numbers: dict[str, str] = {}
        self.accounts: dict[str, Doc] = {}
        self.balances: dict[str, Doc] = {}
        self.alerts: dict[str, Doc] = {}
        self.writes: dict[str, int] = {}  # insert_many calls per collection

    async def endpoints_of_account(self, account_id: str) -> list[Doc]:
        return [
            dict(d)
            for d in self.endpoints.values()
            if d["account_id"] == account_id and d.get("deleted_at") is None
        ]

    async def endpoint(self, endpoint_id: str) -> Doc | None:
        return self.endpoints.get(endpoint_id)

    async def endpoint_states(self) -> list[Doc]:
        return list(self.states.values())

    async def save_endpoint_state(self, endpoint_id: str, account_id: str, fields: Doc) -> None:
        self.states.setdefault(endpoint_id, {"_id": endpoint_id}).update(
            {**fields, "account_id": account_id}
        )

    async def insert_events(self, docs: Sequence[Doc]) -> list[bool]:
        self.writes["events"] = self.writes.get("events", 0) + 1
        return [self._insert(self.events, d) for d in docs]

    @staticmethod
    def _insert(into: dict[str, Doc], doc: Doc) -> bool:
        if doc["_id"] in into:
            return False
        into[doc["_id"]] = dict(doc)
        return True

    async def event(self, event_id: str) -> Doc | None:
        return self.events.get(event_id)

    async def events_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]:
        return {i: self.events[i] for i in ids if i in self.events}

    async def events_in_range(
        self, account_id: str, since: int, until: int, limit: int
    ) -> list[Doc]:
        found = sorted(
            (
                d
                for d in self.events.values()
                if d["account_id"] == account_id and since <= d["at"] <= until
            ),
            key=lambda d: d["at"],
        )
        return found[:limit]

    async def insert_deliveries(self, docs: Sequence[Doc]) -> list[bool]:
        self.writes["deliveries"] = self.writes.get("deliveries", 0) + 1
        return [self._insert(self.deliveries, d) for d in docs]

    async def insert_attempt(self, doc: Doc) -> None:
        self.attempts.setdefault(doc["_id"], dict(doc))

    async def mark_delivered(self, delivery_id: str, now: int) -> None:
        doc = self.deliveries[delivery_id]
        doc.update(
            state="delivered", done_at=now, next_at=None, attempts=doc.get("attempts", 0) + 1
        )

    async def update_delivery(self, delivery_id: str, fields: Doc) -> None:
        self.deliveries[delivery_id].update(fields)

    async def due_deliveries(self, now: int, limit: int) -> list[Doc]:
        due = sorted(
            (
                d
                for d in self.deliveries.values()
                if d["state"] == "pending" and d["next_at"] is not None and d["next_at"] <= now
            ),
            key=lambda d: d["next_at"],
        )
        return [dict(d) for d in due[:limit]]

    async def unattempted_deliveries(self, after_id: str, limit: int) -> list[Doc]:
        found = sorted(
            (
                d
                for d in self.deliveries.values()
                if d["state"] == "pending" and d["attempts"] == 0 and d["_id"] > after_id
            ),
            key=lambda d: d["_id"],
        )
        return [dict(d) for d in found[:limit]]

    async def message_details(self, message_id: str) -> Doc | None:
        doc = self.events.get(accepted_event_id(message_id))
        return doc.get("details") if doc else None

    async def message_doc(self, message_id: str) -> Doc | None:
        return self.messages.get(message_id)

    async def messages_by_ids(self, ids: Sequence[str]) -> dict[str, Doc]:
        return {i: self.messages[i] for i in ids if i in self.messages}

    async def wamid_messages(self, wamids: Sequence[str]) -> dict[str, Doc]:
        return {w: self.wamid_index[w] for w in wamids if w in self.wamid_index}

    async def account_of_waba(self, waba_id: str) -> str | None:
        return self.wabas.get(waba_id)

    async def account_of_number(self, phone_number_id: str) -> str | None:
        return self.numbers.get(phone_number_id)

    async def account(self, account_id: str) -> Doc | None:
        return self.accounts.get(account_id)

    async def currency(self, account_id: str) -> str | None:
        doc = self.balances.get(account_id)
        return doc.get("currency") if doc else None

    async def insert_alert(self, doc: Doc) -> bool:
        if doc["_id"] in self.alerts:
            return False
        self.alerts[doc["_id"]] = dict(doc)
        return True

    async def due_alerts(self, now: int, limit: int) -> list[Doc]:
        return [
            dict(d) for d in self.alerts.values() if d["state"] == "pending" and d["next_at"] <= now
        ][:limit]

    async def update_alert(self, key: str, fields: Doc) -> None:
        self.alerts[key].update(fields)

    async def sweep(self, before: int) -> int:
        doomed = [k for k, d in self.events.items() if d["created_at"] < before]
        for key in doomed:
            del self.events[key]
        return len(doomed)


@dataclass
class Call:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeTransport:
    """Answers by URL: a function of the call (status code, or an AttemptResult), and keeps
    every call. `hang` URLs wait until released."""

    answer: Callable[[Call], int | AttemptResult] = lambda call: 200
    calls: list[Call] = field(default_factory=list)
    hang: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        call = Call(url, body, dict(headers))
        self.calls.append(call)
        if url in self.hang:
            await self.released.wait()
            return AttemptResult(None, 10.0, "timeout", "hung")
        answer = self.answer(call)
        if isinstance(answer, AttemptResult):
            return answer
        return AttemptResult(answer, 0.01)

    def to(self, url: str) -> list[Call]:
        return [c for c in self.calls if c.url == url]


@dataclass
class FakeMailServer:
    sent: list[tuple[EmailMessage, list[str]]] = field(default_factory=list)
    fail_with: Exception | None = None

    async def send(self, message: EmailMessage, recipients: Sequence[str]) -> list[str]:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((message, list(recipients)))
        return []
