"""What a batch reads of the ledger before deciding, and which held entries it decides from
(core.plan_ledger_reads: one pass over the batch's events)."""

from __future__ import annotations

from typing import Any

import pytest

from services.billing.core import (
    EntryKind,
    LedgerEntry,
    LedgerReads,
    plan_ledger_reads,
    stored_entry_keys,
)
from shared.messages import Pricing
from tests.unit.billing.events import free, regular, send_requested, status, top_up


def entry(key: str, kind: EntryKind = "reserve") -> LedgerEntry:
    return LedgerEntry(
        key=key,
        account_id="acc_test",
        kind=kind,
        amount=24_200,
        at=1_764_000_000_000,
        source="messages.send-requested.v1:0",
        source_offset=0,
        source_event_id=key,
        message_id=key.split(":")[0],
    )


def held(*entries: LedgerEntry) -> dict[str, LedgerEntry]:
    return {e.key: e for e in entries}


def test_statuses_read_their_reservations_not_held_and_pin_those_held() -> None:
    memory = held(entry("msg_1:reserve"))
    plan = plan_ledger_reads(
        [status("msg_1", "failed"), status("msg_2", "failed"), send_requested("msg_3")], memory
    )
    assert plan.to_read == ["msg_2:reserve", "msg_1:settle", "msg_2:settle"]
    assert plan.pinned == memory


def test_a_priced_read_reads_its_settlement_and_late_charge_even_when_nothing_else_is_read() -> (
    None
):
    memory = held(entry("msg_1:reserve"))
    plan = plan_ledger_reads([status("msg_1", "read", pricing=regular())], memory)
    assert plan == LedgerReads(["msg_1:settle", "msg_1:late-charge"], memory)


def test_a_delivery_alone_reads_nothing_for_its_settlement_it_is_optimistic() -> None:
    memory = held(entry("msg_1:reserve"))
    plan = plan_ledger_reads([status("msg_1", "delivered", pricing=regular())], memory)
    assert plan == LedgerReads([], memory)


def test_a_delivery_reads_its_settlement_when_the_ledger_is_read_anyway_after_the_others() -> None:
    memory = held(entry("msg_1:reserve"))
    plan = plan_ledger_reads(
        [
            status("msg_1", "delivered", pricing=regular()),
            status("msg_2", "read", pricing=regular()),
        ],
        memory,
    )
    # reservations first, then the settlements likely written (a read's), then the others
    assert plan.to_read == [
        "msg_2:reserve",
        "msg_2:settle",
        "msg_2:late-charge",
        "msg_1:settle",
        "msg_1:late-charge",
    ]


def test_only_a_messages_first_settling_status_decides_whether_its_settlement_is_read() -> None:
    memory = held(entry("msg_1:reserve"))
    plan = plan_ledger_reads(
        [
            status("msg_1", "delivered", pricing=regular()),
            status("msg_1", "read", pricing=regular()),
        ],
        memory,
    )
    # the read finds what the delivery decided in the batch: no read for it
    assert plan == LedgerReads([], memory)


def test_a_held_settlement_is_pinned_and_not_read() -> None:
    memory = held(entry("msg_1:reserve"), entry("msg_1:settle", "charge"))
    plan = plan_ledger_reads([status("msg_1", "read", pricing=regular())], memory)
    assert plan == LedgerReads([], memory)


def test_a_priced_status_after_a_held_release_reads_only_its_late_charge() -> None:
    memory = held(entry("msg_1:reserve"), entry("msg_1:settle", "release"))
    plan = plan_ledger_reads([status("msg_1", "read", pricing=regular())], memory)
    assert plan == LedgerReads(["msg_1:late-charge"], memory)
    late = held(*memory.values(), entry("msg_1:late-charge", "charge"))
    assert plan_ledger_reads([status("msg_1", "read", pricing=regular())], late) == (
        LedgerReads([], late)
    )


def test_a_duplicate_request_and_a_top_up_pin_their_held_entries_and_read_nothing() -> None:
    memory = held(entry("msg_1:reserve"), entry("topup:topup_1", "topup"), entry("msg_9:reserve"))
    plan = plan_ledger_reads([send_requested("msg_1"), top_up(100)], memory)
    assert plan == LedgerReads([], held(memory["msg_1:reserve"], memory["topup:topup_1"]))


def test_keys_are_read_once_and_entries_pinned_in_the_order_the_batch_meets_them() -> None:
    memory = held(entry("msg_2:reserve"), entry("msg_1:reserve"))
    plan = plan_ledger_reads(
        [
            status("msg_1", "failed"),
            status("msg_3", "failed"),
            status("msg_2", "expired"),
            status("msg_3", "rejected"),
            status("msg_1", "rejected"),
        ],
        memory,
    )
    assert plan.to_read == ["msg_3:reserve", "msg_1:settle", "msg_3:settle", "msg_2:settle"]
    assert list(plan.pinned) == ["msg_1:reserve", "msg_2:reserve"]


@pytest.mark.parametrize("step", ["delivered", "read", "failed", "expired", "rejected"])
@pytest.mark.parametrize("pricing", [None, regular(), free()])
@pytest.mark.parametrize("settled", [None, "charge", "release"])
@pytest.mark.parametrize("charged_late", [False, True])
def test_a_status_pins_every_held_entry_it_can_be_decided_from(
    step: Any, pricing: Pricing | None, settled: EntryKind | None, charged_late: bool
) -> None:
    event = status("msg_1", step, pricing=pricing)
    memory = held(entry("msg_1:reserve"), entry("msg_9:settle", "charge"))
    if settled is not None:
        memory["msg_1:settle"] = entry("msg_1:settle", settled)
    if charged_late:
        memory["msg_1:late-charge"] = entry("msg_1:late-charge", "charge")
    pinned = plan_ledger_reads([event], memory).pinned
    could_be = ("msg_1:reserve", *stored_entry_keys(event))
    assert pinned == {key: memory[key] for key in could_be if key in memory}
