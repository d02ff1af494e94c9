"""What the sender's engine needs from the outside (its ports), and the real timer.

The engine is written against these: the repository, the phone-number directory, the Meta
client and the status publisher implement them in production, the fakes in
tests/unit/sender/fakes.py in unit tests (virtual time through `Timer`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from services.sender.meta_client import SendOutcome
from services.sender.repository import PhoneNumber, SendRecord
from shared.clock import Clock
from shared.kafka import Failure
from shared.messages import SendApproved, StatusChanged


class Timer(Protocol):
    async def sleep_until(self, deadline: float) -> None: ...

    async def wait(self, event: asyncio.Event, deadline: float) -> None:
        """Return when `event` is set or the monotonic `deadline` passed."""
        ...


class RealTimer:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self._clock.monotonic()
        await asyncio.sleep(max(0.0, delay))

    async def wait(self, event: asyncio.Event, deadline: float) -> None:
        if deadline == math.inf:
            await event.wait()
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the lane's dispatcher then never stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - self._clock.monotonic())):
                await event.wait()


class SendsStore(Protocol):
    async def find_send(self, message_id: str) -> SendRecord | None: ...

    async def start_send(
        self, message_id: str, *, phone_number_id: str, account_id: str, now_ms: int
    ) -> SendRecord | None: ...

    async def record_unsent_outcome(
        self,
        message_id: str,
        state: str,
        *,
        phone_number_id: str,
        account_id: str,
        now_ms: int,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> SendRecord | None: ...

    async def record_outcome(
        self,
        message_id: str,
        state: str,
        *,
        phone_number_id: str,
        account_id: str,
        attempts: int,
        now_ms: int,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> SendRecord | None: ...

    async def update_send(
        self,
        message_id: str,
        *,
        state: str,
        attempts: int,
        now_ms: int,
        wamid: str | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None: ...

    async def abandon_send(self, message_id: str) -> None: ...

    async def load_tier_usage(self, portfolio_id: str, since_ms: int) -> list[tuple[str, int]]: ...

    async def record_tier_use(self, portfolio_id: str, recipient: str, at_ms: int) -> None: ...


class PhoneNumbers(Protocol):
    async def get(self, phone_number_id: str) -> PhoneNumber | None: ...


class MetaSender(Protocol):
    async def send(
        self, phone_number_id: str, access_token: str, event: SendApproved
    ) -> SendOutcome: ...


Publish = Callable[[StatusChanged], Awaitable[None]]
Done = Callable[[], None]
# Dead-letter the records behind a message's `done` callbacks and mark them finished (the worker's
# side of a message given up after repeated bugs).
DeadLetterHook = Callable[[list[Done], Failure], Awaitable[None]]
