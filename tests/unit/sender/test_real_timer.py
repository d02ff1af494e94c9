"""The real timer a lane's dispatcher waits on: a stop must always stop it."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.sender.ports import RealTimer
from shared.clock import SystemClock


@pytest.mark.parametrize("deadline_in_s", [60.0, float("inf")])
async def test_a_cancel_that_arrives_as_the_event_is_set_stops_the_waiting_loop(
    deadline_in_s: float,
) -> None:
    # On Python 3.11 asyncio.wait_for returns the inner result when a cancellation and the
    # result arrive together, so a loop around it went on waiting, cancelled, for good.
    timer = RealTimer(SystemClock())
    wake = asyncio.Event()
    woken = 0

    async def dispatcher() -> None:
        nonlocal woken
        while True:
            await timer.wait(wake, time.monotonic() + deadline_in_s)
            wake.clear()
            woken += 1

    for _ in range(20):
        wake.clear()
        task = asyncio.create_task(dispatcher())
        await asyncio.sleep(0.01)  # it is waiting
        wake.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2):
                await task
    assert woken == 0  # each cancel won over the wake-up it arrived with
