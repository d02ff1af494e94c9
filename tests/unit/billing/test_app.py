"""The faust app's wiring, without a broker: what it reads, how it commits, and that a rebalance
forgets the balances held in memory."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
from faust.types import TP

from services.billing.app import create_app
from services.billing.faust_consumer import BillingConsumer, BillingTransport
from services.billing.settings import BillingSettings
from shared.messages import SEND_REQUESTED
from tests.unit.billing.events import ACCOUNT, send_requested
from tests.unit.billing.test_worker import GB_UTILITY, funded


def settings(**values: object) -> BillingSettings:
    """billing's settings with a Kafka principal (nothing connects in these tests)."""
    return BillingSettings(
        KAFKA_SASL_USERNAME="hala-billing", KAFKA_SASL_PASSWORD="unit-test-kafka-password", **values
    )


def test_faust_connects_with_scram_over_tls_as_billing() -> None:
    app, _ = create_app(settings(KAFKA_SSL_CA_FILE=""))
    credentials = app.conf.broker_credentials
    assert credentials is not None
    assert (credentials.protocol.value, credentials.mechanism.value) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    )
    assert credentials.username == "hala-billing"
    assert credentials.ssl_context is not None and credentials.ssl_context.check_hostname


def test_the_agent_reads_the_three_prefixed_input_topics_as_raw_bytes() -> None:
    app, _ = create_app(settings(HALA_TOPIC_PREFIX="t1.", faust_app_id="billing-t1"))
    [agent] = app.agents.values()
    channel = agent.channel
    assert set(channel.topics) == {
        "t1.messages.send-requested.v1",
        "t1.messages.status-changed.v1",
        "t1.billing.topup-requested.v1",
    }
    assert channel.schema.value_serializer == "raw"
    assert channel.schema.key_serializer == "raw"
    assert agent.concurrency == 1


def test_faust_commits_often_and_keeps_a_small_buffer() -> None:
    app, _ = create_app(settings(commit_every=7, stream_buffer_maxsize=32))
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert app.conf.web_enabled is False
    assert (app.conf.broker_commit_every, app.conf.stream_buffer_maxsize) == (7, 32)


def test_faust_fetches_little_per_partition_so_another_accounts_record_is_not_held_behind() -> None:
    app, _ = create_app(settings(fetch_partition_bytes=32768))
    assert app.conf.consumer_max_fetch_size == 32768


def test_billings_consumer_takes_the_fetch_wait_from_its_settings() -> None:
    app, _ = create_app(settings(fetch_max_wait_ms=120))
    assert isinstance(app.transport, BillingTransport)
    assert isinstance(app.consumer, BillingConsumer)
    assert app.transport.fetch_max_wait_ms == 120


async def test_the_kafka_consumer_is_built_with_that_fetch_wait() -> None:
    app, _ = create_app(settings(fetch_max_wait_ms=120, KAFKA_SECURITY_PROTOCOL="PLAINTEXT"))
    thread = app.consumer._thread  # what faust starts in its consumer thread
    kafka_consumer = thread._create_worker_consumer(app.transport)  # not started: no broker
    assert kafka_consumer._fetch_max_wait_ms == 120  # read by its Fetcher when it starts


def test_settings_refuse_a_resume_mark_not_below_the_pause_mark() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        settings(pause_at_records=100, resume_at_records=100)


async def test_pausing_a_partition_keeps_the_records_of_the_poll_being_handed_over() -> None:
    """faust's getmany checks each record of its poll against the partitions that
    `_wait_next_records` returns while it hands them over: a partition paused meanwhile must
    not lose the rest of that poll (faust would commit over the gap)."""
    app, _ = create_app(settings(HALA_TOPIC_PREFIX="t."))
    consumer = app.consumer
    busy, other, revoked = (TP("t.messages.send-requested.v1", n) for n in range(3))
    consumer._set_active_tps({busy, other})
    consumer.flow_active = True

    async def poll(active_partitions: set[TP] | None, timeout: float) -> dict[TP, list[str]]:
        assert active_partitions == {busy, other}
        return {busy: ["b0", "b1"], other: ["o0"], revoked: ["r0"]}

    consumer._getmany = poll  # the broker's answer, without a broker
    records, handed_over = await consumer._wait_next_records(1.0)
    assert records is not None and set(records) == {busy, other, revoked}
    assert handed_over is not None

    consumer.pause_partitions({busy})  # while the poll is being handed over
    assert busy in handed_over and other in handed_over  # busy's b0 and b1 still go in
    assert revoked not in handed_over  # no longer ours: faust drops it, as before
    assert consumer._get_active_partitions() == {other}  # the next poll does not ask for busy
    consumer.on_buffer_drop(busy)  # faust's flow control does not undo the pause
    assert consumer._get_active_partitions() == {other}

    consumer.resume_partitions({busy})
    assert consumer._get_active_partitions() == {busy, other}


async def test_a_resume_wakes_the_poll_waiting_for_new_records() -> None:
    app, _ = create_app(settings(HALA_TOPIC_PREFIX="t."))
    thread = app.consumer._thread
    waiting = asyncio.get_running_loop().create_future()  # fetched_records' wait for a fetch
    thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_fetch_waiters={waiting}))
    thread._wake_fetch_waiters()  # what resume_partitions has the consumer thread run
    assert waiting.done()
    thread._consumer = None
    thread._wake_fetch_waiters()  # not started (or stopped): nothing to wake


def test_the_consumer_group_is_prefixed_like_the_topics() -> None:
    app, _ = create_app(
        settings(
            HALA_TOPIC_PREFIX="t2.", faust_app_id="hala-billing", faust_datadir="/var/lib/billing"
        )
    )
    assert app.conf.id == "t2.hala-billing"
    assert str(app.conf.datadir) == "/var/lib/billing/t2.hala-billing-data"


@pytest.mark.parametrize("signal", ["on_partitions_revoked", "on_partitions_assigned"])
async def test_a_rebalance_makes_the_next_batch_read_every_balance_again(signal: str) -> None:
    app, runtime = create_app(settings(HALA_TOPIC_PREFIX="t."))
    shell = await funded()
    runtime.worker = shell.worker
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_0"))])
    assert shell.worker.held_balance(ACCOUNT) == shell.balance
    # Meanwhile another process owned the account's partitions and applied a top-up.
    stored = shell.balance
    shell.balances.documents[ACCOUNT] = replace(
        stored,
        available=stored.available + 50_000,
        applied={**stored.applied, "t.billing.topup-requested.v1:2": 1},
    )

    await getattr(app, signal).send({TP("t.messages.send-requested.v1", 2)})

    assert shell.worker.held_balance(ACCOUNT) is None
    shell.balances.reads.clear()
    await shell.worker.handle_batch([shell.record(SEND_REQUESTED, send_requested("msg_1"))])
    assert shell.balances.reads == [ACCOUNT]
    assert shell.balance.available == 100_000 + 50_000 - 2 * GB_UTILITY


async def test_a_rebalance_before_the_worker_exists_is_harmless() -> None:
    app, runtime = create_app(settings(HALA_TOPIC_PREFIX="t."))
    assert runtime.worker is None
    await app.on_partitions_assigned.send(set())
