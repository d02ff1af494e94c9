"""billing applies each account's own low-balance threshold (`accounts.low_balance_threshold`),
read with the balance and refreshed after `threshold_refresh_s`, on the batch path and the
one-record path; an account without one gets the default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.billing.worker import AccountSettings
from shared.clock import FakeClock
from shared.messages import LOW_BALANCE_ALERTED, SEND_REQUESTED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, send_requested, top_up
from tests.unit.billing.test_worker import GB_UTILITY, Shell, make_shell


class FakeThresholds:
    """`accounts` as the admin CLI writes them; records every read."""

    def __init__(self, known: dict[str, int]) -> None:
        self.known = known
        self.reads: list[list[str]] = []

    async def settings(self, account_ids: Sequence[str]) -> dict[str, AccountSettings]:
        self.reads.append(list(account_ids))
        return {
            a: AccountSettings(low_balance_threshold=self.known[a])
            for a in account_ids
            if a in self.known
        }


def _shell(thresholds: dict[str, int], **options: Any) -> tuple[Shell, FakeThresholds, FakeClock]:
    source = FakeThresholds(thresholds)
    clock = FakeClock()
    shell = make_shell(thresholds=source, threshold_refresh_s=30.0, clock=clock, **options)
    return shell, source, clock


def _alerts(shell: Shell) -> list[Any]:
    return [e for name, e in shell.publisher.published if name == LOW_BALANCE_ALERTED.name]


async def test_a_crossing_of_the_accounts_own_threshold_alerts_exactly_once() -> None:
    # the default (make_shell's) is 0: only the account's own 60 000 can alert
    shell, source, _ = _shell({ACCOUNT: 60_000})
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100_000))])
    await shell.worker.handle_batch(
        [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(3)]
    )
    [alert] = _alerts(shell)
    assert (alert.event_id, alert.threshold, alert.available) == (
        f"{ACCOUNT}:low:1",
        60_000,
        100_000 - 2 * GB_UTILITY,
    )
    assert shell.balance.low_balance_threshold == 60_000  # kept on the balance document
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_9"))])
    assert len(_alerts(shell)) == 1  # still below: no second alert
    assert source.reads == [[ACCOUNT]]  # read once, with the balance


async def test_the_one_record_path_applies_the_accounts_threshold_too() -> None:
    shell, _, _ = _shell({ACCOUNT: 80_000})
    await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(100_000)))
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    [alert] = _alerts(shell)
    assert alert.threshold == 80_000


async def test_an_account_without_a_threshold_of_its_own_gets_the_default() -> None:
    shell, source, _ = _shell({}, low_balance_threshold=90_000)
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100_000))])
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    [alert] = _alerts(shell)
    assert alert.threshold == 90_000 and source.reads == [[ACCOUNT]]


async def test_a_changed_threshold_applies_after_the_refresh_interval() -> None:
    shell, source, clock = _shell({ACCOUNT: 10_000})
    await shell.worker.handle_batch([shell.record(TOPUP_REQUESTED, top_up(100_000))])
    source.known[ACCOUNT] = 90_000  # `hala accounts update --low-balance-threshold`
    clock.advance(29)
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    assert _alerts(shell) == [] and len(source.reads) == 1  # not yet
    clock.advance(1)
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_2"))])
    [alert] = _alerts(shell)
    assert alert.threshold == 90_000 and len(source.reads) == 2
    assert alert.available == 100_000 - 2 * GB_UTILITY


async def test_one_read_serves_every_account_of_a_batch() -> None:
    shell, source, _ = _shell({ACCOUNT: 1, "acc_other": 2})
    await shell.worker.handle_batch(
        [
            shell.record(TOPUP_REQUESTED, top_up(100_000)),
            shell.record(TOPUP_REQUESTED, top_up(100_000, "topup_o", account_id="acc_other")),
        ]
    )
    assert source.reads == [[ACCOUNT, "acc_other"]]
    assert shell.balances.documents["acc_other"].low_balance_threshold == 2
