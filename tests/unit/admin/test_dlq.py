"""`hala dlq`'s pure parts: naming a dead-letter topic, showing a dead letter, planning its
replay (where it goes back to, with which headers), and the command line."""

from __future__ import annotations

import argparse

import pytest

from services.admin import core
from services.admin.cli import build_parser
from shared.dead_letters import DLQ_HEADERS, Failure, dead_letter_headers
from shared.errors import InvalidRequest, NotFound

PREFIX = "t1."
KNOWN = ["t1.messages.status-changed.v1.dlq", "t1.webhooks.received.v1.dlq"]


def _headers(**overrides: str) -> list[tuple[str, bytes]]:
    try:
        raise KeyError("statuses")
    except KeyError as exc:
        error = exc
    headers = dead_letter_headers(
        [("traceparent", b"00-abc-01"), ("replayed_from", b"old:0:1")],
        topic="t1.webhooks.received.v1",
        partition=2,
        offset=41,
        failure=Failure(error, 3),
        service="status",
        now_ms=1_764_000_000_000,
    )
    return [(k, overrides[k].encode() if k in overrides else v) for k, v in headers]


def test_the_platforms_dead_letter_topics_are_listed_with_the_prefix_only() -> None:
    existing = [
        *KNOWN,
        "t1.messages.status-changed.v1",
        "t2.webhooks.received.v1.dlq",
        "t1.someone-elses.dlq",
    ]
    assert core.dlq_topic_names(PREFIX, existing) == KNOWN


@pytest.mark.parametrize(
    "name",
    [
        "t1.webhooks.received.v1.dlq",
        "webhooks.received.v1.dlq",
        "webhooks.received.v1",
        " t1.webhooks.received.v1 ",
    ],
)
def test_a_dead_letter_topic_is_named_in_full_without_prefix_or_by_its_source(name: str) -> None:
    assert core.resolve_dlq_topic(name, PREFIX, KNOWN) == "t1.webhooks.received.v1.dlq"


def test_an_unknown_dead_letter_topic_is_refused_with_the_known_ones() -> None:
    with pytest.raises(NotFound) as info:
        core.resolve_dlq_topic("billing.topup-requested.v1", PREFIX, KNOWN)
    assert info.value.code == "unknown_dlq_topic"
    assert info.value.details["known"] == KNOWN


def test_a_dead_letter_is_shown_with_its_error_source_and_decoded_value() -> None:
    shown = core.describe_dead_letter(
        "t1.webhooks.received.v1.dlq",
        0,
        7,
        1_764_000_000_500,
        b"102290129340398",
        b'{"event_id": "x"}',
        _headers(),
        traceback_lines=2,
    )
    assert shown["dead_letter"] == "t1.webhooks.received.v1.dlq:0:7"
    assert shown["source"] == "t1.webhooks.received.v1:2:41"
    assert shown["service"] == "status"
    assert shown["error"]["type"] == "KeyError" and shown["error"]["reason"] == "unexpected"
    assert shown["error"]["attempts"] == 3
    assert shown["error"]["traceback"][-1] == "KeyError: 'statuses'"
    assert len(shown["error"]["traceback"]) == 2
    assert shown["headers"] == {"traceparent": "00-abc-01", "replayed_from": "old:0:1"}
    assert shown["value"] == {"event_id": "x"}
    assert shown["key"] == "102290129340398"
    assert shown["dead_lettered_at"].year == 2025


@pytest.mark.parametrize(
    ("value", "shown"), [(b"not json", "not json"), (b"\xff\xfe", {"base64": "//4="}), (None, None)]
)
def test_values_that_are_not_json_are_shown_as_text_or_base64(
    value: bytes | None, shown: object
) -> None:
    assert core.decoded_value(value) == shown


def test_a_replay_goes_back_to_the_source_partition_with_the_original_headers_only() -> None:
    plan = core.replay_plan("t1.webhooks.received.v1.dlq", 0, 7, _headers())
    assert (plan.topic, plan.partition) == ("t1.webhooks.received.v1", 2)
    assert plan.id == "t1.webhooks.received.v1.dlq:0:7"
    assert plan.source == "t1.webhooks.received.v1:2:41"
    assert plan.headers == [
        ("traceparent", b"00-abc-01"),
        ("replayed_from", b"t1.webhooks.received.v1.dlq:0:7"),
    ]
    assert not {name for name, _ in plan.headers} & set(DLQ_HEADERS)


def test_a_dead_letter_naming_another_source_topic_is_not_replayed() -> None:
    with pytest.raises(InvalidRequest) as info:
        core.replay_plan(
            "t1.webhooks.received.v1.dlq",
            0,
            7,
            _headers(source_topic="t1.billing.topup-requested.v1"),
        )
    assert info.value.code == "dlq_source_mismatch"


def test_a_dead_letter_without_its_position_headers_goes_back_by_key() -> None:
    plan = core.replay_plan("t1.webhooks.received.v1.dlq", 0, 9, [("traceparent", b"x")])
    assert plan.partition is None
    assert plan.source == "unknown:t1.webhooks.received.v1.dlq:0:9"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_dlq_commands_parse() -> None:
    assert (parse("dlq", "list").group, parse("dlq", "list").command) == ("dlq", "list")
    show = parse("dlq", "show", "webhooks.received.v1", "--limit", "5", "--offset", "3")
    assert (show.topic, show.limit, show.offset, show.traceback_lines) == (
        "webhooks.received.v1",
        5,
        3,
        core.TRACEBACK_LINES,
    )
    replay = parse("dlq", "replay", "webhooks.received.v1", "--all", "--dry-run", "--json")
    assert replay.replay_all and replay.dry_run and replay.offset is None and replay.json


@pytest.mark.parametrize(
    "argv",
    [
        ("dlq", "replay", "t"),  # neither --offset nor --all
        ("dlq", "replay", "t", "--offset", "1", "--all"),
        ("dlq", "show", "t", "--limit", "0"),
        ("dlq", "show"),
    ],
)
def test_bad_dlq_arguments_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
