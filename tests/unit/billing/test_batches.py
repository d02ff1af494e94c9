"""billing's batch path with fakes: one read, one insert and one write per account for a batch,
the same results as one record at a time, and the one-record path for anything unusual."""

from __future__ import annotations

import asyncio

from services.billing.core import Balance
from shared.messages import SEND_REQUESTED, STATUS_CHANGED, TOPUP_REQUESTED
from tests.unit.billing.events import ACCOUNT, regular, send_requested, status, top_up
from tests.unit.billing.test_worker import CARD, GB_UTILITY, Shell, funded, make_shell

GB_MARKETING = CARD.price("marketing", "GB")


def balances_written(shell: Shell) -> int:
    return shell.journal.steps.count("balance")


async def test_a_batch_writes_its_entries_then_publishes_in_order_then_each_balance_once() -> None:
    shell = await funded()
    batch = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(3)]

    outcomes = await shell.worker.handle_batch(batch)

    assert outcomes == ["reserved"] * 3
    assert shell.journal.steps == [
        "entry msg_0:reserve",
        "entry msg_1:reserve",
        "entry msg_2:reserve",
        *["publish messages.send-approved.v1"] * 3,
        "balance",
    ]
    assert [e.message_id for _, e in shell.publisher.published] == ["msg_0", "msg_1", "msg_2"]
    assert (shell.balance.available, shell.balance.reserved) == (
        100_000 - 3 * GB_UTILITY,
        3 * GB_UTILITY,
    )
    assert shell.balance.applied["t.messages.send-requested.v1:2"] == 2


async def test_a_settlement_finds_a_reservation_decided_earlier_in_its_batch() -> None:
    shell = await funded()
    outcomes = await shell.worker.handle_batch(
        [
            shell.record(SEND_REQUESTED, send_requested("msg_1")),
            shell.record(STATUS_CHANGED, status("msg_1", "sent", source="sender")),
            shell.record(
                STATUS_CHANGED, status("msg_1", "delivered", pricing=regular("marketing"))
            ),
        ]
    )

    assert outcomes == ["reserved", "ignored", "charged"]
    assert (shell.balance.available, shell.balance.reserved) == (100_000 - GB_MARKETING, 0)
    assert balances_written(shell) == 1


async def test_batches_and_single_records_end_in_the_same_balances() -> None:
    def inputs(shell: Shell) -> list:
        records = [shell.record(TOPUP_REQUESTED, top_up(200_000))]
        for n in range(6):
            account = f"acc_{n % 2}"
            records.append(
                shell.record(
                    SEND_REQUESTED,
                    send_requested(
                        f"msg_{n}", account_id=account, category=("utility", "marketing")[n % 2]
                    ),
                )
            )
        for n in range(6):
            account = f"acc_{n % 2}"
            final = (
                status(f"msg_{n}", "failed", account_id=account)
                if n % 3 == 0
                else status(
                    f"msg_{n}", "delivered", pricing=regular("marketing"), account_id=account
                )
            )
            records.append(shell.record(STATUS_CHANGED, final))
        return records

    one_by_one, batched = make_shell(), make_shell()
    for record in inputs(one_by_one):
        await one_by_one.worker.handle(record)
    records = inputs(batched)
    await batched.worker.handle_batch(records[:5])
    await batched.worker.handle_batch(records[5:])

    assert batched.balances.documents == one_by_one.balances.documents
    assert batched.ledger.entries.keys() == one_by_one.ledger.entries.keys()
    assert batched.publisher.published == one_by_one.publisher.published


async def test_a_redelivered_batch_goes_one_by_one_and_publishes_its_outputs_again() -> None:
    shell = await funded()
    batch = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(2)]
    await shell.worker.handle_batch(batch)
    shell.publisher.published.clear()  # as if the process died before the broker had them

    assert await shell.worker.handle_batch(batch) == ["replayed", "replayed"]
    assert [e.message_id for _, e in shell.publisher.published] == ["msg_0", "msg_1"]
    assert shell.balance.reserved == 2 * GB_UTILITY


async def test_a_batch_stopped_between_its_entries_and_its_balances_is_finished_after() -> None:
    shell = await funded()
    batch = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(2)]
    shell.balances.failures.append("save")  # the batch fails after its entries are written

    assert await shell.worker.handle_batch(batch) == ["reserved", "reserved"]
    assert (shell.balance.available, shell.balance.reserved) == (
        100_000 - 2 * GB_UTILITY,
        2 * GB_UTILITY,
    )
    assert len(shell.ledger.entries) == 3


async def test_a_failed_publish_of_a_batch_is_retried_and_the_balance_moves_once() -> None:
    shell = await funded()
    shell.publisher.failures = 1
    batch = [shell.record(SEND_REQUESTED, send_requested(f"msg_{n}")) for n in range(2)]

    assert await shell.worker.handle_batch(batch) == ["replayed", "replayed"]
    assert [e.message_id for _, e in shell.publisher.published] == ["msg_0", "msg_1"]
    assert shell.balance.reserved == 2 * GB_UTILITY


