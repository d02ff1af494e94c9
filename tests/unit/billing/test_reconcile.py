"""The reconciler: the ledger and the balances agree to the micro, and a half-written event
is not mistaken for drift."""

from __future__ import annotations

from dataclasses import replace

from services.billing.core import Balance, LedgerEntry
from services.billing.reconcile import (
    LedgerTotals,
    Reconciler,
    drift,
    totals_from_entries,
)
from shared.clock import FakeClock
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.fakes import FakeBalances, FakeCheckpoints, FakeLedger, Journal
from tests.unit.billing.test_worker import PREFIX, make_shell

NOW = FakeClock().now_ms()  # the shell's clock: its entries are written at NOW


def reconciler(ledger: FakeLedger, balances: FakeBalances) -> Reconciler:
    """A reconciler whose clock is the shell's: every entry is recent (in the tail)."""
    return Reconciler(ledger, balances, FakeClock(), FakeCheckpoints())  # type: ignore[arg-type]


async def busy_account() -> tuple[FakeLedger, FakeBalances]:
    shell = make_shell()
    handle, record = shell.worker.handle, shell.record
    await handle(record(TOPUP_REQUESTED, top_up(1_000_000)))
    for n in range(1, 5):
        await handle(record(SEND_REQUESTED, send_requested(f"msg_{n}")))
    await handle(record(STATUS_CHANGED, status("msg_1", "delivered", pricing=regular("marketing"))))
    await handle(record(STATUS_CHANGED, status("msg_2", "failed")))
    await handle(record(STATUS_CHANGED, status("msg_3", "sent")))
    return shell.ledger, shell.balances


async def test_a_ledger_that_matches_its_balances_has_no_drift() -> None:
    ledger, balances = await busy_account()
    result = await reconciler(ledger, balances).run_once()
    assert (result.accounts, result.drift) == (1, 0)


async def test_a_balance_that_lost_money_is_reported_with_the_amount() -> None:
    ledger, balances = await busy_account()
    balances.documents[ACCOUNT] = replace(
        balances.documents[ACCOUNT], available=balances.documents[ACCOUNT].available - 7
    )
    result = await reconciler(ledger, balances).run_once()
    assert result.drift == 7
    assert result.drifting_accounts == (ACCOUNT,)


async def test_a_reservation_missing_from_the_balance_counts_twice() -> None:
    ledger, balances = await busy_account()
    balances.documents[ACCOUNT] = replace(
        balances.documents[ACCOUNT], reserved=balances.documents[ACCOUNT].reserved - 100
    )
    result = await reconciler(ledger, balances).run_once()
    assert result.drift == 200  # the total is short, and so are the open reservations


async def test_an_entry_written_before_its_balance_is_not_drift() -> None:
    ledger, balances = await busy_account()
    # The agent inserted the next entry and has not written the balance yet.
    ledger.entries["topup:late"] = LedgerEntry(
        key="topup:late",
        account_id=ACCOUNT,
        kind="topup",
        amount=500,
        at=0,
        source=f"{PREFIX}billing.topup-requested.v1:2",
        source_offset=1,
        source_event_id="late",
    )
    result = await reconciler(ledger, balances).run_once()
    assert result.drift == 0


async def test_entries_of_an_account_without_a_balance_yet_are_not_drift() -> None:
    journal = Journal()
    ledger, balances = FakeLedger(journal), FakeBalances(journal)
    ledger.entries["topup:first"] = LedgerEntry(
        key="topup:first",
        account_id="acc_new",
        kind="topup",
        amount=500,
        at=0,
        source="billing.topup-requested.v1:0",
        source_offset=0,
        source_event_id="first",
    )
    result = await reconciler(ledger, balances).run_once()
    assert result.drift == 0


