"""billing's reservation sweeper and reconciler page through the real ledger from where they got
to (their position kept in `billing_checkpoints`): the (at, _id) paging queries, the checkpoint
store and the erased-account lookup on the real database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pymongo import AsyncMongoClient

from services.billing.accounts import MongoErasedAccounts
from services.billing.balances import Balances
from services.billing.checkpoints import MongoCheckpoints
from services.billing.core import RESERVATION_HORIZON_MS, Balance, LedgerEntry
from services.billing.ledger import Ledger
from services.billing.reconcile import Reconciler
from services.billing.sweeper import ReservationSweeper
from shared.clock import FakeClock
from shared.collections import ACCOUNTS, LEDGER, ensure_indexes
from tests.unit.billing.fakes import FakePublisher, Journal

ACCOUNT = "acc_it"


def _entry(n: int, kind: str, at: int, **extra: Any) -> LedgerEntry:
    return LedgerEntry(
        key=f"msg_{n:03}:{'reserve' if kind == 'reserve' else 'settle'}",
        account_id=ACCOUNT,
        kind=kind,
        amount=100,
        at=at,
        source="s:0",
        source_offset=n,
        source_event_id=f"e{n}",
        message_id=f"msg_{n:03}",
        **extra,
    )


async def test_the_sweeper_and_the_reconciler_page_from_their_stored_positions(
    mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> None:
    db = mongo[f"it_{unique}"]
    try:
        await ensure_indexes(db, LEDGER)
        ledger, balances, checkpoints = Ledger(db), Balances(db), MongoCheckpoints(db)
        # Seven reservations made at the same millisecond (the order is then by _id), two
        # of them settled.
        entries = [_entry(n, "reserve", at=1_000) for n in range(7)]
        entries += [_entry(n, "release", at=2_000, reserved_amount=100) for n in (1, 4)]
        assert await ledger.add_all(entries) == set()
        clock = FakeClock(start_ms=RESERVATION_HORIZON_MS + 10_000)
        publisher = FakePublisher(Journal())
        sweeper = ReservationSweeper(
            ledger,
            publisher,
            clock,
            checkpoints,  # type: ignore[arg-type]
            page_size=3,
        )
        assert await sweeper.run_once() == 5
        assert sorted(e.message_id for _, e in publisher.published) == [
            "msg_000",
            "msg_002",
            "msg_003",
            "msg_005",
            "msg_006",
        ]
        state = await checkpoints.load("reservation_sweep")
        assert state is not None and state["position"] == {"at": 1_000, "key": "msg_006:reserve"}
        publisher.published.clear()
        assert (
            await ReservationSweeper(  # a new process resumes: nothing left to read
                ledger, publisher, clock, checkpoints
            ).run_once()
            == 0
        )  # type: ignore[arg-type]

        # The balance as billing would have it: 5 open reservations of 100 after a top-up of
        # 1,000 that the ledger does not hold... so add it.
        await ledger.add(
            LedgerEntry(
                key="topup:t1",
                account_id=ACCOUNT,
                kind="topup",
                amount=1_000,
                at=500,
                source="t:0",
                source_offset=0,
                source_event_id="t1",
            )
        )
        balance = Balance(ACCOUNT, "USD", available=500, reserved=500, applied={"s:0": 6, "t:0": 0})
        await balances.save(balance, 0)
        reconciler = Reconciler(
            ledger, balances, clock, checkpoints, page_size=4, erased=MongoErasedAccounts(db)
        )
        first = await reconciler.run_once()
        # One query, its answer handed out in pages of 4.
        assert (first.drift, first.folded, reconciler.pages_read) == (0, 10, [4, 4, 2])
        assert reconciler.queries == 1
        second = await reconciler.run_once()
        assert (second.drift, second.folded, reconciler.pages_read) == (0, 0, [])

        # Erased: the ledger and the balance move to the pseudonym, the totals follow.
        await db[LEDGER].update_many(
            {"account_id": ACCOUNT}, {"$set": {"account_id": "hmac-sha256:p"}}
        )
        await db["balances"].delete_one({"_id": ACCOUNT})
        await balances.save(replace(balance, account_id="hmac-sha256:p"), 0)
        await db[ACCOUNTS].insert_one(
            {"_id": ACCOUNT, "status": "erased", "pseudonym": "hmac-sha256:p"}
        )
        third = await reconciler.run_once()
        assert (third.drift, third.accounts) == (0, 1)
    finally:
        await mongo.drop_database(db.name)