async def test_the_same_request_twice_in_one_batch_is_reserved_once() -> None:
    shell = await funded()
    request = send_requested("msg_1")
    batch = [shell.record(SEND_REQUESTED, request), shell.record(SEND_REQUESTED, request)]

    assert await shell.worker.handle_batch(batch) == ["reserved", "duplicate"]
    assert shell.balance.reserved == GB_UTILITY


async def test_an_undecodable_record_in_a_batch_is_dead_lettered_and_the_rest_applied() -> None:
    shell = await funded()
    batch = [
        shell.record(SEND_REQUESTED, send_requested("msg_1")),
        shell.raw(SEND_REQUESTED, b"not json"),
        shell.record(SEND_REQUESTED, send_requested("msg_2")),
    ]

    assert await shell.worker.handle_batch(batch) == ["reserved", "dead_lettered", "reserved"]
    assert [r for r, _ in shell.publisher.dead_letters] == [batch[1]]
    assert shell.balance.reserved == 2 * GB_UTILITY


async def test_a_settlement_reads_a_reservation_it_has_not_seen_once_then_remembers_it() -> None:
    shell = await funded()
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    restarted = make_shell()  # a new process: nothing in memory
    restarted.balances.documents, restarted.ledger.entries = (
        shell.balances.documents,
        shell.ledger.entries,
    )
    delivered = status("msg_1", "delivered", pricing=regular("utility"))
    assert await restarted.worker.handle_batch([restarted.record(STATUS_CHANGED, delivered)]) == [
        "charged"
    ]
    # one round trip: the reservation, and (since the ledger is read anyway) its settlements
    assert restarted.ledger.reads == [["msg_1:reserve", "msg_1:settle", "msg_1:late-charge"]]
    assert restarted.balance == Balance(
        ACCOUNT,
        CARD.currency,
        available=100_000 - GB_UTILITY,
        reserved=0,
        low_balance_threshold=0,
        low_balance_armed=True,
        applied=restarted.balance.applied,
    )


async def test_a_batch_s_outputs_leave_once_its_entries_are_durable_before_its_balances() -> None:
    shell = await funded()
    release, seen = asyncio.Event(), []
    publish_all = shell.publisher.publish_all

    async def held(events):  # type: ignore[no-untyped-def]
        seen.append(list(shell.journal.steps))
        await release.wait()
        await publish_all(events)

    shell.publisher.publish_all = held  # type: ignore[method-assign]
    batch = asyncio.create_task(
        shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    )
    for _ in range(20):
        await asyncio.sleep(0)

    assert seen == [["entry msg_1:reserve"]]  # the entry is durable, the balance not yet
    assert not batch.done()  # not acked while its outputs are not durable
    release.set()
    assert await batch == ["reserved"]
    assert shell.journal.steps == [
        "entry msg_1:reserve",
        "balance",
        "publish messages.send-approved.v1",
    ]


async def test_a_delivery_billed_after_a_release_is_charged_late_in_a_batch_or_alone() -> None:
    """The release (a guessed `failed`) and Meta's priced delivery in one batch, or in two:
    either way the message is charged Meta's price once, and its reservation closed once."""
    unknown = status("msg_1", "failed", source="sender", event_id="msg_1:failed:outcome_unknown")
    delivered = status("msg_1", "delivered", pricing=regular("marketing"))
    together, apart = await funded(), await funded()
    for shell in (together, apart):
        await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])

    assert await together.worker.handle_batch(
        [together.record(STATUS_CHANGED, unknown), together.record(STATUS_CHANGED, delivered)]
    ) == ["released", "charged"]
    assert await apart.worker.handle_batch([apart.record(STATUS_CHANGED, unknown)]) == ["released"]
    assert await apart.worker.handle_batch([apart.record(STATUS_CHANGED, delivered)]) == ["charged"]
    again = status("msg_1", "delivered", pricing=regular("marketing"), event_id="again")
    assert await apart.worker.handle_batch([apart.record(STATUS_CHANGED, again)]) == ["duplicate"]

    for shell in (together, apart):
        assert (shell.balance.available, shell.balance.reserved) == (100_000 - GB_MARKETING, 0)
        assert shell.balance.in_flight == 0
        late = shell.ledger.entries["msg_1:late-charge"]
        assert (late.kind, late.amount, late.reserved_amount) == ("charge", GB_MARKETING, 0)


async def test_a_batch_over_several_accounts_writes_their_balances_in_one_round_trip() -> None:
    shell = make_shell()
    accounts = [f"acc_{n}" for n in range(3)]
    await shell.worker.handle_batch(
        [
            shell.record(TOPUP_REQUESTED, top_up(100_000, event_id=f"t{a}", account_id=a))
            for a in accounts
        ]
    )
    shell.balances.bulk_writes = 0

    outcomes = await shell.worker.handle_batch(
        [
            shell.record(SEND_REQUESTED, send_requested(f"msg_{a}_{n}", account_id=a))
            for n in range(2)
            for a in accounts
        ]
    )

    assert outcomes == ["reserved"] * 6
    assert shell.balances.bulk_writes == 1 and balances_written(shell) == 3 + 3
    assert shell.balances.reads == accounts  # read once, when first met; then held
    for a in accounts:
        assert shell.balances.documents[a].reserved == 2 * GB_UTILITY
