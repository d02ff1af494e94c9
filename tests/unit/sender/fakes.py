"""Fakes for the sender's engine: virtual time, an in-memory store, a Meta that enforces Meta's
own buckets (so a pacing mistake shows up as 130429/131056), and a publisher that collects."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from services.sender.core import META_PAIR_BURST, TokenBucket
from services.sender.engine import EngineConfig, SendEngine
from services.sender.meta_client import Accepted, Refused, SendOutcome
from services.sender.repository import PhoneNumber, SendRecord
from shared.clock import FakeClock
from shared.messages import SEND_APPROVED, SendApproved, StatusChanged

NUMBER_ID = "109731225428301"
PORTFOLIO_ID = "880011223344556"


class FakeTimer:
    """Sleeps end only when the test moves the FakeClock with `advance`/`run_until`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def _register(self, deadline: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if deadline != math.inf:
            heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        return future

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.clock.monotonic():
            await asyncio.sleep(0)
            return
        await self._register(deadline)

    async def wait(self, event: asyncio.Event, deadline: float) -> None:
        if event.is_set() or deadline <= self.clock.monotonic():
            await asyncio.sleep(0)
            return
        timeout = self._register(deadline)
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([timeout, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not timeout.done():
                timeout.cancel()

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def _wake_due(self) -> None:
        now = self.clock.monotonic()
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def advance(self, seconds: float) -> None:
        await self.run_until(self.clock.monotonic() + seconds)

    async def run_until(self, target: float) -> None:
        """Move time forward one sleeper at a time, letting everything runnable run between."""
        await settle()
        while True:
            deadline = self._next_deadline()
            if deadline is None or deadline > target:
                break
            self.clock.advance(max(0.0, deadline - self.clock.monotonic()))
            self._wake_due()
            await settle()
        self.clock.advance(max(0.0, target - self.clock.monotonic()))
        self._wake_due()
        await settle()

    async def run_until_true(
        self, condition: Callable[[], bool], limit: float, step: float = 0.5
    ) -> None:
        deadline = self.clock.monotonic() + limit
        while not condition():
            assert self.clock.monotonic() < deadline, "condition not met in virtual time"
            await self.advance(step)


async def settle() -> None:
    """Run the loop until nothing is runnable (virtual time does not move meanwhile)."""
    loop = asyncio.get_running_loop()
    for _ in range(100_000):
        await asyncio.sleep(0)
        if not loop._ready:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
            if not loop._ready:  # type: ignore[attr-defined]
                return


class FakeStore:
    def __init__(self) -> None:
        self.sends: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.tier_usage: dict[str, tuple[str, str, int]] = {}
        self.deleted: list[str] = []

    async def find_send(self, message_id: str) -> SendRecord | None:
        doc = self.outcomes.get(message_id) or self.sends.get(message_id)
        return SendRecord.from_doc(doc) if doc else None

    def record(self, message_id: str) -> dict[str, Any]:
        """What is recorded of a message: its outcome, else its `sends` record."""
        return self.outcomes.get(message_id) or self.sends[message_id]

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
    ) -> SendRecord | None:
        assert message_id in self.sends, "an outcome without its sending record"
        existing = self.outcomes.get(message_id)
        if existing is not None and not (existing["state"] == "unknown" and state != "unknown"):
            return SendRecord.from_doc(existing)
        self.outcomes[message_id] = {
            "_id": message_id,
            "state": state,
            "attempts": attempts,
            "phone_number_id": phone_number_id,
            "account_id": account_id,
            "wamid": wamid,
            "error": error,
            "reason": reason,
            "updated_at": now_ms,
        }
        return None

    async def start_send(
        self, message_id: str, *, phone_number_id: str, account_id: str, now_ms: int
    ) -> SendRecord | None:
        return await self._insert(
            {
                "_id": message_id,
                "state": "sending",
                "attempts": 0,
                "phone_number_id": phone_number_id,
                "account_id": account_id,
                "updated_at": now_ms,
            }
        )

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
    ) -> SendRecord | None:
        return await self._insert(
            {
                "_id": message_id,
                "state": state,
                "attempts": 0,
                "reason": reason,
                "error": error,
                "updated_at": now_ms,
            }
        )

    async def _insert(self, doc: dict[str, Any]) -> SendRecord | None:
        if doc["_id"] in self.sends:
            return await self.find_send(doc["_id"])
        self.sends[doc["_id"]] = doc
        return None

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
    ) -> None:
        self.sends[message_id].update(
            state=state,
            attempts=attempts,
            updated_at=now_ms,
            wamid=wamid,
            error=error,
            reason=reason,
        )

    async def abandon_send(self, message_id: str) -> None:
        if self.sends.get(message_id, {}).get("state") == "sending":
            del self.sends[message_id]
            self.deleted.append(message_id)

    async def load_tier_usage(self, portfolio_id: str, since_ms: int) -> list[tuple[str, int]]:
        return [
            (r, at) for p, r, at in self.tier_usage.values() if p == portfolio_id and at > since_ms
        ]

    async def record_tier_use(self, portfolio_id: str, recipient: str, at_ms: int) -> None:
        self.tier_usage[f"{portfolio_id}:{recipient}"] = (portfolio_id, recipient, at_ms)

    async def delete_tier_usage_before(self, cutoff_ms: int) -> int:
        old = [k for k, (_, _, at) in self.tier_usage.items() if at < cutoff_ms]
        for key in old:
            del self.tier_usage[key]
        return len(old)


