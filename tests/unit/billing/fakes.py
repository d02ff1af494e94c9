"""In-memory stand-ins for billing's adapters, recording the order of writes."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.billing.core import Balance, LedgerEntry
from services.billing.publisher import Record
from shared.errors import DependencyUnavailable
from shared.kafka import Failure
from shared.messages import Topic


@dataclass
class Journal:
    """What happened, in order, across the fakes."""

    steps: list[str] = field(default_factory=list)


@dataclass
class FakeBalances:
    journal: Journal
    documents: dict[str, Balance] = field(default_factory=dict)
    # "get" / "save": fail once each; "save_then_fail": the write lands, then the call fails
    # (a connection lost before the answer came back)
    failures: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)  # the accounts read, in order
    bulk_writes: int = 0  # save_all calls

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.failures:
            self.failures.remove(operation)
            raise DependencyUnavailable("database unavailable: AutoReconnect")

    async def get(self, account_id: str) -> Balance | None:
        self._maybe_fail("get")
        self.reads.append(account_id)
        return self.documents.get(account_id)

    async def save(self, balance: Balance, now: int) -> None:
        self._maybe_fail("save")
        self.documents[balance.account_id] = balance
        self.journal.steps.append("balance")
        self._maybe_fail("save_then_fail")

    async def save_all(self, balances: Sequence[Balance], now: int) -> None:
        """One round trip for all of them (`bulk_writes` counts them)."""
        self._maybe_fail("save")
        self.bulk_writes += 1
        for balance in balances:
            self.documents[balance.account_id] = balance
            self.journal.steps.append("balance")
        self._maybe_fail("save_then_fail")

    async def all(self) -> list[Balance]:
        return list(self.documents.values())


@dataclass
class FakeLedger:
    journal: Journal
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    pages: list[int] = field(default_factory=list)  # the size of each page read, in order
    queries: int = 0  # reads of the ledger by amounts_after
    reads: list[list[str]] = field(default_factory=list)  # the keys of each get_many, in order

    async def get(self, key: str) -> LedgerEntry | None:
        return self.entries.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        """One round trip (`reads` records the keys of each; none for no keys)."""
        if not keys:
            return {}
        self.reads.append(list(keys))
        return {k: self.entries[k] for k in keys if k in self.entries}

    async def add(self, entry: LedgerEntry) -> LedgerEntry | None:
        if entry.key in self.entries:
            return self.entries[entry.key]
        self.entries[entry.key] = entry
        self.journal.steps.append(f"entry {entry.key}")
        return None

    async def add_all(self, entries: Sequence[LedgerEntry]) -> set[str]:
        taken = set()
        for entry in entries:
            if await self.add(entry) is not None:
                taken.add(entry.key)
        return taken

    async def remove(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.journal.steps.append(f"remove {key}")

    async def entries_of(self, account_id: str) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if e.account_id == account_id]

    def _ordered_after(self, position: tuple[int, str] | None) -> list[LedgerEntry]:
        ordered = sorted(self.entries.values(), key=lambda e: (e.at, e.key))
        return [e for e in ordered if position is None or (e.at, e.key) > position]

    async def reserves_page(
        self, position: tuple[int, str] | None, cutoff: int, limit: int
    ) -> list[LedgerEntry]:
        page = [e for e in self._ordered_after(position) if e.kind == "reserve" and e.at <= cutoff][
            :limit
        ]
        self.pages.append(len(page))
        return page

    async def amounts_after(
        self, position: tuple[int, str] | None, batch: int
    ) -> AsyncIterator[list[LedgerEntry]]:
        self.queries += 1
        entries = self._ordered_after(position)
        for start in range(0, len(entries), batch):
            yield entries[start : start + batch]

    async def amounts_of(self, key: str) -> LedgerEntry | None:
        return self.entries.get(key)


@dataclass
class FakeCheckpoints:
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    saves: int = 0

    async def load(self, job: str) -> dict[str, Any] | None:
        state = self.states.get(job)
        return None if state is None else copy.deepcopy(state)

    async def save(self, job: str, state: dict[str, Any]) -> None:
        self.states[job] = copy.deepcopy(state)
        self.saves += 1


@dataclass
class FakePublisher:
    journal: Journal
    published: list[tuple[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[Record, BaseException]] = field(default_factory=list)
    failures_dead_lettered: list[Failure] = field(default_factory=list)
    failures: int = 0  # the next n publishes fail

    async def publish(self, topic: Topic[Any], event: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable("broker unavailable: KafkaTimeoutError")
        self.published.append((topic.name, event))
        self.journal.steps.append(f"publish {topic.name}")

    async def publish_all(self, events: Sequence[tuple[Topic[Any], Any]]) -> None:
        if self.failures and events:
            self.failures -= 1
            raise DependencyUnavailable("broker unavailable: KafkaTimeoutError")
        for topic, event in events:
            self.published.append((topic.name, event))
            self.journal.steps.append(f"publish {topic.name}")

    async def dead_letter(self, record: Record, failure: Failure) -> None:
        self.dead_letters.append((record, failure.error))
        self.failures_dead_lettered.append(failure)


class Sleeps:
    """Records the backoff delays instead of sleeping; can stop a test after n of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.stop_after is not None and len(self.delays) >= self.stop_after:
            raise StopRetrying


class StopRetrying(Exception):
    pass
