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
    sign_top_up,
)
from shared.pricing import load_rate_card
from tests.conftest import Broker
from tests.integration.billing.harness import (
    BillingProcess,
    drained,
    eventually,
    read_all,
    signed_top_up,
)
from tests.integration.dlq_probe import check_dead_letter, wait_for_dead_letters

GB_UTILITY = load_rate_card().price("utility", "GB")
PARTITION = 0  # every record of the test on one partition, in this order
WITH_A_BUG = "tests.integration.billing.billing_with_a_bug"


def send_requested(account_id: str, message_id: str) -> SendRequested:
    example = dict(SEND_REQUESTED.examples[0])
    example.update(
        event_id=message_id,
        message_id=message_id,
        account_id=account_id,
        category="utility",
        recipient_region="GB",
    )
    return SendRequested(**example)


@pytest.fixture
async def names(
    unique: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[tuple[str, str]]:
    prefix, database = f"t{unique}.", f"it_{unique}"
    yield prefix, database
    await mongo.drop_database(database)


async def test_a_record_that_raises_a_bug_is_dead_lettered_without_moving_money_half_way(
    broker: Broker,
    mongodb_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    names: tuple[str, str],
    tmp_path: Path,
) -> None:
    prefix, database = names
    account = f"acc_{prefix}bug"
    await broker.grant(prefix)
    producer = make_producer(broker.setup)
    await producer.start()
    billing = BillingProcess(
        broker=broker,
        mongodb_url=mongodb_url,
        prefix=prefix,
        database=database,
        app_id="billing",
        log_dir=tmp_path,
        module=WITH_A_BUG,
        env={"BILLING_TEST_BUGGY_MESSAGE_ID": "msg_bug"},
    )
    try:

        async def send(topic: Topic[Any], event: Any) -> None:
            key, value = topic.encode(event)
            await producer.send_and_wait(
                topic_name(topic, prefix), value=value, key=key, partition=PARTITION
            )

        db = mongo[database]
        await send(TOPUP_REQUESTED, signed_top_up(account, 1_000_000, "topup_1"))
        billing.start()

        async def funded() -> bool:  # billing reads its topics in no fixed order between them
            billing._check_alive()
            return await db.balances.find_one({"_id": account}) is not None

        await eventually(funded, timeout=60, what="the top-up applied")
        for message_id in ("msg_before", "msg_bug", "msg_after"):
            await send(SEND_REQUESTED, send_requested(account, message_id))

        source = topic_name(SEND_REQUESTED, prefix)
        [dead] = await wait_for_dead_letters(
            broker.setup, f"{source}.dlq", 1, alive=billing._check_alive
        )
        check_dead_letter(
            dead,
            source_topic=source,
            source_offset=1,
            service="billing",
            error_type="RuntimeError",
            reason="unexpected",
            attempts=3,
        )
        assert SEND_REQUESTED.decode(dead.value).message_id == "msg_bug"

        async def finished() -> bool:
            billing._check_alive()
            return await drained(broker.setup, billing.group, prefix)

        await eventually(finished, timeout=60, what="billing to commit past the dead letter")
        ledger = {d["_id"]: d["kind"] async for d in db.ledger.find({"account_id": account})}
        assert ledger == {
            "topup:topup_1": "topup",
            "msg_before:reserve": "reserve",
            "msg_after:reserve": "reserve",
        }
        balance = await db.balances.find_one({"_id": account})
        assert balance is not None
        assert (balance["available"], balance["reserved"]) == (
            1_000_000 - 2 * GB_UTILITY,
            2 * GB_UTILITY,
        )
        approved = [
            SEND_APPROVED.decode(r.value).message_id
            for r in await read_all(broker.setup, SEND_APPROVED, prefix)
        ]
        assert sorted(set(approved)) == ["msg_after", "msg_before"]
        assert (
            await billing.metric('hala_dead_letters_total{reason="unexpected",service="billing"}')
            == 1.0
        )
    finally:
        billing.stop()
        await producer.stop()


async def test_a_top_up_written_straight_to_the_topic_without_the_admin_signature_moves_nothing(
    broker: Broker,
    mongodb_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    names: tuple[str, str],
    tmp_path: Path,
) -> None:
    """Whoever can write to the topic cannot mint credit: an unsigned top-up and one signed with
    another key, written with the admin principal's Kafka credentials (the only ones the ACLs
    let write top-ups) but without the signing key, are dead-lettered (permanent) by the real
    billing process, and only the top-up signed with the admin tool's key reaches the balance
    and the ledger."""
    prefix, database = names
    account = f"acc_{prefix}forged"
    await broker.grant(prefix)
    producer = make_producer(broker.as_service("admin"))
    await producer.start()
    billing = BillingProcess(
        broker=broker,
        mongodb_url=mongodb_url,
        prefix=prefix,
        database=database,
        app_id="billing",
        log_dir=tmp_path,
    )
    try:
        forged = [
            TopUpRequested(
                event_id="topup_unsigned",
                account_id=account,
                amount=9_000_000,
                requested_at=1_764_000_000_000,
            ),
            sign_top_up(
                TopUpRequested(
                    event_id="topup_other_key",
                    account_id=account,
                    amount=9_000_000,
                    requested_at=1_764_000_000_000,
                    operator="mallory",
                ),
                b"a key billing does not hold",
            ),
        ]
        for event in [*forged, signed_top_up(account, 1_000_000, "topup_real")]:
            key, value = TOPUP_REQUESTED.encode(event)
            await producer.send_and_wait(
                topic_name(TOPUP_REQUESTED, prefix), value=value, key=key, partition=PARTITION
            )
        billing.start()

        source = topic_name(TOPUP_REQUESTED, prefix)
        dead = await wait_for_dead_letters(
            broker.setup, f"{source}.dlq", 2, alive=billing._check_alive
        )
        for offset, record in enumerate(dead):
            headers = check_dead_letter(
                record,
                source_topic=source,
                source_offset=offset,
                service="billing",
                error_type="InvalidRequest",
                reason="permanent",
                attempts=1,
            )
            assert b"must be signed" in headers["error_detail"]
            assert TOPUP_REQUESTED.decode(record.value) == forged[offset]

        db = mongo[database]

        async def applied() -> bool:
            billing._check_alive()
            return await drained(broker.setup, billing.group, prefix)

        await eventually(applied, timeout=60, what="billing to commit past the forged top-ups")
        balance = await db.balances.find_one({"_id": account})
        assert balance is not None and (balance["available"], balance["reserved"]) == (1_000_000, 0)
        assert [d["_id"] async for d in db.ledger.find({"account_id": account})] == [
            "topup:topup_real"
        ]
    finally:
        billing.stop()
        await producer.stop()
