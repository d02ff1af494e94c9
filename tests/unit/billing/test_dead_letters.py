"""No record can stop billing, and none leaves money half-moved: a bug is retried a few times,
then the record is dead-lettered (after removing the ledger entry it wrote if its balance never
applied it) and the records after it are applied; many in a row hold the partition."""

from __future__ import annotations

from typing import Any

import pytest

from services.billing.core import Balance
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.fakes import Sleeps, StopRetrying
from tests.unit.billing.test_worker import GB_UTILITY, Shell, funded


def _fail_saves_of(shell: Shell, marked_offsets: set[int], times: int | None = None) -> None:
    """The real fake balance store, raising a bug when it saves a balance that applies the
    ledger entry of one of the marked send-requested offsets (written by then)."""
    save = shell.balances.save
    failed = 0

    async def buggy_save(balance: Balance, now: int) -> None:
        nonlocal failed
        source = "t.messages.send-requested.v1:2"
        stored = shell.balances.documents.get(balance.account_id)
        before = stored.applied.get(source, -1) if stored else -1
        after = balance.applied.get(source, -1)
        entries = {e.source_offset for e in shell.ledger.entries.values() if e.source == source}
        hit = [o for o in marked_offsets & entries if before < o <= after]
        if hit and (times is None or failed < times):
            failed += 1
            raise RuntimeError(f"cannot save a balance applying offset {hit[0]}")
        await save(balance, now)

    async def buggy_save_all(balances: list[Balance], now: int) -> None:
        for balance in balances:
            await buggy_save(balance, now)

    shell.balances.save = buggy_save  # type: ignore[method-assign]
    shell.balances.save_all = buggy_save_all  # type: ignore[method-assign]


async def test_a_bug_between_the_entry_and_the_balance_removes_the_entry_then_dead_letters() -> (
    None
):
    shell = await funded()
    _fail_saves_of(shell, {1})
    records = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(3)]

    outcomes = [await shell.worker.handle(r) for r in records]

    assert outcomes == ["reserved", "dead_lettered", "reserved"]
    assert "msg_1:reserve" not in shell.ledger.entries  # no money half-moved
    assert "remove msg_1:reserve" in shell.journal.steps
    assert shell.balance.reserved == 2 * GB_UTILITY
    [(dead, error)] = shell.publisher.dead_letters
    assert dead == records[1] and isinstance(error, RuntimeError)
    assert [e.message_id for _, e in shell.publisher.published] == ["msg_0", "msg_2"]


async def test_a_replayed_dead_letter_is_applied_once_the_bug_is_gone() -> None:
    shell = await funded()
    _fail_saves_of(shell, {1}, times=3)
    request = send_requested("msg_1")
    first = [
        shell.record(SEND_REQUESTED, send_requested("msg_0")),
        shell.record(SEND_REQUESTED, request),
        shell.record(SEND_REQUESTED, send_requested("msg_2")),
    ]
    assert [await shell.worker.handle(r) for r in first] == [
        "reserved",
        "dead_lettered",
        "reserved",
    ]

    # `hala dlq replay` writes it back to its topic: a new offset.
    assert await shell.worker.handle(shell.record(SEND_REQUESTED, request)) == "reserved"
    assert shell.balance.reserved == 3 * GB_UTILITY
    assert shell.ledger.entries["msg_1:reserve"].source_offset == 3


async def test_a_bug_after_the_balance_keeps_the_entry_and_a_replay_changes_nothing() -> None:
    shell = await funded()
    publish = shell.publisher.publish
    failed = 0

    async def buggy_publish(topic: Any, event: Any) -> None:
        nonlocal failed
        if getattr(event, "message_id", None) == "msg_1" and failed < 3:
            failed += 1
            raise TypeError("cannot encode")
        await publish(topic, event)

    shell.publisher.publish = buggy_publish  # type: ignore[method-assign]
    request = send_requested("msg_1")
    assert await shell.worker.handle(shell.record(SEND_REQUESTED, request)) == "dead_lettered"
    assert "msg_1:reserve" in shell.ledger.entries  # its balance applied it: it stays
    assert shell.balance.reserved == GB_UTILITY

    assert await shell.worker.handle(shell.record(SEND_REQUESTED, request)) == "duplicate"
    assert shell.balance.reserved == GB_UTILITY  # charged once
    assert [e.message_id for _, e in shell.publisher.published] == ["msg_1"]


async def test_a_bug_in_a_batch_dead_letters_only_its_record() -> None:
    shell = await funded()
    _fail_saves_of(shell, {1})
    batch = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(3)]

    outcomes = await shell.worker.handle_batch(batch)

    # The batch's single balance write applies offset 2 (and so 1): it fails, and the batch
    # goes one record at a time, where only msg_1's write keeps failing.
    assert outcomes == ["reserved", "dead_lettered", "reserved"]
    assert set(shell.ledger.entries) >= {"msg_0:reserve", "msg_2:reserve"}
    assert "msg_1:reserve" not in shell.ledger.entries
    assert shell.balance.reserved == 2 * GB_UTILITY
    reserved_in_ledger = sum(
        e.amount
        for e in shell.ledger.entries.values()
        if e.kind == "reserve" and e.account_id == ACCOUNT
    )
    assert reserved_in_ledger == shell.balance.reserved


async def test_a_bug_that_goes_away_on_a_retry_writes_no_dead_letter() -> None:
    shell = await funded()
    _fail_saves_of(shell, {0}, times=1)
    record = shell.record(SEND_REQUESTED, send_requested("msg_0"))
    assert await shell.worker.handle(record) == "reserved"
    assert shell.publisher.dead_letters == []
    assert shell.balance.reserved == GB_UTILITY


async def test_many_bugs_in_a_row_hold_the_partition_instead_of_draining_it() -> None:
    shell = await funded(sleeps=Sleeps(stop_after=6), dead_letter_limit=2)

    async def broken(_: str) -> None:
        raise KeyError("a bad deploy")

    shell.balances.get = broken  # type: ignore[method-assign]
    for n in range(2):
        assert (
            await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(5, f"topup_{n}")))
            == "dead_lettered"
        )
    with pytest.raises(StopRetrying):  # the third one is held, not dead-lettered
        await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(5, "topup_9")))
    assert len(shell.publisher.dead_letters) == 2


async def test_a_status_whose_settlement_hits_a_bug_is_dead_lettered_and_leaves_the_hold() -> None:
    shell = await funded()
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    get = shell.ledger.get

    async def buggy_get(key: str) -> Any:
        if key == "msg_1:reserve":
            raise ValueError("a reservation shaped differently")
        return await get(key)

    shell.ledger.get = buggy_get  # type: ignore[method-assign]
    delivered = shell.record(
        STATUS_CHANGED, status("msg_1", "delivered", pricing=regular("utility"))
    )
    shell.worker._entries.clear()
    assert await shell.worker.handle(delivered) == "dead_lettered"
    assert shell.balance.reserved == GB_UTILITY  # nothing settled, nothing lost
    assert "msg_1:settle" not in shell.ledger.entries
