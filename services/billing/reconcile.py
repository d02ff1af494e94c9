"""The reconciler: the ledger and the balances must tell the same story, to the micro.

Per account: topups - charges == available + reserved, and reserved == the reservations not yet
settled. The drift is what separates them, in absolute micros; anything but zero is a bug.

Entries are written before the balance that applies them, so a reading taken while a batch is
half-way can show entries the balance does not have yet. Reading the balances first settles it:
an entry written after that reading comes from an offset the balance has not applied, and so is
left out. One pass is one read of the balances and one scan of the ledger, streamed in chunks
with only the fields the sums need (FerretDB scans the whole collection for any query but an
`_id` lookup, so one scan is the least a pass can cost).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.billing.balances import Balances
from services.billing.core import Balance
from services.billing.ledger import EntryAmounts, Ledger
from services.billing.metrics import LEDGER_DRIFT
from shared.logging import get_logger

log = get_logger(__name__)


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
    return (abs(totals.net_credit - (available + reserved))
            + abs(totals.open_reservations - reserved))


@dataclass(frozen=True)
class Reconciliation:
    accounts: int
    drift: int  # summed over accounts
    drifting_accounts: tuple[str, ...]
    entries: int = 0  # ledger entries read
    pending: int = field(default=0)  # entries written but not applied by their balance yet


class Reconciler:
    def __init__(self, ledger: Ledger, balances: Balances) -> None:
        self._ledger = ledger
        self._balances = balances

    async def run_once(self) -> Reconciliation:
        started = time.perf_counter()
        balances = {b.account_id: b for b in await self._balances.all()}  # first: see above
        totals: dict[str, LedgerTotals] = {a: LedgerTotals() for a in balances}
        entries = pending = 0
        async for entry in self._ledger.amounts():
            entries += 1
            balance = balances.get(entry.account_id)
            account_totals = totals.setdefault(entry.account_id, LedgerTotals())
            if balance is None or not balance.has_applied(entry.source, entry.source_offset):
                pending += 1
                continue
            account_totals.add(entry)
        drifts: dict[str, int] = {}
        for account_id, account_totals in totals.items():
            balance = balances.get(account_id)
            amount = drift(balance, account_totals)
            if amount:
                drifts[account_id] = amount
                log.error("ledger_drift_detected", account_id=account_id, drift_micros=amount,
                          available=balance.available if balance else 0,
                          reserved=balance.reserved if balance else 0)
        total = sum(drifts.values())
        LEDGER_DRIFT.set(total)
        log.info("ledger_reconciled", accounts=len(totals), drift_micros=total,
                 entries=entries, pending=pending, outcome="drift" if total else "ok",
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return Reconciliation(accounts=len(totals), drift=total,
                              drifting_accounts=tuple(sorted(drifts)), entries=entries,
                              pending=pending)
