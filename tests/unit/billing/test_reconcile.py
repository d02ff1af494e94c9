"""The reconciler: the ledger and the balances agree to the micro, and a half-written event
is not mistaken for drift."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.billing.core import Balance, LedgerEntry
from services.billing.reconcile import (
    LedgerTotals,
    Reconciler,
    drift,
    totals_from_entries,
)
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.fakes import FakeBalances, FakeLedger, Journal
from tests.unit.billing.test_worker import PREFIX, make_shell


async def busy_account() -> tuple[FakeLedger, FakeBalances]:
    shell = make_shell()
    handle, record = shell.worker.handle, shell.record
    await handle(record(TOPUP_REQUESTED, top_up(1_000_000)))
    for n in range(1, 5):
        await handle(record(SEND_REQUESTED, send_requested(f"msg_{n}")))
    await handle(record(STATUS_CHANGED,
                        status("msg_1", "delivered", pricing=regular("marketing"))))
    await handle(record(STATUS_CHANGED, status("msg_2", "failed")))
    await handle(record(STATUS_CHANGED, status("msg_3", "sent")))
    return shell.ledger, shell.balances


async def test_a_ledger_that_matches_its_balances_has_no_drift() -> None:
    ledger, balances = await busy_account()
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert (result.accounts, result.drift) == (1, 0)


async def test_a_balance_that_lost_money_is_reported_with_the_amount() -> None:
    ledger, balances = await busy_account()
    balances.documents[ACCOUNT] = replace(balances.documents[ACCOUNT],
                                          available=balances.documents[ACCOUNT].available - 7)
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert result.drift == 7
    assert result.drifting_accounts == (ACCOUNT,)


async def test_a_reservation_missing_from_the_balance_counts_twice() -> None:
    ledger, balances = await busy_account()
    balances.documents[ACCOUNT] = replace(balances.documents[ACCOUNT],
                                          reserved=balances.documents[ACCOUNT].reserved - 100)
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert result.drift == 200  # the total is short, and so are the open reservations


async def test_an_entry_written_before_its_balance_is_not_drift() -> None:
    ledger, balances = await busy_account()
    # The agent inserted the next entry and has not written the balance yet.
    ledger.entries["topup:late"] = LedgerEntry(
        key="topup:late", account_id=ACCOUNT, kind="topup", amount=500, at=0,
        source=f"{PREFIX}billing.topup-requested.v1:2", source_offset=1,
        source_event_id="late")
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert result.drift == 0


async def test_entries_of_an_account_without_a_balance_yet_are_not_drift() -> None:
    journal = Journal()
    ledger, balances = FakeLedger(journal), FakeBalances(journal)
    ledger.entries["topup:first"] = LedgerEntry(
        key="topup:first", account_id="acc_new", kind="topup", amount=500, at=0,
        source="billing.topup-requested.v1:0", source_offset=0, source_event_id="first")
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert result.drift == 0


def test_totals_count_only_what_the_balance_has_applied() -> None:
    balance = Balance(ACCOUNT, "USD", applied={"s:0": 4})
    entries = [
        LedgerEntry(key="a", account_id=ACCOUNT, kind="topup", amount=10, at=0, source="s:0",
                    source_offset=4, source_event_id="a"),
        LedgerEntry(key="b", account_id=ACCOUNT, kind="topup", amount=20, at=0, source="s:0",
                    source_offset=5, source_event_id="b"),
    ]
    assert totals_from_entries(entries, balance) == LedgerTotals(topups=10)


def test_settlements_close_reservations_and_charges_reduce_credit() -> None:
    def entry(key: str, kind: str, amount: int, reserved_amount: int = 0) -> LedgerEntry:
        return LedgerEntry(key=key, account_id=ACCOUNT, kind=kind,  # type: ignore[arg-type]
                           amount=amount, reserved_amount=reserved_amount, at=0, source="s:0",
                           source_offset=0, source_event_id=key)

    entries = [entry("t", "topup", 1000), entry("r1", "reserve", 150),
               entry("r2", "reserve", 150), entry("c", "charge", 120, 100),
               entry("l", "release", 100, 100), entry("j", "reject", 50)]
    balance = Balance(ACCOUNT, "USD", available=780, reserved=100, applied={"s:0": 0})
    totals = totals_from_entries(entries, balance)
    assert (totals.net_credit, totals.open_reservations) == (880, 100)
    assert drift(balance, totals) == 0


async def test_a_pass_reads_the_ledger_once_and_leaves_out_entries_not_applied_yet() -> None:
    ledger, balances = await busy_account()
    reads = 0
    amounts = ledger.amounts

    def counted() -> Any:
        nonlocal reads
        reads += 1
        return amounts()

    ledger.amounts = counted  # type: ignore[method-assign]
    ledger.entries["topup:late"] = LedgerEntry(
        key="topup:late", account_id=ACCOUNT, kind="topup", amount=500, at=0,
        source=f"{PREFIX}billing.topup-requested.v1:2", source_offset=1,
        source_event_id="late")
    result = await Reconciler(ledger, balances).run_once()  # type: ignore[arg-type]
    assert (result.drift, result.entries, result.pending, reads) == (0, 8, 1, 1)
