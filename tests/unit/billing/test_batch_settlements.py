"""billing's batch path with a settlement already written: a priced `read` after its priced
`delivered` (as Meta sends them), in one batch or two, held or read; a late charge after a
release. Each is decided in the batch (no one-record fallback), and the balance is exact."""

from __future__ import annotations

from services.billing import metrics
from services.billing.core import LedgerEntry
from shared.messages import SEND_REQUESTED, STATUS_CHANGED
from tests.unit.billing.events import regular, send_requested, status
from tests.unit.billing.test_worker import CARD, Shell, funded, make_shell

GB_MARKETING = CARD.price("marketing", "GB")
FUNDS = 100_000


def fallbacks() -> dict[str, float]:
    """billing_batch_fallbacks_total, by reason (the process's counter: compare before/after)."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.BATCH_FALLBACKS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def new_fallbacks(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before.get(r, 0) for r, n in fallbacks().items() if n != before.get(r, 0)}


def delivered(message_id: str = "msg_1") -> object:
    return status(message_id, "delivered", pricing=regular("marketing"))


def read(message_id: str = "msg_1") -> object:
    return status(message_id, "read", pricing=regular("marketing"))


async def reserved(message_id: str = "msg_1") -> Shell:
    shell = await funded(FUNDS)
    assert await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested(message_id))]
    ) == ["reserved"]
    shell.journal.steps.clear()
    return shell


def restarted(shell: Shell) -> Shell:
    """A new process over the same database: nothing held in memory."""
    fresh = make_shell()
    fresh.balances.documents, fresh.ledger.entries = shell.balances.documents, shell.ledger.entries
    fresh.offsets = dict(shell.offsets)
    return fresh


def charged_once(shell: Shell) -> None:
    assert (shell.balance.available, shell.balance.reserved) == (FUNDS - GB_MARKETING, 0)
    assert shell.balance.in_flight == 0
    settle = shell.ledger.entries["msg_1:settle"]
    assert (settle.kind, settle.amount) == ("charge", GB_MARKETING)


async def test_a_delivered_and_its_read_in_one_batch_charge_once_without_a_fallback() -> None:
    shell = await reserved()
    before = fallbacks()

    outcomes = await shell.worker.handle_batch(
        [shell.record(STATUS_CHANGED, delivered()), shell.record(STATUS_CHANGED, read())]
    )

    assert outcomes == ["charged", "duplicate"]
    assert new_fallbacks(before) == {}
    charged_once(shell)
    assert shell.journal.steps == ["entry msg_1:settle", "balance"]  # one entry, one write
    assert shell.ledger.reads == []  # the reservation was held, the settlement decided here


async def test_a_read_in_the_batch_after_its_delivered_is_decided_from_the_held_entry() -> None:
    shell = await reserved()
    before = fallbacks()

    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, delivered())]) == [
        "charged"
    ]
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, read())]) == ["duplicate"]

    assert new_fallbacks(before) == {}
    charged_once(shell)
    assert shell.ledger.reads == []  # held: no round trip
    assert shell.journal.steps == ["entry msg_1:settle", "balance"]  # a duplicate writes nothing


async def test_a_read_whose_settlement_is_not_held_reads_it_with_the_reservation() -> None:
    shell = await reserved()
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, delivered())]) == [
        "charged"
    ]
    fresh = restarted(shell)  # e.g. after a rebalance: nothing held
    before = fallbacks()

    assert await fresh.worker.handle_batch([fresh.record(STATUS_CHANGED, read())]) == ["duplicate"]

    assert new_fallbacks(before) == {}
    assert fresh.ledger.reads == [["msg_1:reserve", "msg_1:settle", "msg_1:late-charge"]]
    charged_once(fresh)
    assert fresh.journal.steps == []  # a duplicate writes nothing


async def test_a_read_whose_settlement_was_evicted_is_read_alone_and_decided_in_the_batch() -> None:
    shell = await reserved()
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, delivered())]) == [
        "charged"
    ]
    shell.worker._entries.pop("msg_1:settle")  # as if pushed out of the bounded memory
    before = fallbacks()

    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, read())]) == ["duplicate"]

    assert new_fallbacks(before) == {}
    assert shell.ledger.reads == [["msg_1:settle", "msg_1:late-charge"]]
    charged_once(shell)


async def test_a_delivery_s_settlement_is_not_read_when_nothing_else_is() -> None:
    """The first settling status of a message whose reservation is held costs no round trip
    (its settlement is almost never written yet); the rare duplicate then keeps the
    fallback, which decides it the same way."""
    shell = await reserved()
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, delivered())]) == [
        "charged"
    ]
    assert shell.ledger.reads == []
    shell.worker._entries.pop("msg_1:settle")
    before = fallbacks()

    again = status("msg_1", "delivered", pricing=regular("marketing"), event_id="again")
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, again)]) == ["duplicate"]

    assert new_fallbacks(before) == {"entry_exists": 1}
    charged_once(shell)


async def test_a_late_charge_after_a_release_is_decided_in_the_batch_and_its_read_too() -> None:
    unknown = status("msg_1", "failed", source="sender", event_id="msg_1:failed:outcome_unknown")
    shell = await reserved()
    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, unknown)]) == ["released"]
    before = fallbacks()

    assert await shell.worker.handle_batch([shell.record(STATUS_CHANGED, delivered())]) == [
        "charged"
    ]
    # after a restart the release is not held: read with its late charge, which is a duplicate
    fresh = restarted(shell)
    assert await fresh.worker.handle_batch([fresh.record(STATUS_CHANGED, read())]) == ["duplicate"]

    assert new_fallbacks(before) == {}
    # the release was held, and a delivery's late charge is not read for it alone
    assert shell.ledger.reads == []
    assert fresh.ledger.reads == [["msg_1:reserve", "msg_1:settle", "msg_1:late-charge"]]
    assert (fresh.balance.available, fresh.balance.reserved, fresh.balance.in_flight) == (
        FUNDS - GB_MARKETING,
        0,
        0,
    )
    late = fresh.ledger.entries["msg_1:late-charge"]
    assert (late.kind, late.amount, late.reserved_amount) == ("charge", GB_MARKETING, 0)
    assert fresh.ledger.entries["msg_1:settle"].kind == "release"


async def test_a_settlement_written_but_not_applied_is_finished_from_the_stored_truth() -> None:
    """kill -9 between the settle entry and the balance: the redelivered status finds the
    entry (read with its reservation) at an offset the balance has not applied; the batch goes
    one record at a time (`entry_exists`), which applies it once."""
    shell = await reserved()
    record = shell.record(STATUS_CHANGED, delivered())
    reservation = shell.ledger.entries["msg_1:reserve"]
    shell.ledger.entries["msg_1:settle"] = LedgerEntry(
        key="msg_1:settle",
        account_id=reservation.account_id,
        kind="charge",
        amount=GB_MARKETING,
        at=0,
        source=f"{record.topic}:{record.partition}",
        source_offset=record.offset,
        source_event_id="msg_1:delivered:webhook",
        message_id="msg_1",
        reserved_amount=reservation.amount,
        category="marketing",
        region=reservation.region,
        rate_card_version=CARD.version,
    )
    fresh = restarted(shell)
    before = fallbacks()

    assert await fresh.worker.handle_batch([record]) == ["charged"]

    assert new_fallbacks(before) == {"entry_exists": 1}
    charged_once(fresh)
    assert await fresh.worker.handle_batch([fresh.record(STATUS_CHANGED, read())]) == ["duplicate"]
    assert new_fallbacks(before) == {"entry_exists": 1}  # and nothing more for the read
    charged_once(fresh)


async def test_a_held_reservation_pushed_out_by_the_batch_s_own_reads_still_settles() -> None:
    """The bounded memory of entries is full: a batch reads the reservations it does not hold,
    and remembering them pushes out the oldest held ones, which may be this batch's own (a
    campaign's deliveries come in the order of its reservations). The batch decides from what
    it held when it planned its reads: every delivery is charged, none ignored (the 4
    reservations a 30,000-message campaign bench left held)."""
    shell = await funded(FUNDS, reservation_cache_size=2)
    ids = ["msg_1", "msg_2", "msg_3"]
    assert (
        await shell.worker.handle_batch(
            [shell.record(SEND_REQUESTED, send_requested(m)) for m in ids]
        )
        == ["reserved"] * 3
    )
    assert list(shell.worker._entries) == ["msg_2:reserve", "msg_3:reserve"]  # msg_1's out

    outcomes = await shell.worker.handle_batch(
        [shell.record(STATUS_CHANGED, delivered(m)) for m in ("msg_1", "msg_2")]
    )

    assert outcomes == ["charged", "charged"]
    assert shell.ledger.reads[0][0] == "msg_1:reserve"  # read; msg_2's was held
    assert "msg_2:reserve" not in shell.ledger.reads[0]
    assert [shell.ledger.entries[f"{m}:settle"].kind for m in ("msg_1", "msg_2")] == ["charge"] * 2
    assert shell.balance.in_flight == 1  # msg_3's
    assert shell.balance.reserved == shell.ledger.entries["msg_3:reserve"].amount
