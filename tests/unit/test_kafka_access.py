"""Who may do what on Kafka (shared/kafka_access.py), derived from the topic registry, and how
every client is configured from one KafkaConfig (shared/kafka.py)."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from services.billing.app import consumer_group
from services.billing.settings import BillingSettings
from services.guard.worker import group as guard_group
from services.notify.worker import group as notify_group
from services.sender.consumer import WorkerConfig
from services.status.workers import processor_group, state_writer_group
from shared.kafka import KafkaConfig
from shared.kafka_access import ADMIN, SERVICES, grants, group_prefix, principal, topics_of
from shared.messages import ALL_TOPICS, TOPUP_REQUESTED

PREFIX = "t1."


def _allowed(operation: str, resource: str = "topic") -> set[tuple[str, str]]:
    return {
        (g.principal, g.name)
        for g in grants(PREFIX)
        if g.operation == operation and g.resource == resource
    }


def test_producers_write_consumers_read_and_dead_letter_their_topics() -> None:
    writes, reads = _allowed("write"), _allowed("read")
    for topic in ALL_TOPICS:
        for service in topic.producers:
            assert (principal(service), PREFIX + topic.name) in writes
        for service in topic.consumers:
            assert (principal(service), PREFIX + topic.name) in reads
            assert (principal(service), PREFIX + topic.dlq) in writes


def test_nothing_else_is_written_but_by_the_admin_cli_s_dead_letter_replay() -> None:
    for who, name in _allowed("write"):
        if who == principal(ADMIN):
            continue
        service = who.removeprefix("hala-")
        topic = next(t for t in ALL_TOPICS if name in (PREFIX + t.name, PREFIX + t.dlq))
        assert (
            service in topic.producers
            if name == PREFIX + topic.name
            else service in topic.consumers
        ), (who, name)


def test_top_ups_are_writable_by_the_admin_principal_only() -> None:
    writers = {who for who, name in _allowed("write") if name == PREFIX + TOPUP_REQUESTED.name}
    assert writers == {principal(ADMIN)}


def test_the_admin_cli_reads_every_dead_letter_topic_and_nothing_else() -> None:
    admin_reads = {name for who, name in _allowed("read") if who == principal(ADMIN)}
    assert admin_reads == {PREFIX + t.dlq for t in ALL_TOPICS}


def test_every_consumer_group_a_service_uses_is_covered_by_its_group_acl() -> None:
    groups = {
        "status": [processor_group(PREFIX), state_writer_group(PREFIX)],
        "sender": [WorkerConfig(KafkaConfig("k:1", "PLAINTEXT"), PREFIX).group],
        "billing": [consumer_group(BillingSettings(HALA_TOPIC_PREFIX=PREFIX))],
        "notify": [notify_group(PREFIX)],
        "guard": [guard_group(PREFIX)],
    }
    acls = {who: name for who, name in _allowed("read", "group")}
    for service, names in groups.items():
        assert acls[principal(service)] == group_prefix(service, PREFIX)
        assert all(n.startswith(acls[principal(service)]) for n in names), names
    assert all(g.pattern == "prefixed" for g in grants(PREFIX) if g.resource == "group")
    # Services that consume nothing (ingest, the CLI) get no group at all.
    assert principal("ingest") not in acls and principal(ADMIN) not in acls


def test_every_service_of_the_registry_has_a_principal() -> None:
    named = {s for t in ALL_TOPICS for s in (*t.producers, *t.consumers)}
    assert named <= set(SERVICES)
    assert topics_of("ingest") == [t.name for t in ALL_TOPICS if "ingest" in t.producers]


def test_a_sasl_ssl_config_gives_every_client_library_the_same_credentials() -> None:
    kafka = KafkaConfig(
        "localhost:9092",
        "SASL_SSL",
        username="hala-ingest",
        password=SecretStr("a-strong-password-0123"),
        ca_file=None,
    )
    aiokafka = kafka.aiokafka_options()
    assert aiokafka["security_protocol"] == "SASL_SSL"
    assert (
        aiokafka["sasl_mechanism"],
        aiokafka["sasl_plain_username"],
        aiokafka["sasl_plain_password"],
    ) == ("SCRAM-SHA-512", "hala-ingest", "a-strong-password-0123")
    context = aiokafka["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert kafka.ssl_context is context  # one context per config, shared by its clients
    rdkafka = kafka.rdkafka_options()
    assert (
        rdkafka["security.protocol"],
        rdkafka["sasl.mechanism"],
        rdkafka["sasl.username"],
        rdkafka["broker.address.family"],
    ) == ("sasl_ssl", "SCRAM-SHA-512", "hala-ingest", "v4")
    assert "a-strong-password-0123" not in repr(kafka)
    other = kafka.as_user("hala-admin", "another-password-0123")
    assert other.username == "hala-admin" and other.bootstrap_servers == kafka.bootstrap_servers


def test_sasl_without_a_password_is_not_a_config() -> None:
    with pytest.raises(ValueError, match="needs a SASL user name and password"):
        KafkaConfig("localhost:9092", "SASL_SSL", username="hala-ingest")


def test_plaintext_has_no_tls_and_no_sasl_options() -> None:
    options = KafkaConfig("localhost:9092", "PLAINTEXT").aiokafka_options()
    assert options == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}
