"""The reconciler: the ledger and the balances must tell the same story, to the micro.

Per account: topups - charges == available + reserved, and reserved == the reservations not yet
settled. The drift is what separates them, in absolute micros; anything but zero is a bug.

Entries are written before the balance that applies them, so a reading taken while an event is
half-way can show an entry the balance does not have yet. Reading the balances first settles it:
an entry written after that reading comes from an offset the balance has not applied, and so can
be left out. The cheap aggregation finds suspects; a suspect is confirmed from its own entries,
leaving out those its balance has not applied yet.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from services.billing.balances import Balances
from services.billing.core import Balance, LedgerEntry
from services.billing.ledger import Ledger, LedgerSum
from services.billing.metrics import LEDGER_DRIFT
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
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


def totals_from_sums(amounts: Iterable[LedgerSum],
                     reserved_amounts: Iterable[LedgerSum]) -> dict[str, LedgerTotals]:
    """Per-account totals from the aggregation of `amount` and of `reserved_amount`."""
    fields: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in amounts:
        name = {"topup": "topups", "charge": "charges", "reserve": "reserves"}.get(row.kind)
        if name:
            fields[row.account_id][name] += row.total
    for row in reserved_amounts:
        if row.kind in ("charge", "release"):
            fields[row.account_id]["settled_reservations"] += row.total
    return {account: LedgerTotals(**values) for account, values in fields.items()}


def totals_from_entries(entries: Iterable[LedgerEntry], balance: Balance | None) -> LedgerTotals:
    """Totals of the entries `balance` has applied (all of them count when it has)."""
    topups = charges = reserves = settled = 0
    for entry in entries:
        if balance is None or not balance.has_applied(entry.source, entry.source_offset):
            continue
        if entry.kind == "topup":
            topups += entry.amount
        elif entry.kind == "reserve":
            reserves += entry.amount
        elif entry.kind in ("charge", "release"):
            settled += entry.reserved_amount
            if entry.kind == "charge":
                charges += entry.amount
    return LedgerTotals(topups=topups, charges=charges, reserves=reserves,
                        settled_reservations=settled)


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


class Reconciler:
    def __init__(self, ledger: Ledger, balances: Balances) -> None:
        self._ledger = ledger
        self._balances = balances

    async def run_once(self) -> Reconciliation:
        started = time.perf_counter()
        balances = {b.account_id: b for b in await self._balances.all()}  # first: see above
        totals = totals_from_sums(await self._ledger.sums("amount"),
                                  await self._ledger.sums("reserved_amount"))
        accounts = set(balances) | set(totals)
        suspects = [a for a in accounts
                    if drift(balances.get(a), totals.get(a, LedgerTotals()))]
        drifts: dict[str, int] = {}
        for account_id in suspects:
            balance = await self._balances.get(account_id)  # again before its entries
            entries = await self._ledger.entries_of(account_id)
            amount = drift(balance, totals_from_entries(entries, balance))
            if amount:
                drifts[account_id] = amount
                log.error("ledger_drift_detected", account_id=account_id, drift_micros=amount,
                          available=balance.available if balance else 0,
                          reserved=balance.reserved if balance else 0)
        total = sum(drifts.values())
        LEDGER_DRIFT.set(total)
        log.info("ledger_reconciled", accounts=len(accounts), drift_micros=total,
                 suspects=len(suspects), outcome="drift" if total else "ok",
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return Reconciliation(accounts=len(accounts), drift=total,
                              drifting_accounts=tuple(sorted(drifts)))
