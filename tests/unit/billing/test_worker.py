"""billing's shell with fakes: write order, redelivery after a crash, retries, dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from services.billing.core import Balance
from services.billing.publisher import Record
from services.billing.worker import BillingWorker
from shared.clock import FakeClock
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED, Topic
from shared.pricing import load_rate_card
from tests.unit.billing.events import (
    ACCOUNT,
    TOPUP_KEY,
    regular,
    send_requested,
    status,
    top_up,
)
from tests.unit.billing.fakes import (
    FakeBalances,
    FakeLedger,
    FakePublisher,
    Journal,
    Sleeps,
    StopRetrying,
)

CARD = load_rate_card()
PREFIX = "t."
GB_UTILITY = CARD.price("utility", "GB")


@dataclass
class Shell:
    worker: BillingWorker
    balances: FakeBalances
    ledger: FakeLedger
    publisher: FakePublisher
    journal: Journal
    sleeps: Sleeps
    offsets: dict[str, int]

    def record(self, topic: Topic[Any], event: Any, offset: int | None = None) -> Record:
        key, value = topic.encode(event)
        return self.raw(topic, value, key, offset)

    def raw(
        self, topic: Topic[Any], value: bytes, key: bytes = b"k", offset: int | None = None
    ) -> Record:
        name = PREFIX + topic.name
        if offset is None:
            offset = self.offsets[name] = self.offsets.get(name, -1) + 1
        return Record(
            topic=name,
            partition=2,
            offset=offset,
            key=key,
            value=value,
            headers=(("traceparent", b"00-abc"),),
        )

    @property
    def balance(self) -> Balance:
        return self.balances.documents[ACCOUNT]


def make_shell(
    *,
    sleeps: Sleeps | None = None,
    dead_letter_limit: int = 50,
    clock: FakeClock | None = None,
    low_balance_threshold: int = 0,
    **options: Any,
) -> Shell:
    journal = Journal()
    balances, ledger, publisher = FakeBalances(journal), FakeLedger(journal), FakePublisher(journal)
    sleeps = sleeps or Sleeps()
    worker = BillingWorker(
        balances=balances,
        ledger=ledger,
        publisher=publisher,
        rate_card=CARD,
        clock=clock or FakeClock(),
        topic_prefix=PREFIX,
        low_balance_threshold=low_balance_threshold,
        retry_first_delay_s=0.2,
        retry_max_delay_s=1.0,
        dead_letter_limit=dead_letter_limit,
        sleep=sleeps,
        top_up_key=TOPUP_KEY,
        **options,
    )
    return Shell(worker, balances, ledger, publisher, journal, sleeps, {})


async def funded(amount: int = 100_000, **kwargs: Any) -> Shell:
    """A shell whose account has `amount` of credit; what the top-up wrote and published
    (its BalanceToppedUp) is cleared, so that tests see only their own steps."""
    shell = make_shell(**kwargs)
    await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(amount)))
    assert [name for name, _ in shell.publisher.published] == ["billing.balance-topped-up.v1"]
    shell.journal.steps.clear()
    shell.publisher.published.clear()
    return shell


async def test_outputs_are_published_after_the_entry_and_the_balance_are_written() -> None:
    shell = await funded()
    outcome = await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))

    assert outcome == "reserved"
    assert shell.journal.steps == [
        "entry msg_1:reserve",
        "balance",
        "publish messages.send-approved.v1",
    ]
    assert shell.balance.reserved == GB_UTILITY


async def test_the_balance_records_the_offset_it_applied_per_topic_partition() -> None:
    shell = await funded()
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    assert shell.balance.applied == {
        "t.billing.topup-requested.v1:2": 0,
        "t.messages.send-requested.v1:2": 0,
    }


async def test_a_failed_publish_is_retried_and_the_balance_moves_once() -> None:
    shell = await funded()
    shell.publisher.failures = 2

    outcome = await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))

    assert outcome == "replayed"  # the retry found the offset applied and only re-published
    assert [name for name, _ in shell.publisher.published] == ["messages.send-approved.v1"]
    assert (shell.balance.available, shell.balance.reserved) == (100_000 - GB_UTILITY, GB_UTILITY)
    assert shell.sleeps.delays == [0.2, 0.4]


async def test_a_failed_balance_write_after_the_entry_is_finished_by_the_retry() -> None:
    shell = await funded()
    shell.balances.failures.append("save")

    outcome = await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))

    assert outcome == "reserved"
    assert (shell.balance.available, shell.balance.reserved) == (100_000 - GB_UTILITY, GB_UTILITY)
    assert len(shell.publisher.published) == 1


async def test_a_record_redelivered_after_a_crash_before_the_publish_is_published_again() -> None:
    shell = await funded()
    record = shell.record(SEND_REQUESTED, send_requested("msg_1"))
    await shell.worker.handle(record)
    shell.publisher.published.clear()  # as if the process died before the broker had it

    assert await shell.worker.handle(record) == "replayed"
    assert [name for name, _ in shell.publisher.published] == ["messages.send-approved.v1"]
    assert shell.balance.reserved == GB_UTILITY


async def test_transient_errors_are_retried_in_place_with_capped_backoff() -> None:
    shell = await funded()
    shell.balances.failures.extend(["get"] * 5)

    outcome = await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(5, "topup_2")))

    assert outcome == "topped_up"
    assert shell.sleeps.delays == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert shell.balance.available == 100_005


async def test_an_unexpected_error_is_retried_a_few_times_then_dead_lettered() -> None:
    shell = await funded()

    async def broken(_: str) -> None:
        raise KeyError("a bug")

    shell.balances.get = broken  # type: ignore[method-assign]
    record = shell.record(TOPUP_REQUESTED, top_up(5, "topup_2"))
    assert await shell.worker.handle(record) == "dead_lettered"
    [(dead, error)] = shell.publisher.dead_letters
    assert dead == record and isinstance(error, KeyError)
    [failure] = shell.publisher.failures_dead_lettered
    assert (failure.attempts, failure.reason) == (3, "unexpected")
    assert shell.sleeps.delays == [0.2, 0.4]  # short backoff between the three tries


async def test_an_undecodable_record_goes_to_the_dlq_with_its_bytes_and_the_loop_continues() -> (
    None
):
    shell = await funded()
    bad = shell.raw(SEND_REQUESTED, b'{"event_id": "x", "amount": "lots"')

    assert await shell.worker.handle(bad) == "dead_lettered"
    [(record, error)] = shell.publisher.dead_letters
    assert record == bad
    assert record.as_consumer_record().headers == [("traceparent", b"00-abc")]
    assert getattr(error, "code", None) == "undecodable_event"
    assert (
        await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
        == "reserved"
    )


async def test_a_top_up_that_is_not_positive_goes_to_the_dlq() -> None:
    shell = await funded()
    assert await shell.worker.handle(shell.record(TOPUP_REQUESTED, top_up(0, "t0"))) == (
        "dead_lettered"
    )
    assert shell.balance.available == 100_000


async def test_too_many_dead_letters_in_a_row_stop_the_draining() -> None:
    shell = await funded(sleeps=Sleeps(stop_after=1), dead_letter_limit=2)
    for _ in range(2):
        assert await shell.worker.handle(shell.raw(STATUS_CHANGED, b"not json")) == (
            "dead_lettered"
        )
    with pytest.raises(StopRetrying):  # the third one is held, not dead-lettered
        await shell.worker.handle(shell.raw(STATUS_CHANGED, b"not json"))
    assert len(shell.publisher.dead_letters) == 2


async def test_a_send_republished_at_a_new_offset_is_reserved_once_and_approved_again() -> None:
    shell = await funded()
    request = send_requested("msg_1")
    await shell.worker.handle(shell.record(SEND_REQUESTED, request))

    assert await shell.worker.handle(shell.record(SEND_REQUESTED, request)) == "duplicate"
    assert shell.balance.reserved == GB_UTILITY
    assert [n for n, _ in shell.publisher.published] == ["messages.send-approved.v1"] * 2


async def test_a_status_republished_at_a_new_offset_settles_once() -> None:
    shell = await funded()
    await shell.worker.handle(shell.record(SEND_REQUESTED, send_requested("msg_1")))
    delivered = status("msg_1", "delivered", pricing=regular("marketing"))
    await shell.worker.handle(shell.record(STATUS_CHANGED, delivered))
    after = shell.balance

    assert await shell.worker.handle(shell.record(STATUS_CHANGED, delivered)) == "duplicate"
    assert (shell.balance.available, shell.balance.reserved) == (after.available, after.reserved)
    assert shell.balance.available == 100_000 - CARD.price("marketing", "GB")


async def test_a_crash_between_the_entry_and_the_balance_is_finished_on_redelivery() -> None:
    shell = await funded(sleeps=Sleeps(stop_after=1))
    record = shell.record(SEND_REQUESTED, send_requested("msg_1"))
    shell.balances.failures.append("save")
    with pytest.raises(StopRetrying):  # the process dies while retrying the balance write
        await shell.worker.handle(record)
    assert "msg_1:reserve" in shell.ledger.entries
    assert shell.balance.reserved == 0

    restarted = make_shell()
    restarted.balances.documents, restarted.ledger.entries = (
        shell.balances.documents,
        shell.ledger.entries,
    )
    assert await restarted.worker.handle(record) == "reserved"
    assert (restarted.balance.available, restarted.balance.reserved) == (
        100_000 - GB_UTILITY,
        GB_UTILITY,
    )
    assert [n for n, _ in restarted.publisher.published] == ["messages.send-approved.v1"]
