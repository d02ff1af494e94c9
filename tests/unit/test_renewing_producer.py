"""shared/renewing_producer.py: every service's producer replaces itself when the broker no
longer knows its producer id or sequence, and only then."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from shared.renewing_producer import PRODUCER_STATE_ERRORS, RenewingProducer


class Fake:
    """A producer whose enqueue raises `on_send`, or whose deliveries fail with `on_delivery`,
    or are acknowledged (and kept)."""

    def __init__(
        self, on_delivery: Exception | None = None, on_send: Exception | None = None
    ) -> None:
        self.on_delivery, self.on_send = on_delivery, on_send
        self.sent: list[bytes] = []
        self.pending: list[asyncio.Future[str]] = []
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def send(self, topic: str, value: bytes = b"", **_: Any) -> asyncio.Future[str]:
        if self.on_send is not None:
            raise self.on_send
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self.on_delivery is not None:
            self.pending.append(future)  # failed later, as the broker's answer would
        else:
            self.sent.append(value)
            future.set_result(topic)
        return future

    def fail_pending(self) -> None:
        """The broker's answers, after the caller started waiting (as they come in real life)."""
        for future in self.pending:
            assert self.on_delivery is not None
            asyncio.get_running_loop().call_soon(future.set_exception, self.on_delivery)


def renewing(*producers: Fake) -> RenewingProducer:
    made = iter(producers)
    return RenewingProducer(lambda: next(made))  # type: ignore[arg-type, return-value]


async def settle() -> None:
    for _ in range(5):  # done callbacks, then the renewal task's steps
        await asyncio.sleep(0)


@pytest.mark.parametrize("error", PRODUCER_STATE_ERRORS)
async def test_a_delivery_failing_for_lost_producer_state_renews_and_the_retry_goes_out(
    error: type[Exception],
) -> None:
    broken, fresh = Fake(on_delivery=error()), Fake()
    producer = renewing(broken, fresh)
    await producer.start()

    first = await producer.send("t", b"a")
    broken.fail_pending()
    with pytest.raises(error):  # the caller still hears of it, and retries
        await first
    assert await producer.send_and_wait("t", b"a") == "t"

    assert (fresh.sent, producer.renewals, producer.current) == ([b"a"], 1, fresh)
    assert (fresh.started, broken.stopped) == (1, 1)


async def test_many_sends_failing_together_renew_once() -> None:
    broken, fresh = Fake(on_delivery=UnknownProducerId()), Fake()
    producer = renewing(broken, fresh)
    futures = [await producer.send("t", bytes([n])) for n in range(5)]
    broken.fail_pending()
    for future in futures:
        with pytest.raises(UnknownProducerId):
            await future
    await settle()

    assert producer.renewals == 1 and producer.current is fresh


async def test_an_enqueue_refused_for_lost_state_renews_too() -> None:
    broken, fresh = Fake(on_send=OutOfOrderSequenceNumber()), Fake()
    producer = renewing(broken, fresh)
    with pytest.raises(OutOfOrderSequenceNumber):
        await producer.send("t", b"a")
    await producer.send_and_wait("t", b"b")
    assert fresh.sent == [b"b"] and producer.renewals == 1


async def test_any_other_failure_keeps_the_producer() -> None:
    slow = Fake(on_delivery=KafkaTimeoutError())
    producer = renewing(slow)  # a second producer would make next() fail
    future = await producer.send("t", b"a")
    slow.fail_pending()
    with pytest.raises(KafkaTimeoutError):
        await future
    await settle()
    assert producer.renewals == 0 and producer.current is slow and slow.stopped == 0


async def test_a_renewal_that_cannot_start_keeps_the_old_one_and_the_next_failure_tries_again() -> (
    None
):
    broken, unstartable, fresh = Fake(on_send=UnknownProducerId()), Fake(), Fake()

    async def start(p: Any) -> None:
        if p is unstartable:
            raise ConnectionError("broker away")
        await p.start()

    made = iter([broken, unstartable, fresh])
    producer = RenewingProducer(lambda: next(made), start)  # type: ignore[arg-type, return-value]
    with pytest.raises(UnknownProducerId):
        await producer.send("t", b"a")
    await settle()
    assert producer.current is broken and producer.renewals == 0

    with pytest.raises(UnknownProducerId):
        await producer.send("t", b"a")
    await producer.send_and_wait("t", b"a")
    assert producer.current is fresh and fresh.sent == [b"a"] and producer.renewals == 1
