"""In-memory stand-ins for status's adapters. tests/integration/status/test_store_contract.py
runs the same checks against the fake store and the real one."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from services.status.batch_plan import MessageWrite, TemplateOutcomes, TemplateWrite
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
        self.message_reads = 0  # reads of `messages` by the state writer (one per batch at most)
        self.message_writes = 0  # writes to `messages` by the state writer (one per batch)
        self.wamid_lookups = 0
        self.callback_reads = 0  # the processor's reads of messages by callback data
        self.wamid_index: dict[str, Doc] = {}
        self.parked: dict[str, Doc] = {}
        self.conversations: dict[str, Doc] = {}
        self.templates: list[Doc] = []
        self.phone_numbers: dict[str, Doc] = {}
        self.inbound: dict[str, Doc] = {}
        self.number_states: dict[str, Doc] = {}
        self.user_preferences: dict[str, Doc] = {}
        self.suppressions: dict[str, Doc] = {}
        self.keyword_configs: dict[str, Doc] = {}
        self.keyword_reads = 0
        self.phone_number_reads = 0
        self.batch_writes: dict[str, int] = {}  # the processor's batch-write calls by method

    def _counted(self, method: str) -> None:
        self.batch_writes[method] = self.batch_writes.get(method, 0) + 1

    async def find_by_wamid(self, wamid: str) -> MessageRef | None:
        self.wamid_lookups += 1
        return message_ref_from_doc(self.wamid_index.get(wamid))

    async def find_by_wamids(self, wamids: Sequence[str]) -> dict[str, MessageRef]:
        self.wamid_lookups += 1
        found = {w: message_ref_from_doc(self.wamid_index.get(w)) for w in wamids}
        return {w: ref for w, ref in found.items() if ref is not None}

    async def find_messages(self, message_ids: Sequence[str]) -> dict[str, CallbackMessage]:
        self.callback_reads += 1
        found = {m: callback_message_from_doc(self.messages.get(m)) for m in message_ids}
        return {m: msg for m, msg in found.items() if msg is not None}

    async def index_wamid(self, doc: Doc) -> None:
        self.wamid_index.setdefault(doc["_id"], dict(doc))

    async def park_status(self, doc: Doc) -> None:
        self.parked.setdefault(doc["_id"], dict(doc))

    async def parked_for(self, wamid: str) -> list[Doc]:
        return [dict(d) for d in self.parked.values() if d["wamid"] == wamid]

    async def delete_parked(self, parked_id: str) -> None:
        self.parked.pop(parked_id, None)

    async def load_messages(self, message_ids: Sequence[str]) -> dict[str, Doc]:
        self.message_reads += 1
        self.loads += len(message_ids)
        return {m: copy.deepcopy(self.messages[m]) for m in message_ids if m in self.messages}

    async def create_messages(self, docs: Sequence[Doc]) -> set[str]:
        taken = set()
        for doc in docs:
            if not await self.create_message(doc):
                taken.add(doc["_id"])
        return taken

    async def write_messages(self, writes: Sequence[MessageWrite]) -> None:
        if writes:
            self.message_writes += 1
        for write in writes:
            doc = self.messages.get(write.message_id)
            if doc is None:
                doc = self.messages[write.message_id] = {
                    "_id": write.message_id,
                    **copy.deepcopy(write.set_on_insert),
                }
            doc.update(copy.deepcopy(write.set_fields))

    async def index_wamids(self, docs: Sequence[Doc]) -> None:
        for doc in docs:
            await self.index_wamid(doc)

    async def parked_for_wamids(self, wamids: Sequence[str]) -> list[Doc]:
        return [dict(d) for d in self.parked.values() if d.get("wamid") in set(wamids)]

    async def delete_parked_many(self, parked_ids: Sequence[str]) -> None:
        for parked_id in parked_ids:
            await self.delete_parked(parked_id)

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

    async def store_inbound(self, doc: Doc) -> bool:
        if doc["_id"] in self.inbound:
            return False
        self.inbound[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def update_conversation(self, conversation_id: str, update: Doc) -> None:
        doc = self.conversations.get(conversation_id)
        if doc is None:
            doc = self.conversations[conversation_id] = {
                "_id": conversation_id,
                **copy.deepcopy(update.get("$setOnInsert", {})),
            }
        for name, value in update.get("$max", {}).items():
            if name not in doc or doc[name] < value:
                doc[name] = value
        doc.update(copy.deepcopy(update.get("$set", {})))

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
        for doc in self.templates:
            if (
                doc["_id"] == doc_id
                if minimal is not None
                else (doc.get("waba_id"), doc.get("template_id")) == (waba_id, template_id)
            ):
                if doc.get(at_field, at_ms) > at_ms:
                    return "stale"
                doc.update(copy.deepcopy(fields))
                return "applied"
        if minimal is None:
            return "unknown"
        self.templates.append(copy.deepcopy(minimal))
        return "created"

    async def phone_number(self, phone_number_id: str) -> NumberRef | None:
        self.phone_number_reads += 1
        return number_ref_from_doc(self.phone_numbers.get(phone_number_id))

    async def find_phone_number(self, display_variants: list[str]) -> NumberRef | None:
        for doc in self.phone_numbers.values():
            if doc.get("display_phone_number") in display_variants:
                return number_ref_from_doc(doc)
        return None

    async def numbers_of_waba(self, waba_id: str) -> list[NumberRef]:
        return [
            ref
            for doc in self.phone_numbers.values()
            if doc.get("waba_id") == waba_id
            if (ref := number_ref_from_doc(doc)) is not None
        ]

    async def number_state(self, state_id: str) -> Doc | None:
        return copy.deepcopy(self.number_states.get(state_id))

    async def update_number_state(self, state_id: str, fields: Doc, now_ms: int) -> None:
        doc = self.number_states.setdefault(state_id, {"_id": state_id})
        for name, value in copy.deepcopy({**fields, "updated_at": now_ms}).items():
            target = doc
            *parents, leaf = name.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value

    async def save_user_preference(self, doc: Doc) -> bool:
        known = self.user_preferences.get(doc["_id"])
        if known is not None and known["at"] > doc["at"]:
            return False
        self.user_preferences[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def save_suppression(self, doc: Doc) -> bool:
        known = self.suppressions.get(doc["_id"])
        if known is not None and known["at"] > doc["at"]:
            return False
        self.suppressions[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def opt_out_keywords(self, account_id: str) -> Doc | None:
        self.keyword_reads += 1
        return copy.deepcopy(self.keyword_configs.get(account_id))

    # --- the processor's batch writes: the same documents as the items one at a time ---------
    async def park_statuses(self, docs: Sequence[Doc]) -> None:
        self._counted("park_statuses")
        for doc in docs:
            await self.park_status(doc)

    async def store_inbound_many(self, docs: Sequence[Doc]) -> set[str]:
        self._counted("store_inbound_many")
        return {doc["_id"] for doc in docs if not await self.store_inbound(doc)}

    async def update_conversations(self, updates: Mapping[str, Doc]) -> None:
        self._counted("update_conversations")
        for conversation_id, update in updates.items():
            await self.update_conversation(conversation_id, update)

    async def apply_templates(self, writes: Sequence[TemplateWrite]) -> TemplateOutcomes:
        self._counted("apply_templates")
        outcomes = [
            await self.apply_template(
                w.doc_id, w.template_id, w.waba_id, w.fields, w.at_field, w.at_ms, w.minimal
            )
            for w in writes
        ]
        created, applied = outcomes.count("created"), outcomes.count("applied")
        return TemplateOutcomes(created, applied, len(outcomes) - created - applied)

    async def update_number_states(self, sets: Mapping[str, Doc], now_ms: int) -> None:
        self._counted("update_number_states")
        for state_id, fields in sets.items():
            await self.update_number_state(state_id, fields, now_ms)

    async def save_user_preferences(self, docs: Sequence[Doc]) -> list[bool]:
        self._counted("save_user_preferences")
        return [await self.save_user_preference(doc) for doc in docs]

    async def save_suppressions(self, docs: Sequence[Doc]) -> list[bool]:
        self._counted("save_suppressions")
        return [await self.save_suppression(doc) for doc in docs]