def test_totals_count_only_what_the_balance_has_applied() -> None:
    balance = Balance(ACCOUNT, "USD", applied={"s:0": 4})
    entries = [
        LedgerEntry(
            key="a",
            account_id=ACCOUNT,
            kind="topup",
            amount=10,
            at=0,
            source="s:0",
            source_offset=4,
            source_event_id="a",
        ),
        LedgerEntry(
            key="b",
            account_id=ACCOUNT,
            kind="topup",
            amount=20,
            at=0,
            source="s:0",
            source_offset=5,
            source_event_id="b",
        ),
    ]
    assert totals_from_entries(entries, balance) == LedgerTotals(topups=10)


def test_settlements_close_reservations_and_charges_reduce_credit() -> None:
    def entry(key: str, kind: str, amount: int, reserved_amount: int = 0) -> LedgerEntry:
        return LedgerEntry(
            key=key,
            account_id=ACCOUNT,
            kind=kind,  # type: ignore[arg-type]
            amount=amount,
            reserved_amount=reserved_amount,
            at=0,
            source="s:0",
            source_offset=0,
            source_event_id=key,
        )

    entries = [
        entry("t", "topup", 1000),
        entry("r1", "reserve", 150),
        entry("r2", "reserve", 150),
        entry("c", "charge", 120, 100),
        entry("l", "release", 100, 100),
        entry("j", "reject", 50),
    ]
    balance = Balance(ACCOUNT, "USD", available=780, reserved=100, applied={"s:0": 0})
    totals = totals_from_entries(entries, balance)
    assert (totals.net_credit, totals.open_reservations) == (880, 100)
    assert drift(balance, totals) == 0


async def test_a_pass_leaves_out_entries_not_applied_yet() -> None:
    ledger, balances = await busy_account()
    ledger.entries["topup:late"] = LedgerEntry(
        key="topup:late",
        account_id=ACCOUNT,
        kind="topup",
        amount=500,
        at=NOW,
        source=f"{PREFIX}billing.topup-requested.v1:2",
        source_offset=1,
        source_event_id="late",
    )
    result = await reconciler(ledger, balances).run_once()
    assert (result.drift, result.entries, result.pending) == (0, 8, 1)


async def test_entries_older_than_the_margin_are_folded_once_and_never_read_again() -> None:
    """The work of a pass is what was written since the last one, not the ledger."""
    ledger, balances = await busy_account()
    for n in range(2_500):  # a long history: top-ups applied by the balance long ago
        key = f"topup:old{n:05}"
        ledger.entries[key] = LedgerEntry(
            key=key,
            account_id=ACCOUNT,
            kind="topup",
            amount=2,
            at=n,
            source="old:0",
            source_offset=n,
            source_event_id=key,
        )
    balances.documents[ACCOUNT] = replace(
        balances.documents[ACCOUNT],
        available=balances.documents[ACCOUNT].available + 5_000,
        applied={**balances.documents[ACCOUNT].applied, "old:0": 2_499},
    )
    clock, checkpoints = FakeClock(start_ms=NOW), FakeCheckpoints()
    job = Reconciler(
        ledger,
        balances,
        clock,
        checkpoints,  # type: ignore[arg-type]
        page_size=1000,
    )

    first = await job.run_once()
    assert (first.drift, first.folded) == (0, 2_500)  # the recent 7 stay in the tail
    # One query (FerretDB scans the ledger once per query), handed out in pages; the last
    # page holds the 500 folded and the 7 of the tail.
    assert (job.pages_read, job.queries, ledger.queries) == ([1000, 1000, 507], 1, 1)
    assert checkpoints.saves == 3  # after every page that folded entries

    second = await job.run_once()
    assert (second.drift, second.folded, job.pages_read, job.queries) == (0, 0, [7], 1)

    clock.advance(600)  # the recent ones age past the margin: folded, then nothing is left
    third = await job.run_once()
    assert (third.drift, third.folded, job.pages_read) == (0, 7, [7])
    # A restarted reconciler resumes from the stored checkpoint.
    again = Reconciler(ledger, balances, clock, checkpoints)  # type: ignore[arg-type]
    assert (await again.run_once()).drift == 0
    assert (again.pages_read, again.queries) == ([], 1)
    assert ledger.queries == 4  # one per pass, whatever the number of pages


