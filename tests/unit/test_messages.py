"""Every topic's examples decode and round-trip (snuba's test_all_schemas idea)."""

import msgspec
import orjson
import pytest

from shared.messages import ALL_TOPICS, SEND_APPROVED, SEND_REQUESTED, Topic


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
