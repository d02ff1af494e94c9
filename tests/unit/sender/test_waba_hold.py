"""A WABA that Meta holds (WabaStatusChanged from status) sends nothing until it is released;
its messages wait, and expire when their validity ends, in virtual time."""

from collections.abc import AsyncIterator

import orjson
import pytest

from shared.messages import WABA_STATUS_CHANGED, WabaStatusChanged
from tests.unit.sender.fakes import Harness

WABA = "102290129340398"  # the harness's phone number belongs to it


def waba(held: bool, at: int, waba_id: str = WABA) -> WabaStatusChanged:
    return WabaStatusChanged(
        event_id=f"{waba_id}:{held}:{at}",
        waba_id=waba_id,
        held=held,
        reasons=["banned"] if held else [],
        event="DISABLED_UPDATE",
        occurred_at=at,
    )


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def test_a_held_wabas_messages_wait_until_it_is_released(h: Harness) -> None:
    h.engine.apply_waba_status(waba(True, 10))
    await h.admit(*(h.event() for _ in range(5)))
    await h.timer.advance(30.0)
    assert h.meta.calls == [] and h.statuses("sent") == []
    h.engine.apply_waba_status(waba(False, 5))  # older than the hold: ignored
    await h.timer.advance(5.0)
    assert h.meta.calls == []
    h.engine.apply_waba_status(waba(False, 20))
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 5, limit=5)


async def test_a_hold_stops_a_number_already_sending_and_expired_messages_fail(h: Harness) -> None:
    await h.admit(*(h.event() for _ in range(3)))
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 3, limit=5)
    h.engine.apply_waba_status(waba(True, 10))
    short = h.event(expires_at=h.clock.now_ms() + 10_000)
    await h.admit(short, h.event())
    await h.timer.advance(15.0)
    assert len(h.meta.calls) == 3
    [expired] = h.statuses("expired")
    assert expired.message_id == short.message_id


async def test_another_wabas_hold_does_not_stop_this_number(h: Harness) -> None:
    h.engine.apply_waba_status(waba(True, 10, waba_id="999"))
    await h.admit(h.event())
    await h.timer.run_until_true(lambda: len(h.statuses("sent")) == 1, limit=5)


def test_the_sender_applies_every_waba_status_example(h: Harness) -> None:
    for example in WABA_STATUS_CHANGED.examples:
        h.engine.apply_waba_status(WABA_STATUS_CHANGED.decode(orjson.dumps(example)))
    last = WABA_STATUS_CHANGED.examples[-1]
    assert h.engine.waba_held(str(last["waba_id"])) is last["held"]
