"""No record can stop billing, and none leaves money half-moved: the billing process with a bug
planted in its real ledger for one message (raised right after that message's entry is
written) dead-letters that record after three tries, removes the entry its balance never
applied, and applies the records after it on the same partition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.kafka import make_producer, topic_name
from shared.messages import (
    SEND_APPROVED,
    SEND_REQUESTED,
    TOPUP_REQUESTED,
    SendRequested,
    Topic,
    TopUpRequested,
)
from shared.pricing import load_rate_card
from tests.conftest import Broker
from tests.integration.billing.harness import BillingProcess, drained, eventually, read_all
from tests.integration.dlq_probe import check_dead_letter, wait_for_dead_letters

GB_UTILITY = load_rate_card().price("utility", "GB")
PARTITION = 0  # every record of the test on one partition, in this order
WITH_A_BUG = "tests.integration.billing.billing_with_a_bug"


def send_requested(account_id: str, message_id: str) -> SendRequested:
    example = dict(SEND_REQUESTED.examples[0])
    example.update(event_id=message_id, message_id=message_id, account_id=account_id,
                   category="utility", recipient_region="GB")
    return SendRequested(**example)


@pytest.fixture
async def names(unique: str, mongo: AsyncMongoClient[dict[str, Any]]
                ) -> AsyncIterator[tuple[str, str]]:
    prefix, database = f"t{unique}.", f"it_{unique}"
    yield prefix, database
    await mongo.drop_database(database)


async def test_a_record_that_raises_a_bug_is_dead_lettered_without_moving_money_half_way(
        broker: Broker, mongodb_url: str, mongo: AsyncMongoClient[dict[str, Any]],
        names: tuple[str, str], tmp_path: Path) -> None:
    prefix, database = names
    account = f"acc_{prefix}bug"
    await broker.grant(prefix)
    producer = make_producer(broker.setup)
    await producer.start()
    billing = BillingProcess(broker=broker, mongodb_url=mongodb_url,
                             prefix=prefix, database=database, app_id="billing",
                             log_dir=tmp_path, module=WITH_A_BUG,
                             env={"BILLING_TEST_BUGGY_MESSAGE_ID": "msg_bug"})
    try:
        async def send(topic: Topic[Any], event: Any) -> None:
            key, value = topic.encode(event)
            await producer.send_and_wait(topic_name(topic, prefix), value=value, key=key,
                                         partition=PARTITION)

        db = mongo[database]
        await send(TOPUP_REQUESTED, TopUpRequested(event_id="topup_1", account_id=account,
                                                   amount=1_000_000,
                                                   requested_at=1_764_000_000_000))
        billing.start()

        async def funded() -> bool:  # billing reads its topics in no fixed order between them
            billing._check_alive()
            return await db.balances.find_one({"_id": account}) is not None

        await eventually(funded, timeout=60, what="the top-up applied")
        for message_id in ("msg_before", "msg_bug", "msg_after"):
            await send(SEND_REQUESTED, send_requested(account, message_id))

        source = topic_name(SEND_REQUESTED, prefix)
        [dead] = await wait_for_dead_letters(broker.setup, f"{source}.dlq", 1,
                                             alive=billing._check_alive)
        check_dead_letter(dead, source_topic=source, source_offset=1, service="billing",
                          error_type="RuntimeError", reason="unexpected", attempts=3)
        assert SEND_REQUESTED.decode(dead.value).message_id == "msg_bug"

        async def finished() -> bool:
            billing._check_alive()
            return await drained(broker.setup, billing.group, prefix)

        await eventually(finished, timeout=60, what="billing to commit past the dead letter")
        ledger = {d["_id"]: d["kind"] async for d in db.ledger.find({"account_id": account})}
        assert ledger == {"topup:topup_1": "topup", "msg_before:reserve": "reserve",
                          "msg_after:reserve": "reserve"}
        balance = await db.balances.find_one({"_id": account})
        assert balance is not None
        assert (balance["available"], balance["reserved"]) == (1_000_000 - 2 * GB_UTILITY,
                                                               2 * GB_UTILITY)
        approved = [SEND_APPROVED.decode(r.value).message_id
                    for r in await read_all(broker.setup, SEND_APPROVED, prefix)]
        assert sorted(set(approved)) == ["msg_after", "msg_before"]
        assert await billing.metric(
            'hala_dead_letters_total{reason="unexpected",service="billing"}') == 1.0
    finally:
        billing.stop()
        await producer.stop()
