"""In-memory stand-ins for status's adapters. tests/integration/status/test_store_contract.py
runs the same checks against the fake store and the real one."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from services.status.core import MessageRef, MessageState, message_ref_from_doc, state_from_doc
from shared.errors import DependencyUnavailable
from shared.messages import Topic

Doc = dict[str, Any]


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[Topic[Any], Any]] = []
        self.unavailable = False

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        await self.publish_all([(topic, event)])

    async def publish_all(self, events: Sequence[tuple[Topic[Any], Any]]) -> None:
        if self.unavailable:
            raise DependencyUnavailable("kafka unavailable")
        self.published.extend(events)

    def events(self, topic: Topic[Any]) -> list[Any]:
        return [event for t, event in self.published if t.name == topic.name]


class FakeStore:
    """Implements ProcessorStore and StateStore over dictionaries."""

    def __init__(self) -> None:
        self.messages: dict[str, Doc] = {}
        self.loads = 0  # message documents read
        self.wamid_lookups = 0
        self.wamid_index: dict[str, Doc] = {}
        self.parked: dict[str, Doc] = {}
        self.conversations: dict[str, Doc] = {}
        self.templates: list[Doc] = []
        self.phone_numbers: dict[str, Doc] = {}

    async def find_by_wamid(self, wamid: str) -> MessageRef | None:
        self.wamid_lookups += 1
        return message_ref_from_doc(self.wamid_index.get(wamid))

    async def find_message(self, message_id: str) -> MessageRef | None:
        return message_ref_from_doc(self.messages.get(message_id))

    async def index_wamid(self, doc: Doc) -> None:
        self.wamid_index.setdefault(doc["_id"], dict(doc))

    async def park_status(self, doc: Doc) -> None:
        self.parked.setdefault(doc["_id"], dict(doc))

    async def parked_for(self, wamid: str) -> list[Doc]:
        return [dict(d) for d in self.parked.values() if d["wamid"] == wamid]

    async def delete_parked(self, parked_id: str) -> None:
        self.parked.pop(parked_id, None)

    async def load_message(self, message_id: str) -> tuple[MessageState, Doc | None]:
        self.loads += 1
        doc = copy.deepcopy(self.messages.get(message_id))
        return state_from_doc(doc), doc

    async def create_message(self, doc: Doc) -> bool:
        if doc["_id"] in self.messages:
            return False
        self.messages[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def save_message(self, message_id: str, fields: Doc, fields_if_new: Doc) -> None:
        doc = self.messages.get(message_id)
        if doc is None:
            doc = self.messages[message_id] = {"_id": message_id, **copy.deepcopy(fields_if_new)}
        doc.update(copy.deepcopy(fields))

    async def record_inbound(self, conversation_id: str, phone_number_id: str, sender: str,
                             at_ms: int, now_ms: int) -> None:
        doc = self.conversations.setdefault(conversation_id, {
            "_id": conversation_id, "phone_number_id": phone_number_id, "wa_id": sender})
        doc["last_inbound_at"] = max(doc.get("last_inbound_at", at_ms), at_ms)
        doc["updated_at"] = now_ms

    async def apply_template_status(self, waba_id: str, name: str, language: str, status: str,
                                    reason: str | None, at_ms: int) -> bool:
        for doc in self.templates:
            if (doc["waba_id"], doc["name"], doc["language"]) == (waba_id, name, language):
                if doc.get("status_event_at", at_ms) > at_ms:
                    return False
                doc.update(status=status, status_reason=reason, status_event_at=at_ms)
                return True
        return False

    async def find_phone_number(self, display_variants: list[str]) -> tuple[str, str] | None:
        for doc in self.phone_numbers.values():
            if doc.get("display_phone_number") in display_variants:
                return doc["_id"], doc.get("waba_id", "")
        return None
