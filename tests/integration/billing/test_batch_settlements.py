"""The billing process against the real broker and database: a message's `delivered` and
`read`, both priced (as Meta sends them), are charged once, and the `read` is decided in the
batch (no batch goes one record at a time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from shared.kafka import make_producer, publish_all
from shared.messages import (
    SEND_REQUESTED,
    STATUS_CHANGED,
    TOPUP_REQUESTED,
    Pricing,
    SendRequested,
    StatusChanged,
)
from shared.pricing import load_rate_card
from tests.conftest import Broker
from tests.integration.billing.harness import BillingProcess, drained, eventually, signed_top_up

pytestmark = pytest.mark.integration

CARD = load_rate_card()
GB_MARKETING = CARD.price("marketing", "GB")
FUNDS = 1_000_000


def send_requested(account_id: str, message_id: str) -> SendRequested:
    example = dict(SEND_REQUESTED.examples[0])
    example.update(
        event_id=message_id,
        message_id=message_id,
        account_id=account_id,
        category="marketing",
        recipient_region="GB",
    )
    return SendRequested(**example)


def status(account_id: str, message_id: str, step: Any) -> StatusChanged:
    priced = step in ("delivered", "read")
    return StatusChanged(
        event_id=f"{message_id}:{step}:webhook",
        message_id=message_id,
        account_id=account_id,
        status=step,
        occurred_at=1_764_000_003_000,
        source="webhook",
        pricing=Pricing(billable=True, type="regular", category="marketing") if priced else None,
    )


async def samples(process: BillingProcess, name: str) -> dict[str, float]:
    """The samples of the labelled metric `name` on the process's /metrics, by their labels
    (e.g. `reason="entry_exists"`)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{process.port}/metrics") as response,
    ):
        text = await response.text()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            sample, _, value = line.rpartition(" ")
            found[sample[len(name) + 1 : -1]] = float(value)
    return found


@pytest.fixture
async def running(
    broker: Broker,
    mongodb_url: str,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> AsyncIterator[tuple[BillingProcess, Any, str]]:
    prefix, database = f"t{unique}.", f"it_{unique}"
    await broker.grant(prefix)
    producer = make_producer(broker.setup)
    await producer.start()
    process = BillingProcess(
        broker=broker,
        mongodb_url=mongodb_url,
        prefix=prefix,
        database=database,
        app_id="billing-settled",
        log_dir=tmp_path,
    ).start()
    try:
        await process.wait_ready()

        async def send(*events: Any) -> None:
            topics = {SendRequested: SEND_REQUESTED, StatusChanged: STATUS_CHANGED}
            await publish_all(
                producer,
                [(topics.get(type(e), TOPUP_REQUESTED), e) for e in events],
                prefix,
            )

            async def done() -> bool:
                return await drained(broker.setup, process.group, prefix)

            await eventually(done, timeout=60, what="billing to drain")

        yield process, send, database
    finally:
        process.stop()
        await producer.stop()
        await mongo.drop_database(database)


async def test_a_delivered_and_its_read_both_priced_are_charged_once_without_a_fallback(
    running: tuple[BillingProcess, Any, str], mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    process, send, database = running
    account = f"acc_{database}"
    await send(signed_top_up(account, FUNDS, f"{account}:topup"))
    await send(*(send_requested(account, m) for m in ("msg_a", "msg_b")))
    # msg_a: sent, delivered and read in one burst (one batch, or consecutive ones)
    await send(*(status(account, "msg_a", s) for s in ("sent", "delivered", "read")))
    # msg_b: its read after its delivered was applied (decided from the entry held)
    await send(status(account, "msg_b", "sent"), status(account, "msg_b", "delivered"))
    await send(status(account, "msg_b", "read"))

    balance = await mongo[database].balances.find_one({"_id": account})
    assert balance is not None
    assert (balance["available"], balance["reserved"], balance["in_flight"]) == (
        FUNDS - 2 * GB_MARKETING,
        0,
        0,
    )
    ledger = {d["_id"]: d async for d in mongo[database].ledger.find({"account_id": account})}
    assert sorted(ledger) == sorted(
        [f"topup:{account}:topup", "msg_a:reserve", "msg_a:settle", "msg_b:reserve", "msg_b:settle"]
    )
    for message in ("msg_a", "msg_b"):
        settle = ledger[f"{message}:settle"]
        assert (settle["kind"], settle["amount"]) == ("charge", GB_MARKETING)
    assert await process.metric("billing_charges_total") == 2
    fell_back = await samples(process, "billing_batch_fallbacks_total")
    assert {labels: n for labels, n in fell_back.items() if n} == {}
    events = await samples(process, "billing_events_total")
    assert sum(n for labels, n in events.items() if 'outcome="duplicate"' in labels) == 2
    assert sum(n for labels, n in events.items() if 'outcome="charged"' in labels) == 2
    assert "billing_batch_one_by_one" not in process.log_path.read_text(errors="replace")
