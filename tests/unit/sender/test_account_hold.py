"""An account held by guard's fraud and spam rules (accounts.hold-changed.v1) sends nothing
until it is released: its queued messages wait, and expire when their validity ends, in virtual
time. Another account's hold changes nothing."""

from collections.abc import AsyncIterator

import orjson
import pytest

from shared.messages import ACCOUNT_HOLD_CHANGED, AccountHoldChanged
from tests.unit.sender.fakes import Harness


def hold(account_id: str, held: bool, at: int) -> AccountHoldChanged:
    return AccountHoldChanged(
        event_id=f"{account_id}:{held}:{at}",
        account_id=account_id,
        held=held,
        rules=["failure_rate"] if held else [],
        change="held" if held else "released",
        occurred_at=at,
    )


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def test_a_held_accounts_messages_wait_until_it_is_released_or_expire(h: Harness) -> None:
    account = h.event().account_id
    h.engine.apply_account_hold(hold(account, True, 10))
    short = h.event(expires_at=h.clock.now_ms() + 10_000)
    await h.admit(short, *(h.event() for _ in range(3)))
    await h.timer.advance(15.0)
    assert h.meta.calls == [] and h.statuses("sent") == []
    [expired] = h.statuses("expired")
    assert expired.message_id == short.message_id
    # Its numbers send nothing: the fetch policy sees its partition drain at 0 (and pauses it).
    [backlog] = h.engine.backlogs().values()
    assert backlog.held == 3 and backlog.drain_per_second == 0
    h.engine.apply_account_hold(hold(account, False, 5))  # older than the hold: ignored
    await h.timer.advance(5.0)
    assert h.meta.calls == []
    h.engine.apply_account_hold(hold(account, False, 20))
    assert all(b.drain_per_second > 0 for b in h.engine.backlogs().values())
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 3, limit=5)


async def test_another_accounts_hold_does_not_stop_this_number(h: Harness) -> None:
    h.engine.apply_account_hold(hold("acc_other", True, 10))
    await h.admit(h.event())
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 1, limit=5)


def test_the_sender_applies_every_hold_example(h: Harness) -> None:
    for example in ACCOUNT_HOLD_CHANGED.examples:
        h.engine.apply_account_hold(ACCOUNT_HOLD_CHANGED.decode(orjson.dumps(example)))
    last = ACCOUNT_HOLD_CHANGED.examples[-1]
    assert h.engine.account_held(str(last["account_id"])) is last["held"]
