"""The broker's security, as the platform's clients meet it: SASL_SSL with SCRAM, and ACLs that
give each service's principal its own topics and groups only (shared/kafka_access.py).

- a service cannot write a topic it does not produce: ingest (or the sender, or billing) can't
  write a top-up, which only the admin CLI's principal may; and no service may read another's
  consumer group;
- a client without credentials, with a wrong password, or speaking plaintext to the TLS
  listener, gets nothing;
- ingest's librdkafka producer meets the same ACLs as the aiokafka clients;
- a broker certificate from another CA is refused by the client.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
)
from pydantic import SecretStr

from shared.errors import DependencyUnavailable
from shared.kafka import KafkaConfig, make_admin, make_consumer, make_producer, topic_name
from shared.kafka_access import principal
from shared.messages import (
    SEND_APPROVED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TOPUP_REQUESTED,
    WEBHOOK_RECEIVED,
    Topic,
)
from shared.rdkafka_producer import RdKafkaProducer
from tests.conftest import Broker

TOPICS: tuple[Topic[Any], ...] = (
    SEND_REQUESTED,
    SEND_APPROVED,
    STATUS_CHANGED,
    TOPUP_REQUESTED,
    WEBHOOK_RECEIVED,
)


async def _write(kafka: KafkaConfig, topic: str) -> str:
    """'written', or the name of the error the broker answered with."""
    producer = make_producer(kafka, request_timeout_ms=10000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value=b"{}", key=b"acc_x"), 20)
        return "written"
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await producer.stop()


async def _join(kafka: KafkaConfig, group: str, topic: str) -> str:
    consumer = make_consumer(kafka, group, topic)
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 20)
        return "joined"
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await consumer.stop()


@pytest.fixture
async def prefix(broker: Broker, unique: str) -> str:
    value = f"t{unique}."
    await broker.grant(value, TOPICS)
    return value


async def test_only_the_admin_principal_may_write_a_top_up(broker: Broker, prefix: str) -> None:
    topup = topic_name(TOPUP_REQUESTED, prefix)
    refused = {
        service: await _write(broker.as_service(service), topup)
        for service in ("ingest", "sender", "billing", "status")
    }
    assert refused == dict.fromkeys(refused, "TopicAuthorizationFailedError")
    assert await _write(broker.as_service("admin"), topup) == "written"


async def test_a_service_writes_what_it_produces_and_nothing_it_only_reads(
    broker: Broker, prefix: str
) -> None:
    ingest, sender = broker.as_service("ingest"), broker.as_service("sender")
    assert await _write(ingest, topic_name(SEND_REQUESTED, prefix)) == "written"
    # The sender consumes send-approved: it may read it, dead-letter it, but not forge one.
    assert (
        await _write(sender, topic_name(SEND_APPROVED, prefix)) == "TopicAuthorizationFailedError"
    )
    assert await _write(sender, f"{topic_name(SEND_APPROVED, prefix)}.dlq") == "written"
    assert await _write(sender, topic_name(STATUS_CHANGED, prefix)) == "written"


async def test_ingest_s_librdkafka_producer_is_refused_a_top_up_too(
    broker: Broker, prefix: str
) -> None:
    producer = RdKafkaProducer(broker.as_service("ingest"), delivery_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send(topic_name(SEND_REQUESTED, prefix), b"acc_x", b"{}")
        with pytest.raises(DependencyUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
            await asyncio.wait_for(
                producer.send(topic_name(TOPUP_REQUESTED, prefix), b"acc_x", b"{}"), 20
            )
    finally:
        await producer.stop()


async def test_a_service_may_not_join_another_service_s_consumer_group(
    broker: Broker, prefix: str
) -> None:
    status_changed = topic_name(STATUS_CHANGED, prefix)
    billing = broker.as_service("billing")
    assert await _join(billing, f"{prefix}billing-it", status_changed) == "joined"
    assert (
        await _join(billing, f"{prefix}status-state", status_changed)
        == GroupAuthorizationFailedError.__name__
    )


async def test_a_service_sees_only_its_own_topics(broker: Broker, prefix: str) -> None:
    admin = make_admin(broker.as_service("ingest"))
    await admin.start()
    try:
        visible = {t for t in await admin.list_topics() if t.startswith(prefix)}
    finally:
        await admin.close()
    assert visible == {topic_name(SEND_REQUESTED, prefix)}


async def _refused(kafka: KafkaConfig) -> BaseException:
    admin = make_admin(kafka, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        await asyncio.wait_for(admin.list_topics(), 30)
    except (KafkaError, TimeoutError, OSError) as exc:
        return exc
    finally:
        await admin.close()
    raise AssertionError(f"{kafka.username or 'an anonymous client'} was let in")


async def test_a_wrong_password_or_an_unknown_user_is_refused(broker: Broker) -> None:
    wrong = broker.as_service("ingest").as_user(principal("ingest"), "not-the-password-at-all")
    assert isinstance(await _refused(wrong), KafkaConnectionError)
    stranger = broker.setup.as_user("mallory", SecretStr("a-password-of-mallory-0123"))
    assert isinstance(await _refused(stranger), KafkaConnectionError)


async def test_plaintext_and_unauthenticated_clients_are_refused(broker: Broker) -> None:
    setup = broker.setup
    plaintext = KafkaConfig(setup.bootstrap_servers, "PLAINTEXT")
    tls_only = KafkaConfig(setup.bootstrap_servers, "SSL", ca_file=setup.ca_file)
    for client in (plaintext, tls_only):
        assert isinstance(await _refused(client), KafkaConnectionError | TimeoutError)


async def test_a_broker_certificate_from_another_ca_is_refused(
    broker: Broker, tmp_path: Any
) -> None:
    from tools import pki

    other = pki.issue(tmp_path, "elsewhere")  # a CA that did not sign the broker's certificate
    assert isinstance(
        await _refused(replace(broker.as_service("ingest"), ca_file=str(other.ca))),
        KafkaConnectionError,
    )
