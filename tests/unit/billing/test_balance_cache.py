"""Balances held in memory by billing's batch path: read once, then decided from memory; the
outputs leave as soon as the entries are durable; anything unusual makes the stored document the
truth again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from services.billing.core import Balance
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.test_worker import CARD, GB_UTILITY, Shell, funded, make_shell

SEND_APPROVED = "publish messages.send-approved.v1"


async def settle() -> None:
    """Let every task that can run, run (no real time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def hold(
    target: Callable[..., Awaitable[Any]], seen: list[Any], steps: list[str]
) -> tuple[Callable[..., Awaitable[Any]], asyncio.Event]:
    """`target`, held until the event is set; records the journal as it was when called."""
    release = asyncio.Event()

    async def held(*args: Any) -> Any:
        seen.append(list(steps))
        await release.wait()
        return await target(*args)

    return held, release


async def reserved_once(shell: Shell, message_id: str = "msg_0") -> None:
    """One batch, so that the account's balance is held from then on."""
    assert await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested(message_id))]
    ) == ["reserved"]
    shell.journal.steps.clear()
    shell.balances.reads.clear()


async def batch_held_at(
    owner: str, call: str
) -> tuple[Shell, asyncio.Task[list[str]], list[list[str]], asyncio.Event]:
    """With the account's balance held, a batch for msg_1 started and stopped at `call` of
    `owner` ("balances" or "publisher"): (shell, the batch, the journal at the call, release)."""
    shell = await funded()
    await reserved_once(shell)
    seen: list[list[str]] = []
    target = getattr(shell, owner)
    held, release = hold(getattr(target, call), seen, shell.journal.steps)
    setattr(target, call, held)
    batch = asyncio.create_task(
        shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    )
    await settle()
    return shell, batch, seen, release


async def test_a_balance_read_once_is_decided_from_memory_by_the_next_batches() -> None:
    shell = await funded()
    shell.balances.reads.clear()

    for n in range(3):
        await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested(f"msg_{n}"))])
    await shell.worker.handle_batch(
        [shell.record(STATUS_CHANGED, status("msg_0", "delivered", pricing=regular("utility")))]
    )

    assert shell.balances.reads == [ACCOUNT]  # the first batch's, only
    assert shell.journal.steps.count("balance") == 4  # each batch still writes it
    assert shell.worker.held_balance(ACCOUNT) == shell.balance
    assert (shell.balance.available, shell.balance.reserved) == (
        100_000 - 3 * GB_UTILITY,
        2 * GB_UTILITY,
    )


async def test_an_account_without_a_document_is_read_once_too() -> None:
    shell = make_shell()
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100_000))])
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])

    assert shell.balances.reads == [ACCOUNT]
    assert shell.balance.reserved == GB_UTILITY


async def test_with_the_balance_held_the_outputs_leave_one_round_trip_after_the_read() -> None:
    shell, batch, seen, release = await batch_held_at("publisher", "publish_all")

    assert seen == [["entry msg_1:reserve"]]
    assert shell.balances.reads == []  # no read: the entry was the only round trip before
    release.set()
    assert await batch == ["reserved"]


async def test_a_batch_is_finished_only_once_its_balance_is_durable() -> None:
    shell, batch, seen, release = await batch_held_at("balances", "save_all")

    assert seen == [["entry msg_1:reserve", SEND_APPROVED]]  # published first
    assert not batch.done()  # so not acked: a crash now redelivers it (entry_exists)
    release.set()
    assert await batch == ["reserved"]
    assert shell.balance.reserved == 2 * GB_UTILITY


async def test_a_batch_that_goes_one_record_at_a_time_forgets_the_balances_held() -> None:
    shell = await funded()
    await reserved_once(shell)
    shell.balances.failures.append("save_then_fail")  # the write lands, its answer is lost

    # The one-record path reads the stored document: the offset is applied, so it only
    # publishes again.
    assert await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested("msg_1"))]
    ) == ["replayed"]
    assert shell.worker.held_balance(ACCOUNT) is None
    shell.balances.reads.clear()
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_2"))])

    assert shell.balances.reads == [ACCOUNT]  # read again, not decided from a stale copy
    assert shell.balance.reserved == 3 * GB_UTILITY
    assert shell.balance.applied["t.messages.send-requested.v1:2"] == 2


async def test_a_fallback_forgets_every_account_not_only_the_batch_s() -> None:
    shell = make_shell()
    other = "acc_other"
    await shell.worker.handle_batch(
        [
            shell.record(TOPUP_REQUESTED, top_up(100_000)),
            shell.record(TOPUP_REQUESTED, top_up(100_000, "topup_o", account_id=other)),
        ]
    )
    assert shell.worker.held_balance(other) is not None

    await shell.worker.handle_batch([shell.raw(SEND_REQUESTED, b"not json")])

    assert shell.worker.held_balance(other) is None
    assert shell.worker.held_balance(ACCOUNT) is None


async def test_a_batch_cancelled_part_way_forgets_the_balances_held() -> None:
    shell, batch, _, _ = await batch_held_at("balances", "save_all")

    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert shell.worker.held_balance(ACCOUNT) is None


async def test_a_batch_in_flight_when_balances_are_forgotten_does_not_hold_them_again() -> None:
    shell, batch, _, release = await batch_held_at("publisher", "publish_all")

    shell.worker.forget_balances()  # partitions revoked meanwhile
    release.set()
    assert await batch == ["reserved"]
    assert shell.worker.held_balance(ACCOUNT) is None


async def test_the_one_record_path_reads_the_stored_balance_not_the_held_one() -> None:
    shell = await funded()
    await reserved_once(shell)
    # As if another process had owned the partition for a while and applied a top-up.
    stored = shell.balance
    shell.balances.documents[ACCOUNT] = replace(
        stored,
        available=stored.available + 5,
        applied={**stored.applied, "t.billing.topup-requested.v1:2": 1},
    )

    assert await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1"))) == (
        "reserved"
    )
    assert shell.balance.available == 100_000 + 5 - 2 * GB_UTILITY
    assert shell.worker.held_balance(ACCOUNT) is None


async def test_at_most_balance_cache_size_balances_are_held_least_recently_used_out() -> None:
    shell = make_shell(balance_cache_size=2)
    accounts = ["acc_0", "acc_1", "acc_2"]
    for account in accounts:
        await shell.worker.handle_batch(
            [shell.record(TOPUP_REQUESTED, top_up(10, f"topup_{account}", account_id=account))]
        )

    assert [shell.worker.held_balance(a) is not None for a in accounts] == [False, True, True]
    assert shell.worker.held_balance("acc_2") == Balance(
        "acc_2",
        CARD.currency,
        available=10,
        low_balance_threshold=0,
        low_balance_armed=True,
        applied={"t.billing.topup-requested.v1:2": 2},
    )
