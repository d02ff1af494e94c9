"""The webhook endpoint rules ingest's API and `hala webhooks` share: secrets, event patterns,
URLs, changes, rotation, notify's health verdict and replays."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest

from shared import webhook_endpoints as rules
from shared.client_events import EVENT_DATA, event_matches

NOW = 1_764_000_000_000
DAY = 24 * 3600 * 1000


def _endpoint(**overrides: object) -> dict[str, object]:
    doc = rules.new_endpoint(
        endpoint_id="we_" + "0" * 26,
        account_id="acc_a",
        url="https://hooks.example.com/in",
        events=["message.*"],
        format="standard",
        description=" CRM ",
        secret=rules.secret_entry("whs_1", "enc-1", NOW),
        now_ms=NOW,
        allow_loopback_http=False,
    )
    doc.update(overrides)
    return doc


def test_a_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    random_bytes = bytes(range(32))
    secret = rules.new_secret(random_bytes)
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert base64.b64decode(secret.removeprefix("whsec_")) == random_bytes
    assert rules.secret_key(secret) == random_bytes
    with pytest.raises(ValueError):
        rules.new_secret(b"short")
    with pytest.raises(ValueError):
        rules.secret_key("sk_" + secret)


def test_a_new_endpoint_is_enabled_now_with_its_one_secret() -> None:
    doc = _endpoint()
    assert doc["enabled"] is True and doc["enabled_at"] == NOW and doc["deleted_at"] is None
    assert doc["description"] == "CRM" and doc["format"] == "standard"
    assert doc["secrets"] == [
        {"id": "whs_1", "encrypted": "enc-1", "created_at": NOW, "expires_at": None}
    ]


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "message.*",
        "message.delivered",
        "balance.*",
        "phone_number.*",
        "phone_number.quality_changed",
        "endpoint.test",
        "template.status_changed",
    ],
)
def test_known_types_their_prefixes_and_the_wildcard_are_patterns(pattern: str) -> None:
    assert rules.check_events([pattern]) == [pattern]


@pytest.mark.parametrize(
    "pattern",
    [
        "message",
        "message.unknown",
        "messages.*",
        "*.delivered",
        "message.delivered.*",
        "",
        "MESSAGE.*",
        "mess*",
        7,
    ],
)
def test_anything_else_is_an_unknown_event_type(pattern: object) -> None:
    with pytest.raises(rules.EndpointRuleError) as raised:
        rules.check_events(["message.sent", pattern])
    assert raised.value.code == "unknown_event_type" and raised.value.field == "events[1]"


def test_every_prefix_pattern_matches_what_notify_would_deliver() -> None:
    # notify matches with shared.client_events.event_matches: a prefix a client may name
    # always matches at least one type, and only types under it.
    for prefix in rules.EVENT_PREFIXES:
        matched = [t for t in EVENT_DATA if event_matches([f"{prefix}.*"], t)]
        assert matched and all(t.startswith(prefix + ".") for t in matched)


def test_event_patterns_are_required_and_deduplicated() -> None:
    assert rules.check_events(["message.*", "*", "message.*"]) == ["message.*", "*"]
    for bad in ([], None, "message.*", ["*"] * (rules.MAX_EVENT_PATTERNS + 1)):
        with pytest.raises(rules.EndpointRuleError) as raised:
            rules.check_events(bad)
        assert raised.value.code == "invalid_field" and raised.value.field == "events"


@pytest.mark.parametrize(
    ("url", "loopback", "code"),
    [
        ("http://hooks.example.com/in", False, "insecure_url"),
        ("https://10.0.0.8/in", False, "private_address"),
        ("https://169.254.169.254/latest/meta-data", True, "private_address"),
        ("http://127.0.0.1:9000/in", False, "insecure_url"),
        ("https://127.0.0.1:9000/in", False, "private_address"),
        ("http://10.0.0.8/in", True, "insecure_url"),
        ("https://user:pw@hooks.example.com/in", False, "invalid_url"),
    ],
)
def test_urls_are_refused_with_the_url_rules_code(url: str, loopback: bool, code: str) -> None:
    with pytest.raises(rules.EndpointRuleError) as raised:
        rules.check_url(url, allow_loopback_http=loopback)
    assert (raised.value.code, raised.value.field) == (code, "url")


def test_loopback_http_is_accepted_only_in_development() -> None:
    assert rules.check_url("http://127.0.0.1:9000/in", allow_loopback_http=True) == (
        "http://127.0.0.1:9000/in"
    )
    assert rules.check_url("https://hooks.example.com/in", allow_loopback_http=False)


def test_format_and_description_are_checked() -> None:
    with pytest.raises(rules.EndpointRuleError):
        rules.check_format("json")
    with pytest.raises(rules.EndpointRuleError):
        rules.check_description("x" * (rules.MAX_DESCRIPTION_CHARS + 1))
    assert rules.check_description(None) == ""


def test_an_account_keeps_at_most_twenty_endpoints() -> None:
    rules.check_room(rules.MAX_ENDPOINTS_PER_ACCOUNT - 1)
    with pytest.raises(rules.EndpointRuleError) as raised:
        rules.check_room(rules.MAX_ENDPOINTS_PER_ACCOUNT)
    assert raised.value.code == "endpoint_limit_reached"


def test_an_update_sets_only_what_is_given_and_enabling_restarts_deliveries() -> None:
    changes = rules.endpoint_update(
        {"events": ["balance.*"], "enabled": True}, now_ms=NOW + 5, allow_loopback_http=False
    )
    assert changes == {
        "events": ["balance.*"],
        "enabled": True,
        "enabled_at": NOW + 5,
        "updated_at": NOW + 5,
    }
    assert rules.endpoint_update({"enabled": False}, now_ms=NOW, allow_loopback_http=False) == {
        "enabled": False,
        "updated_at": NOW,
    }
    for given, code in (
        ({}, "invalid_request"),
        ({"format": "meta"}, "unknown_field"),
        ({"enabled": "yes"}, "invalid_field"),
        ({"url": "http://x.example.com"}, "insecure_url"),
    ):
        with pytest.raises(rules.EndpointRuleError) as raised:
            rules.endpoint_update(given, now_ms=NOW, allow_loopback_http=False)
        assert raised.value.code == code


def test_rotation_keeps_the_old_secret_signing_for_24_hours_then_drops_it() -> None:
    first = [rules.secret_entry("whs_1", "enc-1", NOW)]
    second = rules.rotated(first, rules.secret_entry("whs_2", "enc-2", NOW + 10), NOW + 10)
    assert [(s["id"], s["expires_at"]) for s in second] == [
        ("whs_1", NOW + 10 + DAY),
        ("whs_2", None),
    ]
    assert [s["id"] for s in rules.live_secrets(second, NOW + 10 + DAY - 1)] == ["whs_1", "whs_2"]
    assert [s["id"] for s in rules.live_secrets(second, NOW + 10 + DAY)] == ["whs_2"]
    # A rotation within the 24 hours keeps both earlier ones until their own expiry; one
    # after it drops the expired one.
    third = rules.rotated(second, rules.secret_entry("whs_3", "enc-3", NOW + 20), NOW + 20)
    assert [(s["id"], s["expires_at"]) for s in third] == [
        ("whs_1", NOW + 10 + DAY),
        ("whs_2", NOW + 20 + DAY),
        ("whs_3", None),
    ]
    later = NOW + 10 + DAY + 1
    fourth = rules.rotated(third, rules.secret_entry("whs_4", "enc-4", later), later)
    assert [s["id"] for s in fourth] == ["whs_2", "whs_3", "whs_4"]
    assert first[0]["expires_at"] is None  # the input is not changed


def test_notify_disabling_counts_only_until_the_client_enables_again() -> None:
    endpoint = _endpoint()
    assert rules.receiving(endpoint, None)
    state = {
        "_id": endpoint["_id"],
        "disabled_at": NOW + 1000,
        "disabled_reason": "gone",
        "failing_since": NOW + 10,
    }
    assert rules.disabled_by_notify(endpoint, state) and not rules.receiving(endpoint, state)
    health = rules.health_view(endpoint, state)
    assert health == {
        "disabled": True,
        "disabled_reason": "gone",
        "disabled_at": "2025-11-24T16:00:01.000Z",
        "failing_since": "2025-11-24T16:00:00.010Z",
        "last_success_at": None,
    }
    enabled_again = {**endpoint, "enabled_at": NOW + 2000}
    assert rules.receiving(enabled_again, state)
    assert rules.health_view(enabled_again, state)["disabled"] is False
    # a BSON date from notify is read as well as milliseconds
    dated = {**state, "disabled_at": datetime(2025, 11, 24, 16, 0, 1, tzinfo=UTC)}
    assert rules.disabled_by_notify(endpoint, dated)
    assert not rules.receiving({**endpoint, "enabled": False}, None)
    assert not rules.receiving({**endpoint, **rules.deletion(NOW)}, None)


def test_an_endpoint_is_only_its_accounts_and_only_until_deleted() -> None:
    endpoint = _endpoint()
    assert rules.owned(endpoint, "acc_a") is endpoint
    assert rules.owned(endpoint, "acc_b") is None
    assert rules.owned({**endpoint, **rules.deletion(NOW)}, "acc_a") is None
    assert rules.owned(None, "acc_a") is None


def test_the_view_never_shows_a_secret() -> None:
    endpoint = _endpoint()
    view = rules.endpoint_view(endpoint, None, NOW)
    assert "enc-1" not in repr(view)
    assert view["secrets"] == [
        {"id": "whs_1", "created_at": "2025-11-24T16:00:00.000Z", "expires_at": None}
    ]


def test_a_replay_is_one_event_or_a_time_range() -> None:
    assert rules.replay(since=None, until=None, event_id="evt_1", now_ms=NOW) == rules.Replay(
        event_id="evt_1"
    )
    assert rules.replay(since=NOW - DAY, until=None, event_id=None, now_ms=NOW) == rules.Replay(
        since=NOW - DAY, until=NOW
    )
    for since, until, event_id, field in (
        (NOW, NOW - 1, None, "since"),
        (NOW + 1, NOW + 2, None, "since"),
        (None, NOW, None, "since"),
        (None, None, "evt 1", "event_id"),
        (NOW - 1, None, "evt_1", None),
    ):
        with pytest.raises(rules.EndpointRuleError) as raised:
            rules.replay(since=since, until=until, event_id=event_id, now_ms=NOW)
        assert raised.value.field == field


def test_the_notify_requests_carry_what_notify_needs() -> None:
    test = rules.notify_request(
        request_id="nreq_1", account_id="acc_a", endpoint_id="we_1", now_ms=NOW
    )
    assert (test.kind, test.replay_event_id, test.since, test.requested_at) == (
        "test",
        None,
        None,
        NOW,
    )
    replay = rules.notify_request(
        request_id="nreq_2",
        account_id="acc_a",
        endpoint_id="we_1",
        now_ms=NOW,
        replay_of=rules.Replay(since=1, until=2),
    )
    assert (replay.kind, replay.since, replay.until, replay.event_id) == ("replay", 1, 2, "nreq_2")
    assert rules.notify_request_view(replay)["since"] == "1970-01-01T00:00:00.001Z"
