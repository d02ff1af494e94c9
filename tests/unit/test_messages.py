"""Every topic's examples decode and round-trip (snuba's test_all_schemas idea)."""

import msgspec
import orjson
import pytest

from shared.kafka import KafkaConfig, make_producer
from shared.messages import (
    ALL_TOPICS,
    INBOUND_RECEIVED,
    SEND_APPROVED,
    SEND_REQUESTED,
    WEBHOOK_MAX_MESSAGE_BYTES,
    WEBHOOK_RECEIVED,
    Topic,
)


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_every_example_decodes_and_round_trips(topic: Topic) -> None:
    assert topic.examples, f"{topic.name} ships no example payload"
    for example in topic.examples:
        event = topic.decode(orjson.dumps(example))
        key, value = topic.encode(event)
        assert topic.decode(value) == event
        assert key == topic.key(event).encode()
        assert key, "every event has a non-empty key"


def test_topic_names_follow_domain_event_version_and_are_unique() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    for name in names:
        domain, event, version = name.split(".")
        assert domain and event and version.startswith("v") and version[1:].isdigit()


def test_send_requests_are_keyed_by_account_and_approvals_by_phone_number() -> None:
    request = SEND_REQUESTED.decode(orjson.dumps(SEND_REQUESTED.examples[0]))
    approved = SEND_APPROVED.decode(orjson.dumps(SEND_APPROVED.examples[0]))
    assert SEND_REQUESTED.key(request) == request.account_id
    assert SEND_APPROVED.key(approved) == approved.phone_number_id


def test_a_payload_missing_a_required_field_is_rejected() -> None:
    bad = dict(SEND_REQUESTED.examples[0])
    del bad["account_id"]
    with pytest.raises(msgspec.ValidationError, match="account_id"):
        SEND_REQUESTED.decode(orjson.dumps(bad))


def test_a_wrongly_typed_amount_is_rejected() -> None:
    bad = {**SEND_APPROVED.examples[0], "reserved_amount": "lots"}
    with pytest.raises(msgspec.ValidationError, match="reserved_amount"):
        SEND_APPROVED.decode(orjson.dumps(bad))


def test_every_topic_keeps_its_records_for_a_purposeful_time() -> None:
    week = 7 * 86_400_000
    for topic in ALL_TOPICS:
        configs, dlq = topic.configs(), topic.dlq_configs()
        if topic.compacted:
            assert configs["cleanup.policy"] == "compact" and "retention.ms" not in configs
            continue
        retention = int(configs["retention.ms"])
        assert 0 < retention <= int(dlq["retention.ms"]), topic.name
    # What a user wrote or a client sends them: a week at most.
    for topic in (SEND_REQUESTED, SEND_APPROVED, WEBHOOK_RECEIVED, INBOUND_RECEIVED):
        assert int(topic.configs()["retention.ms"]) <= week, topic.name


async def test_the_webhook_topic_and_every_producer_take_metas_largest_webhook() -> None:
    from services.status.settings import StatusSettings

    largest = StatusSettings().max_webhook_bytes  # what status accepts: Meta's 3 MB
    # The event wraps the payload; a dead letter adds error headers (traceback <= 8 KiB).
    assert int(WEBHOOK_RECEIVED.configs()["max.message.bytes"]) >= largest + 64 * 1024
    assert int(WEBHOOK_RECEIVED.dlq_configs()["max.message.bytes"]) >= largest + 64 * 1024
    producer = make_producer(KafkaConfig("127.0.0.1:1", "PLAINTEXT"))  # built, never started
    assert producer._max_request_size >= max(t.max_message_bytes or 0 for t in ALL_TOPICS)
    assert producer._max_request_size == WEBHOOK_MAX_MESSAGE_BYTES
