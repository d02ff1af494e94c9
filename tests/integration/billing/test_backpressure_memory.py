"""billing's per-partition back-pressure on the real broker leaves no fetch for the garbage
collector: a partition paused in faust's consumer is left out of the polls (faust's
`fetched_records(active partitions)`), so aiokafka keeps its one fetch unread and hands it
over, from where it was, once the partition is resumed; a fetch dropped unread (as aiokafka's
own `consumer.pause` does) would be a reference cycle holding its whole buffer until a full
collection (shared/pipeline.py's docstring: 40 MB of status's RSS in the 100,000 campaign).

billing runs as its own process (billing_counting_fetches.py: `python -m services.billing`
with the collector off and the live fetches counted on its /metrics), with small fetches and a
small budget, so that one account's burst pauses its partition again and again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.kafka import make_producer, publish_all
from shared.messages import SEND_REQUESTED, TOPUP_REQUESTED, SendRequested
from shared.pricing import load_rate_card
from tests.conftest import Broker
from tests.integration.billing.harness import BillingProcess, drained, eventually, signed_top_up

pytestmark = pytest.mark.integration

BURST = 2000
GB_MARKETING = load_rate_card().price("marketing", "GB")


def send_requested(account_id: str, n: int) -> SendRequested:
    example = dict(SEND_REQUESTED.examples[0])
    message_id = f"msg_{n:05d}"
    example.update(
        event_id=message_id,
        message_id=message_id,
        account_id=account_id,
        category="marketing",
        recipient_region="GB",
    )
    return SendRequested(**example)


async def burst_through_billing(
    broker: Broker,
    mongodb_url: str,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    log_dir: Path,
    pause_in: str,
) -> tuple[float, float]:
    """One account's burst through billing pausing in `pause_in` (faust: billing's own way;
    aiokafka: the control). Checks every send was reserved once; returns the fetches alive
    at the end and the pauses made."""
    prefix, database = f"t{unique}.", f"it_{unique}"
    await broker.grant(prefix)
    producer = make_producer(broker.setup)
    await producer.start()
    process = BillingProcess(
        broker=broker,
        mongodb_url=mongodb_url,
        prefix=prefix,
        database=database,
        app_id="billing-fetches",
        log_dir=log_dir,
        module="tests.integration.billing.billing_counting_fetches",
        # fetches of ~25 records taken by polls of 10: a fetch is mostly half-read when its
        # partition is paused; paused at 40 events not acked, resumed at 10; batches of 10:
        # the intake falls behind the fetches and pauses again and again
        env={"BILLING_TEST_PAUSE": pause_in, "BILLING_TEST_MAX_POLL_RECORDS": "10"},
        fetch_partition_bytes=str(16 * 1024),
        pause_at_records="40",
        resume_at_records="10",
        batch_max_records="10",
    ).start()
    account = f"acc_{database}"
    try:
        await process.wait_ready()
        await publish_all(
            producer, [(TOPUP_REQUESTED, signed_top_up(account, BURST * GB_MARKETING, "t"))], prefix
        )
        await publish_all(
            producer, [(SEND_REQUESTED, send_requested(account, n)) for n in range(BURST)], prefix
        )

        async def done() -> bool:
            return await drained(broker.setup, process.group, prefix)

        await eventually(done, timeout=120, what="billing to drain the burst")
        fetches = await process.metric("billing_test_fetches_alive")
        paused = await process.metric("billing_test_partitions_paused_total")
        assert fetches is not None and paused is not None, process.log_tail()

        balance = await mongo[database].balances.find_one({"_id": account})
        assert balance is not None
        assert (balance["available"], balance["reserved"], balance["in_flight"]) == (
            0,
            BURST * GB_MARKETING,
            BURST,
        ), "every send reserved exactly once"
        reserves = await mongo[database].ledger.count_documents({"kind": "reserve"})
        assert reserves == BURST
        return fetches, paused
    finally:
        process.stop()
        await producer.stop()
        await mongo.drop_database(database)


async def test_a_partition_paused_by_billing_leaves_no_unread_fetch_to_the_garbage_collector(
    broker: Broker,
    mongodb_url: str,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    fetches, paused = await burst_through_billing(
        broker, mongodb_url, unique, mongo, tmp_path, pause_in="faust"
    )
    assert paused >= 5, "the partition was hardly paused: the burst did not exercise it"
    # at most one fetch per partition is kept; every other would be garbage in a cycle
    assert fetches <= 2, f"{fetches} fetches alive after {paused} pauses"


async def test_the_count_sees_the_fetches_aiokafkas_pause_drops_unread(
    broker: Broker,
    mongodb_url: str,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The control: the same burst paused with aiokafka's `consumer.pause` (faust polling on)
    leaves fetches for the collector, and the probe counts them."""
    fetches, paused = await burst_through_billing(
        broker, mongodb_url, unique, mongo, tmp_path, pause_in="aiokafka"
    )
    assert paused >= 5
    assert fetches > 2, f"only {fetches} fetches alive after {paused} pauses"