async def test_drift_behind_the_position_is_still_reported() -> None:
    ledger, balances = await busy_account()
    clock, checkpoints = FakeClock(start_ms=NOW + 600_000), FakeCheckpoints()
    job = Reconciler(ledger, balances, clock, checkpoints)  # type: ignore[arg-type]
    assert (await job.run_once()).folded == 7
    balances.documents[ACCOUNT] = replace(
        balances.documents[ACCOUNT], available=balances.documents[ACCOUNT].available + 9
    )
    assert (await job.run_once()).drift == 9


async def test_an_old_entry_its_balance_has_not_applied_is_rechecked_until_it_is() -> None:
    ledger, balances = await busy_account()
    late = LedgerEntry(
        key="topup:late",
        account_id=ACCOUNT,
        kind="topup",
        amount=500,
        at=NOW,
        source=f"{PREFIX}billing.topup-requested.v1:2",
        source_offset=1,
        source_event_id="late",
    )
    ledger.entries[late.key] = late
    clock, checkpoints = FakeClock(start_ms=NOW + 600_000), FakeCheckpoints()
    job = Reconciler(ledger, balances, clock, checkpoints)  # type: ignore[arg-type]
    result = await job.run_once()
    assert (result.drift, result.pending, checkpoints.states["reconcile"]["pending"]) == (
        0,
        1,
        ["topup:late"],
    )
    # The balance applies it later: folded then, and the drift stays zero.
    balance = balances.documents[ACCOUNT]
    balances.documents[ACCOUNT] = replace(
        balance, available=balance.available + 500, applied={**balance.applied, late.source: 1}
    )
    result = await job.run_once()
    assert (result.drift, result.pending, checkpoints.states["reconcile"]["pending"]) == (0, 0, [])


async def test_an_erased_accounts_totals_follow_its_ledger_to_the_pseudonym() -> None:
    ledger, balances = await busy_account()
    clock, checkpoints = FakeClock(start_ms=NOW + 600_000), FakeCheckpoints()

    class Erased:
        names: dict[str, str] = {}

        async def pseudonyms(self) -> dict[str, str]:
            return self.names

    erased = Erased()
    job = Reconciler(
        ledger,
        balances,
        clock,
        checkpoints,  # type: ignore[arg-type]
        erased=erased,
    )
    assert (await job.run_once()).folded == 7
    # What `hala accounts erase` does: entries and balance move to the pseudonym.
    for key, entry in list(ledger.entries.items()):
        ledger.entries[key] = replace(entry, account_id="hmac-sha256:pseudo")
    balances.documents["hmac-sha256:pseudo"] = replace(
        balances.documents.pop(ACCOUNT), account_id="hmac-sha256:pseudo"
    )
    erased.names = {ACCOUNT: "hmac-sha256:pseudo"}
    result = await job.run_once()
    assert (result.drift, result.accounts) == (0, 1)


async def test_a_pass_defers_the_next_one_to_keep_its_share_of_the_time() -> None:
    """On FerretDB a pass scans the ledger: with `max_duty` the next pass waits until the last
    one's duration / max_duty after its start; a call meanwhile returns the last result."""
    ledger, balances = await busy_account()
    clock, checkpoints = FakeClock(start_ms=NOW), FakeCheckpoints()
    job = Reconciler(
        ledger,
        balances,
        clock,
        checkpoints,  # type: ignore[arg-type]
        max_duty=1e-9,  # any pass's duration / 1e-9 is far beyond this test
    )
    first = await job.run_once()
    assert ledger.queries == 1
    assert await job.run_once() is first  # deferred: no read of the ledger
    assert ledger.queries == 1

    every_call = Reconciler(ledger, balances, clock, checkpoints)  # type: ignore[arg-type]
    await every_call.run_once()
    await every_call.run_once()
    assert ledger.queries == 3  # without max_duty every call is a pass
