"""The cap on an account's messages in flight: billing counts open reservations on the balance
and rejects a send at the cap (reason `too_many_in_flight`), on the pure core, the batch path
and the one-record path, with the account's own cap or the default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.billing.balances import balance_from_document, balance_to_document
from services.billing.core import TOO_MANY_IN_FLIGHT, with_in_flight_limit
from services.billing.ledger import entry_from_document, entry_to_document
from services.billing.worker import AccountSettings
from shared.clock import FakeClock
from shared.messages import SEND_APPROVED, SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.test_core import GB_UTILITY, books
from tests.unit.billing.test_worker import Shell, make_shell

# --- the pure decisions ------------------------------------------------------------------------


def test_open_reservations_are_counted_and_a_send_at_the_cap_is_rejected() -> None:
    ledger = books(available=100 * GB_UTILITY)
    ledger.balance = with_in_flight_limit(ledger.balance, 2)
    assert [ledger.feed(send_requested(f"msg_{n}")).outcome for n in range(3)] == [
        "reserved",
        "reserved",
        "rejected",
    ]
    assert (ledger.balance.in_flight, ledger.balance.reserved) == (2, 2 * GB_UTILITY)
    rejected = ledger.published[-1]
    assert (rejected.status, rejected.reason) == ("rejected", TOO_MANY_IN_FLIGHT)
    assert ledger.entries["msg_2:reserve"].reason == TOO_MANY_IN_FLIGHT
    # One settles (charged, or released): there is room for one more.
    ledger.feed(status("msg_0", "delivered", pricing=regular()))
    ledger.feed(status("msg_1", "failed", source="sender"))
    assert ledger.balance.in_flight == 0
    assert ledger.feed(send_requested("msg_3")).outcome == "reserved"
    assert ledger.balance.in_flight == 1


def test_a_cap_never_lets_the_count_pass_it_whatever_arrives() -> None:
    ledger = books(available=1000 * GB_UTILITY)
    ledger.balance = with_in_flight_limit(ledger.balance, 5)
    outcomes = [ledger.feed(send_requested(f"msg_{n}")).outcome for n in range(50)]
    assert outcomes.count("reserved") == 5 and ledger.balance.in_flight == 5
    # Settling a rejected message moves nothing (it has no reservation).
    assert ledger.feed(status("msg_40", "failed", source="sender")).outcome == "ignored"
    assert ledger.balance.in_flight == 5


def test_a_replayed_or_duplicated_send_counts_once() -> None:
    ledger = books(available=100 * GB_UTILITY)
    ledger.balance = with_in_flight_limit(ledger.balance, 10)
    request = send_requested("msg_1")
    ledger.feed(request)
    assert ledger.feed(request).outcome == "duplicate"  # the same request at a new offset
    assert ledger.balance.in_flight == 1


def test_no_cap_means_no_refusal_and_insufficient_credit_keeps_its_reason() -> None:
    ledger = books(available=GB_UTILITY)
    assert ledger.feed(send_requested("msg_1")).outcome == "reserved"
    assert ledger.feed(send_requested("msg_2")).outcome == "rejected"
    assert ledger.published[-1].reason == "insufficient_credit"
    assert ledger.balance.in_flight == 1


def test_the_count_and_the_reason_survive_the_documents() -> None:
    ledger = books(available=10 * GB_UTILITY)
    ledger.balance = with_in_flight_limit(ledger.balance, 1)
    ledger.feed(send_requested("msg_1"))
    ledger.feed(send_requested("msg_2"))
    again = balance_from_document(balance_to_document(ledger.balance, 0))
    assert (again.in_flight, again.in_flight_limit) == (1, 1)
    entry = ledger.entries["msg_2:reserve"]
    assert entry_from_document(entry_to_document(entry)) == entry
    # Documents from before the count: no count, no reason.
    old = balance_to_document(ledger.balance, 0)
    del old["in_flight"], old["in_flight_limit"]
    assert balance_from_document(old).in_flight == 0
    old_entry = entry_to_document(entry)
    del old_entry["reason"]
    assert entry_from_document(old_entry).reason == ""


# --- the worker: the account's own cap, else the default -----------------------------------------


class FakeSettings:
    def __init__(self, known: dict[str, AccountSettings]) -> None:
        self.known = known

    async def settings(self, account_ids: Sequence[str]) -> dict[str, AccountSettings]:
        return {a: self.known[a] for a in account_ids if a in self.known}


def _published(shell: Shell, topic: Any) -> list[Any]:
    return [e for name, e in shell.publisher.published if name == topic.name]


async def test_the_batch_path_applies_the_default_cap_and_keeps_it_on_the_balance() -> None:
    shell = make_shell(max_in_flight=3, thresholds=FakeSettings({}), clock=FakeClock())
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100 * GB_UTILITY))])
    outcomes = await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(5)]
    )
    assert outcomes == ["reserved"] * 3 + ["rejected"] * 2
    assert len(_published(shell, SEND_APPROVED)) == 3
    assert [e.reason for e in _published(shell, STATUS_CHANGED)] == [TOO_MANY_IN_FLIGHT] * 2
    stored = shell.balances.documents[ACCOUNT]
    assert (stored.in_flight, stored.in_flight_limit) == (3, 3)
    # A delivery settles one: the next send goes.
    await shell.worker.handle_batch(
        [
            shell.record(STATUS_CHANGED, status("msg_0", "delivered", pricing=regular())),
            shell.record(SEND_REQUESTED, send_requested("msg_9")),
        ]
    )
    assert shell.balances.documents[ACCOUNT].in_flight == 3
    assert len(_published(shell, SEND_APPROVED)) == 4


async def test_the_one_record_path_applies_the_accounts_own_cap() -> None:
    source = FakeSettings({ACCOUNT: AccountSettings(max_in_flight=1)})
    shell = make_shell(max_in_flight=1000, thresholds=source, clock=FakeClock())
    await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(100 * GB_UTILITY)))
    first = await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    second = await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_2")))
    assert (first, second) == ("reserved", "rejected")
    assert shell.balances.documents[ACCOUNT].in_flight_limit == 1


async def test_an_account_without_a_cap_of_its_own_and_a_default_of_0_has_none() -> None:
    shell = make_shell(max_in_flight=0, thresholds=FakeSettings({}), clock=FakeClock())
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100 * GB_UTILITY))])
    outcomes = await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(20)]
    )
    assert outcomes == ["reserved"] * 20
    assert shell.balances.documents[ACCOUNT].in_flight == 20
