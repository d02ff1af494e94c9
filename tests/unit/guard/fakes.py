"""In-memory stand-ins for guard's adapters. tests/integration/guard/ runs the service's shell
against the real broker and database."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.errors import DependencyUnavailable
from shared.messages import AccountHoldChanged, Topic

Doc = dict[str, Any]


class FakeGuardStore:
    def __init__(self) -> None:
        self.state_docs: dict[str, Doc] = {}
        self.recipient_docs: dict[str, Doc] = {}
        self.hold_docs: dict[str, Doc] = {}
        self.overrides: dict[str, Doc] = {}
        self.flagged: dict[str, list[int]] = {}
        self.fail_saves = False
        self.state_reads = 0

    async def states(self, account_ids: list[str]) -> dict[str, Doc]:
        self.state_reads += 1
        return {i: copy.deepcopy(self.state_docs[i]) for i in account_ids if i in self.state_docs}

    async def save_state(self, doc: Doc) -> None:
        if self.fail_saves:
            raise DependencyUnavailable("database unavailable")
        _check_storable(doc)
        self.state_docs[doc["_id"]] = copy.deepcopy(doc)

    async def recipients(self, ids: list[str]) -> dict[str, Doc]:
        return {i: copy.deepcopy(self.recipient_docs[i]) for i in ids if i in self.recipient_docs}

    async def insert_recipients(self, docs: list[Doc]) -> None:
        for doc in docs:
            self.recipient_docs.setdefault(doc["_id"], copy.deepcopy(doc))

    async def hold(self, account_id: str) -> Doc | None:
        return copy.deepcopy(self.hold_docs.get(account_id))

    async def set_hold(self, account_id: str, fields: Doc) -> Doc:
        doc = self.hold_docs.setdefault(account_id, {"_id": account_id})
        for name, value in copy.deepcopy(fields).items():
            target = doc
            *parents, leaf = name.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        return copy.deepcopy(doc)

    async def rule_overrides(self, account_id: str) -> Doc | None:
        return copy.deepcopy(self.overrides.get(account_id))

    async def flagged_numbers(self, account_id: str) -> list[int]:
        return list(self.flagged.get(account_id, []))


def _check_storable(value: Any) -> None:
    """What the real database refuses (tests/integration/guard/test_store.py): a field name
    with a dot or a leading `$`."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert "." not in key and not key.startswith("$"), f"unstorable field {key!r}"
            _check_storable(item)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item)


class FakeHoldPublisher:
    def __init__(self) -> None:
        self.events: list[AccountHoldChanged] = []

    async def publish(self, events: Sequence[AccountHoldChanged]) -> None:
        self.events.extend(events)


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


class Log:
    """A topic's records, with offsets per partition, as the consumer would read them."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def record(
        self, topic: Topic[Any], event: Any, partition: int = 0, prefix: str = ""
    ) -> FakeRecord:
        name = prefix + topic.name
        offset = self.offsets.get((name, partition), 0)
        self.offsets[(name, partition)] = offset + 1
        return FakeRecord(name, partition, offset, msgspec.json.encode(event))