def phone_number(**overrides: Any) -> PhoneNumber:
    base = PhoneNumber(
        id=NUMBER_ID,
        account_id="acc_demo",
        waba_id="102290129340398",
        portfolio_id=PORTFOLIO_ID,
        throughput_mps=80,
        messaging_limit="TIER_UNLIMITED",
        status="active",
        token_fingerprint="gAAAA-one",
        access_token="EAAsim-bsp-system-user",
    )
    return replace(base, **overrides)


class FakePhoneNumbers:
    def __init__(self, *numbers: PhoneNumber) -> None:
        self.numbers = {n.id: n for n in numbers}

    async def get(self, phone_number_id: str) -> PhoneNumber | None:
        return self.numbers.get(phone_number_id)


@dataclass
class MetaCall:
    at: float
    phone_number_id: str
    token: str
    event: SendApproved


@dataclass
class FakeMeta:
    """Meta's buckets for real (1 s of mps, 45 per pair), an optional script of answers per
    message id, and a latency in virtual time."""

    clock: FakeClock
    timer: FakeTimer
    latency: float = 0.0
    mps: dict[str, float] = field(default_factory=dict)
    script: dict[str, list[SendOutcome]] = field(default_factory=dict)
    calls: list[MetaCall] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    _numbers: dict[str, TokenBucket] = field(default_factory=dict)
    _pairs: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    _serial: itertools.count = field(default_factory=itertools.count)

    def set_mps(self, phone_number_id: str, mps: float) -> None:
        self.mps[phone_number_id] = mps
        bucket = self._numbers.get(phone_number_id)
        if bucket is not None:
            bucket.retune(mps, mps, self.clock.monotonic())

    def inbound(self, phone_number_id: str) -> None:
        """A user wrote to the number: Meta counts it against its throughput, never refuses it
        (its bucket runs into debt, at most one burst deep)."""
        mps = self.mps.get(phone_number_id, 80)
        number = self._numbers.setdefault(phone_number_id, TokenBucket(mps, mps, -1e6))
        number.force_take(self.clock.monotonic(), max_debt=number.capacity)

    async def send(
        self, phone_number_id: str, access_token: str, event: SendApproved
    ) -> SendOutcome:
        now = self.clock.monotonic()
        self.calls.append(MetaCall(now, phone_number_id, access_token, event))
        try:
            scripted = self.script.get(event.message_id)
            if scripted:
                return scripted.pop(0)
            mps = self.mps.get(phone_number_id, 80)
            number = self._numbers.setdefault(phone_number_id, TokenBucket(mps, mps, -1e6))
            if number.available_at(now) > now:
                self.refusals.append((130429, event.message_id))
                return Refused(130429, "Rate limit hit", "", 400)
            number.reserve(now)
            pair = self._pairs.setdefault(
                (phone_number_id, event.recipient), TokenBucket(1 / 6, META_PAIR_BURST, -1e6)
            )
            if pair.available_at(now) > now:
                self.refusals.append((131056, event.message_id))
                return Refused(131056, "Pair rate limit hit", "", 400)
            pair.reserve(now)
            return Accepted(f"wamid.{next(self._serial)}", "accepted")
        finally:
            if self.latency:
                await self.timer.sleep_until(now + self.latency)

    def sent_ids(self) -> list[str]:
        return [c.event.message_id for c in self.calls]


class Harness:
    """An engine wired to the fakes, and helpers to feed it records."""

    def __init__(
        self, *numbers: PhoneNumber, config: EngineConfig | None = None, latency: float = 0.0
    ) -> None:
        self.clock = FakeClock()
        self.timer = FakeTimer(self.clock)
        self.store = FakeStore()
        self.phone_numbers = FakePhoneNumbers(*(numbers or (phone_number(),)))
        self.meta = FakeMeta(self.clock, self.timer, latency=latency)
        self.published: list[StatusChanged] = []
        self.done: list[str] = []
        self.engine = SendEngine(
            clock=self.clock,
            timer=self.timer,
            store=self.store,
            phone_numbers=self.phone_numbers,
            meta=self.meta,
            publish=self._publish,
            config=config,
        )
        self._serial = itertools.count()
        # Partitions were taken over long ago unless a test says otherwise: buckets start full.
        self.taken_over_at = self.clock.monotonic() - 10_000

    async def _publish(self, change: StatusChanged) -> None:
        self.published.append(change)

    def event(self, recipient: str | None = None, **overrides: Any) -> SendApproved:
        serial = next(self._serial)
        example = dict(SEND_APPROVED.examples[0])
        example.update(
            event_id=f"msg_{serial:05}",
            message_id=f"msg_{serial:05}",
            phone_number_id=NUMBER_ID,
            portfolio_id=PORTFOLIO_ID,
            recipient=recipient or f"+4479{serial:08}",
            accepted_at=self.clock.now_ms(),
            expires_at=self.clock.now_ms() + 3_600_000,
        )
        example.update(overrides)
        return SEND_APPROVED.decode(orjson.dumps(example))

    async def admit(
        self, *events: SendApproved, partition: str = "p0", taken_over_at: float | None = None
    ) -> None:
        origin = self.taken_over_at if taken_over_at is None else taken_over_at
        await self.engine.admit_batch(
            [
                (e, partition, origin, (lambda mid=e.message_id: self.done.append(mid)))
                for e in events
            ]
        )
        await settle()

    def statuses(self, status: str) -> list[StatusChanged]:
        return [c for c in self.published if c.status == status]

    def first_call_at(self) -> dict[str, float]:
        first: dict[str, float] = {}
        for call in self.meta.calls:
            first.setdefault(call.event.message_id, call.at)
        return first

    async def close(self) -> None:
        await self.engine.stop(0)
