"""The reconciler: the ledger and the balances must tell the same story, to the micro.

Per account: topups - charges == available + reserved, and reserved == the reservations not yet
settled. The drift is what separates them, in absolute micros; anything but zero is a bug.

Entries are written before the balance that applies them, so a reading taken while a batch is
half-way can show entries the balance does not have yet. Reading the balances first settles it:
an entry written after that reading comes from an offset the balance has not applied, and so is
left out.

It works incrementally (a pass used to scan the whole ledger every two minutes):

- the totals of every entry up to a position in (at, _id) order are kept in
  `billing_checkpoints` with the position; a pass reads every entry after the position with
  one query, handed out in pages; it folds the entries that have become older than
  `settle_margin_ms` into the totals, saving after each page that folded some;
- an entry older than the margin that its balance has not applied (a balance behind, or an
  entry left by a bug) is kept aside by key and looked at again on every pass, until it is
  applied (then folded) or gone (the worker removes an entry it gave up on);
- the rest (the tail: the last few minutes) is added to a copy of the totals for this pass only.

So a pass reads the balances, the new entries and the tail, not the ledger; memory holds one
page and one set of totals per account. One query, not one per page: FerretDB answers any
filter but a lone `_id` by scanning the whole collection, so a query per page of 1,000 made a
pass of a 5-minute tail at 100 messages/s scan the ledger ~100 times, and the passes grew with
the square of the ledger (ledger.py, `amounts_after`). Entries are written within seconds of
their `at` (billing's clock when it decided; a database operation has a deadline), so the
margin keeps late writes from landing behind the position.

An account erased by `hala accounts erase` has its entries and balance moved to a pseudonym:
the totals kept under its old id move with them (the erased accounts are read each pass).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from services.billing.balances import Balances
from services.billing.checkpoints import CheckpointStore
from services.billing.core import Balance
from services.billing.ledger import EntryAmounts, LedgerPosition
from services.billing.metrics import LEDGER_DRIFT
from shared.clock import Clock
from shared.logging import get_logger

log = get_logger(__name__)

JOB = "reconcile"
SETTLE_MARGIN_MS = 5 * 60_000


@dataclass
class LedgerTotals:
    topups: int = 0
    charges: int = 0
    reserves: int = 0
    settled_reservations: int = 0  # reservations closed by a charge or a release

    @property
    def net_credit(self) -> int:
        return self.topups - self.charges

    @property
    def open_reservations(self) -> int:
        return self.reserves - self.settled_reservations

    def add(self, entry: EntryAmounts) -> None:
        if entry.kind == "topup":
            self.topups += entry.amount
        elif entry.kind == "reserve":
            self.reserves += entry.amount
        elif entry.kind in ("charge", "release"):
            self.settled_reservations += entry.reserved_amount
            if entry.kind == "charge":
                self.charges += entry.amount

    def plus(self, other: LedgerTotals) -> LedgerTotals:
        return LedgerTotals(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(LedgerTotals))
        )


def totals_from_entries(entries: Iterable[EntryAmounts], balance: Balance | None) -> LedgerTotals:
    """Totals of the entries `balance` has applied (all of them count when it has)."""
    totals = LedgerTotals()
    for entry in entries:
        if balance is not None and balance.has_applied(entry.source, entry.source_offset):
            totals.add(entry)
    return totals


def drift(balance: Balance | None, totals: LedgerTotals) -> int:
    available = balance.available if balance else 0
    reserved = balance.reserved if balance else 0
    return abs(totals.net_credit - (available + reserved)) + abs(
        totals.open_reservations - reserved
    )


@dataclass(frozen=True)
class Reconciliation:
    accounts: int
    drift: int  # summed over accounts
    drifting_accounts: tuple[str, ...]
    entries: int = 0  # ledger entries read by this pass (folded, rechecked and tail)
    pending: int = field(default=0)  # entries written but not applied by their balance yet
    folded: int = 0  # entries added to the kept totals by this pass


class AmountsLedger(Protocol):
    def amounts_after(
        self, position: LedgerPosition | None, batch: int
    ) -> AsyncIterator[list[EntryAmounts]]: ...

    async def amounts_of(self, key: str) -> EntryAmounts | None: ...


class ErasedAccounts(Protocol):
    async def pseudonyms(self) -> dict[str, str]:
        """Erased accounts: old account id -> the pseudonym their ledger is kept under."""
        ...


class NoErasures:
    async def pseudonyms(self) -> dict[str, str]:
        return {}


@dataclass
class _Checkpoint:
    position: LedgerPosition | None = None
    totals: dict[str, LedgerTotals] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, state: Mapping[str, Any] | None) -> _Checkpoint:
        if not state:
            return cls()
        position = state.get("position")
        return cls(
            position=(int(position["at"]), str(position["key"])) if position else None,
            totals={
                t["account_id"]: LedgerTotals(
                    topups=int(t["topups"]),
                    charges=int(t["charges"]),
                    reserves=int(t["reserves"]),
                    settled_reservations=int(t["settled"]),
                )
                for t in state.get("totals", [])
            },
            pending=set(state.get("pending", [])),
        )

    def dump(self, now: int) -> dict[str, Any]:
        return {
            "position": None
            if self.position is None
            else {"at": self.position[0], "key": self.position[1]},
            "totals": [
                {
                    "account_id": a,
                    "topups": t.topups,
                    "charges": t.charges,
                    "reserves": t.reserves,
                    "settled": t.settled_reservations,
                }
                for a, t in sorted(self.totals.items())
            ],
            "pending": sorted(self.pending),
            "updated_at": now,
        }

    def rename(self, pseudonyms: Mapping[str, str]) -> bool:
        moved = False
        for old, new in pseudonyms.items():
            totals = self.totals.pop(old, None)
            if totals is not None:
                self.totals[new] = self.totals.get(new, LedgerTotals()).plus(totals)
                moved = True
        return moved


class Reconciler:
    def __init__(
        self,
        ledger: AmountsLedger,
        balances: Balances,
        clock: Clock,
        checkpoints: CheckpointStore,
        *,
        erased: ErasedAccounts | None = None,
        page_size: int = 1000,
        settle_margin_ms: int = SETTLE_MARGIN_MS,
        max_duty: float | None = None,
    ) -> None:
        self._ledger = ledger
        self._balances = balances
        self._clock = clock
        self._checkpoints = checkpoints
        self._erased = erased or NoErasures()
        self._page_size = page_size
        self._margin_ms = settle_margin_ms
        # Pages read by the last pass (for tests and the log): the work a pass does, and the
        # queries it took to read them (one: each is a scan of the whole ledger on FerretDB).
        self.pages_read: list[int] = []
        self.queries = 0
        # At most this share of the time in passes (None: every call is a pass): a pass of d
        # seconds defers the next one until d / max_duty after its start.
        self._max_duty = max_duty
        self._next_pass_at = 0.0  # time.monotonic()
        self._last: Reconciliation | None = None

    async def run_once(self) -> Reconciliation:
        """A pass; or, while the last one's share of time (`max_duty`) is not over, the last
        pass's result again (logged as deferred)."""
        if self._last is not None and time.monotonic() < self._next_pass_at:
            log.info(
                "ledger_reconcile_deferred",
                outcome="deferred",
                seconds_left=round(self._next_pass_at - time.monotonic(), 1),
            )
            return self._last
        began = time.monotonic()
        result = await self._pass()
        if self._max_duty is not None:
            self._next_pass_at = began + (time.monotonic() - began) / self._max_duty
        self._last = result
        return result

    async def _pass(self) -> Reconciliation:
        started = time.perf_counter()
        now = self._clock.now_ms()
        self.pages_read = []
        self.queries = 0
        balances = {b.account_id: b for b in await self._balances.all()}  # first: see above
        checkpoint = _Checkpoint.load(await self._checkpoints.load(JOB))
        changed = checkpoint.rename(await self._erased.pseudonyms())

        # One read of everything after the position: entries older than the margin are folded
        # into the kept totals (the checkpoint saved after each page that folded some), the
        # rest is the tail, added to a copy of the totals for this pass only.
        until_at = now - self._margin_ms
        tail: dict[str, LedgerTotals] = {}
        folded = tail_entries = pending = 0
        self.queries += 1
        async for page in self._ledger.amounts_after(checkpoint.position, self._page_size):
            self.pages_read.append(len(page))
            folded_here = 0
            for entry in page:
                balance = balances.get(entry.account_id)
                applied = balance is not None and balance.has_applied(
                    entry.source, entry.source_offset
                )
                if entry.at <= until_at:
                    if applied:
                        checkpoint.totals.setdefault(entry.account_id, LedgerTotals()).add(entry)
                    else:
                        checkpoint.pending.add(entry.key)
                    checkpoint.position = (entry.at, entry.key)
                    folded_here += 1
                elif applied:
                    tail.setdefault(entry.account_id, LedgerTotals()).add(entry)
                    tail_entries += 1
                else:
                    pending += 1
                    tail_entries += 1
            if folded_here:
                folded += folded_here
                await self._checkpoints.save(JOB, checkpoint.dump(now))
        rechecked = len(checkpoint.pending)
        changed |= await self._recheck_pending(checkpoint, balances)
        if changed:
            await self._checkpoints.save(JOB, checkpoint.dump(now))

        accounts = set(balances) | set(checkpoint.totals) | set(tail)
        drifts: dict[str, int] = {}
        for account_id in accounts:
            totals = checkpoint.totals.get(account_id, LedgerTotals()).plus(
                tail.get(account_id, LedgerTotals())
            )
            balance = balances.get(account_id)
            amount = drift(balance, totals)
            if amount:
                drifts[account_id] = amount
                log.error(
                    "ledger_drift_detected",
                    account_id=account_id,
                    drift_micros=amount,
                    available=balance.available if balance else 0,
                    reserved=balance.reserved if balance else 0,
                )
        total = sum(drifts.values())
        LEDGER_DRIFT.set(total)
        pending += len(checkpoint.pending)
        entries = folded + rechecked + tail_entries
        log.info(
            "ledger_reconciled",
            accounts=len(accounts),
            drift_micros=total,
            entries=entries,
            folded=folded,
            pending=pending,
            pages=len(self.pages_read),
            queries=self.queries,
            outcome="drift" if total else "ok",
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return Reconciliation(
            accounts=len(accounts),
            drift=total,
            drifting_accounts=tuple(sorted(drifts)),
            entries=entries,
            pending=pending,
            folded=folded,
        )

    async def _recheck_pending(
        self, checkpoint: _Checkpoint, balances: Mapping[str, Balance]
    ) -> bool:
        """Entries behind the position that their balance had not applied: fold the ones it
        has applied since, forget the ones that are gone."""
        changed = False
        for key in sorted(checkpoint.pending):
            entry = await self._ledger.amounts_of(key)
            if entry is None:
                checkpoint.pending.discard(key)
                changed = True
                continue
            balance = balances.get(entry.account_id)
            if balance is not None and balance.has_applied(entry.source, entry.source_offset):
                checkpoint.totals.setdefault(entry.account_id, LedgerTotals()).add(entry)
                checkpoint.pending.discard(key)
                changed = True
        return changed
