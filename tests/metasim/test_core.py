"""Pure-core unit tests: no server, no clock, no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from tools.metasim.core import (
    StatusDelays,
    TokenBucket,
    UniqueRecipientWindow,
    check_template_components,
    check_template_status,
    check_version,
    customer_service_window_open,
    decide_pricing,
    is_us_number,
    later_status,
    make_wamid,
    normalize_recipient,
    parse_outbound,
    plan_statuses,
    retry_delay,
    template_shape,
)
from tools.metasim.errors import ERROR_TABLE, GraphError, graph_error_body, webhook_error_object
from tools.metasim.payloads import serialize_like_meta, signature_header


def code_of(fn, *args, **kwargs) -> int:
    with pytest.raises(GraphError) as info:
        fn(*args, **kwargs)
    return info.value.code


# -- token buckets --------------------------------------------------------------------------


def test_throughput_bucket_allows_one_second_of_burst_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate=80, capacity=80, now=0.0)
    assert sum(bucket.try_take(0.0) for _ in range(200)) == 80
    assert sum(bucket.try_take(0.5) for _ in range(200)) == 40
    assert sum(bucket.try_take(10.0) for _ in range(200)) == 80  # never more than capacity


def test_pair_bucket_burst_of_45_is_paid_back_at_one_message_per_6_seconds() -> None:
    bucket = TokenBucket(rate=1 / 6, capacity=45, now=0.0)
    assert all(bucket.try_take(0.0) for _ in range(45))
    assert not bucket.try_take(5.9)
    assert bucket.try_take(6.0)
    assert not bucket.try_take(6.0)
    # Meta's example: a burst of 20 needs ~2 minutes to be paid back.
    small = TokenBucket(rate=1 / 6, capacity=45, now=0.0)
    for _ in range(20):
        small.try_take(0.0)
    assert not small.is_full(119.0)
    assert small.is_full(120.0)


def test_forced_take_for_inbound_goes_into_bounded_debt() -> None:
    bucket = TokenBucket(rate=10, capacity=10, now=0.0)
    for _ in range(50):
        bucket.force_take(0.0)
    assert bucket.available(0.0) == -10
    assert not bucket.try_take(1.0)  # 1 s refills the debt back to 0 only
    assert bucket.try_take(1.1)


# -- windows --------------------------------------------------------------------------------


def test_unique_recipient_window_counts_each_user_once_and_moves_with_time() -> None:
    window = UniqueRecipientWindow(limit=2, window_seconds=100.0)
    assert window.admit("a", 0.0)
    assert window.admit("a", 10.0)  # same user: not a new unique
    assert window.admit("b", 20.0)
    assert not window.admit("c", 30.0)
    assert window.count(30.0) == 2
    # "a" was last counted at 10 s: it leaves the moving window at 110 s.
    assert not window.admit("c", 109.0)
    assert window.admit("c", 110.5)


def test_unlimited_tier_admits_everyone() -> None:
    window = UniqueRecipientWindow(limit=None, window_seconds=86_400)
    assert all(window.admit(str(i), 0.0) for i in range(10_000))


def test_customer_service_window_is_24_hours_from_last_inbound() -> None:
    assert not customer_service_window_open(None, 0.0, 86_400)
    assert customer_service_window_open(0.0, 86_399.9, 86_400)
    assert not customer_service_window_open(0.0, 86_400.0, 86_400)


# -- recipients, ids, versions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "wa_id"),
    [
        ("+44 7700-900123", "447700900123"),
        ("+1 (650) 555-1234", "16505551234"),
        ("(631) 555-1234", "16315551234"),  # no '+': business country code (1) prepended
        ("7700900123", "17700900123"),
        # A bare WhatsApp id (country code included), as most clients send it, is kept.
        ("447912345678", "447912345678"),
        ("447700900123", "447700900123"),
        ("919876543210", "919876543210"),
    ],
)
def test_recipient_formats_are_normalised_like_meta(to: str, wa_id: str) -> None:
    assert normalize_recipient(to, "1") == wa_id


def test_recipient_without_plus_gets_the_business_country_code_not_its_own() -> None:
    assert normalize_recipient("6315551234", "91") == "916315551234"
    assert normalize_recipient("(631) 555-1234", "91") == "916315551234"
    # Formatting marks a national number even when the digits could be international.
    assert normalize_recipient("44 7912 345678", "1") == "1447912345678"


@pytest.mark.parametrize("to", ["", "   ", "abc", "+12", "+1234567890123456", None, 123])
def test_invalid_recipients_are_code_100(to: object) -> None:
    assert code_of(normalize_recipient, to, "1") == 100


def test_wamid_looks_like_meta_and_embeds_the_recipient() -> None:
    first, second = make_wamid("447700900123", 1, 7), make_wamid("447700900123", 2, 7)
    assert first.startswith("wamid.") and first != second
    raw = base64.b64decode(first.removeprefix("wamid."))
    assert raw[:2] == b"\x1c\x18" and raw[2] == len("447700900123")
    assert b"447700900123" in raw


@pytest.mark.parametrize("version", ["v22.0", "v23.0", "v24.0", "v25.0", "v26.0", None])
def test_supported_versions(version: str | None) -> None:
    check_version(version)


@pytest.mark.parametrize("version", ["v21.0", "v27.0", "v17.0"])
def test_unsupported_versions_are_code_100(version: str) -> None:
    assert code_of(check_version, version) == 100


# -- payload validation ---------------------------------------------------------------------


def test_messaging_product_must_be_whatsapp() -> None:
    assert (
        code_of(parse_outbound, {"messaging_product": "sms", "to": "+1", "text": {"body": "x"}})
        == 100
    )
    assert code_of(parse_outbound, {"to": "+1", "text": {"body": "x"}}) == 100


def test_text_body_limit_is_4096() -> None:
    ok = {
        "messaging_product": "whatsapp",
        "to": "+447700900123",
        "type": "text",
        "text": {"body": "x" * 4096},
    }
    assert parse_outbound(ok).type == "text"
    too_long = {**ok, "text": {"body": "x" * 4097}}
    assert code_of(parse_outbound, too_long) == 100


def test_media_needs_exactly_one_of_id_or_link() -> None:
    base = {"messaging_product": "whatsapp", "to": "+447700900123", "type": "image"}
    assert parse_outbound({**base, "image": {"id": "1479537139650973"}}).type == "image"
    assert parse_outbound({**base, "image": {"link": "https://x.example/a.png"}}).type == "image"
    assert code_of(parse_outbound, {**base, "image": {}}) == 100
    assert code_of(parse_outbound, {**base, "image": {"id": "1", "link": "https://x"}}) == 100


def test_interactive_buttons_are_limited_to_three_with_short_titles() -> None:
    def buttons(n: int, title: str = "OK") -> dict:
        return {
            "messaging_product": "whatsapp",
            "to": "+447700900123",
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Pick"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": f"b{i}", "title": f"{title}{i}"}}
                        for i in range(n)
                    ]
                },
            },
        }

    assert parse_outbound(buttons(3)).type == "interactive"
    # Meta answers interactive value limits with (#131009) Parameter value is not valid.
    assert code_of(parse_outbound, buttons(4)) == 131009
    assert code_of(parse_outbound, buttons(1, title="x" * 21)) == 131009


def test_mark_as_read_form_is_recognised() -> None:
    message = parse_outbound(
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
    )
    assert message.message_id == "wamid.X"


def test_callback_data_is_limited_to_512_characters() -> None:
    base = {"messaging_product": "whatsapp", "to": "+447700900123", "text": {"body": "x"}}
    assert parse_outbound({**base, "biz_opaque_callback_data": "c" * 512}).biz_opaque_callback_data
    assert code_of(parse_outbound, {**base, "biz_opaque_callback_data": "c" * 513}) == 100


# -- templates ------------------------------------------------------------------------------

POSITIONAL = template_shape(
    "POSITIONAL",
    [
        {"type": "HEADER", "format": "IMAGE"},
        {"type": "BODY", "text": "Hi {{1}}, order {{2}} ({{1}}) is confirmed."},
        {"type": "BUTTONS", "buttons": [{"type": "URL", "url": "https://x/{{1}}", "text": "Go"}]},
    ],
)
NAMED = template_shape("NAMED", [{"type": "BODY", "text": "{{guests}} guests on {{day}}"}])

IMAGE_HEADER = {"type": "header", "parameters": [{"type": "image", "image": {"id": "123"}}]}
URL_BUTTON = {
    "type": "button",
    "sub_type": "url",
    "index": "0",
    "parameters": [{"type": "text", "text": "abc"}],
}


def body(*texts: str, names: tuple[str, ...] = ()) -> dict:
    params = [{"type": "text", "text": t} for t in texts]
    for param, name in zip(params, names, strict=False):
        param["parameter_name"] = name
    return {"type": "body", "parameters": params}


def test_template_shape_counts_distinct_placeholders() -> None:
    assert POSITIONAL.body_params == ("1", "2")
    assert POSITIONAL.header_format == "IMAGE"
    assert POSITIONAL.button_params == ((0, 1),)
    assert NAMED.body_params == ("guests", "day")


def test_matching_template_parameters_pass() -> None:
    check_template_components(POSITIONAL, [IMAGE_HEADER, body("Jessica", "SKBUP2"), URL_BUTTON])
    check_template_components(NAMED, [body("4", "Saturday", names=("day", "guests"))])


@pytest.mark.parametrize(
    ("components", "code"),
    [
        ([IMAGE_HEADER, body("only one"), URL_BUTTON], 132000),
        ([IMAGE_HEADER, body("a", "b", "c"), URL_BUTTON], 132000),
        ([body("a", "b"), URL_BUTTON], 132012),  # media header missing
        (
            [
                {"type": "header", "parameters": [{"type": "video", "video": {"id": "1"}}]},
                body("a", "b"),
                URL_BUTTON,
            ],
            132012,
        ),
        ([IMAGE_HEADER, body("a", "b")], 132000),  # URL button parameter missing
    ],
)
def test_template_parameter_mismatches(components: list, code: int) -> None:
    assert code_of(check_template_components, POSITIONAL, components) == code


def test_hydrated_length_counts_every_repeat_of_a_placeholder() -> None:
    shape = template_shape("POSITIONAL", [{"type": "BODY", "text": "{{1}} {{1}} {{1}}"}])
    check_template_components(shape, [body("x" * 340)])  # 3 x 340 + 2 spaces = 1022
    assert code_of(check_template_components, shape, [body("x" * 400)]) == 132005


def test_text_parameters_with_new_lines_tabs_or_runs_of_spaces_are_refused() -> None:
    for text in ("a\nb", "a\tb", "a     b"):
        assert (
            code_of(check_template_components, NAMED, [body(text, "x", names=("guests", "day"))])
            == 132018
        )
        assert (
            code_of(
                check_template_components, NAMED, [body(text, "x", names=("guests", "day"))], 22.0
            )
            == 100
        )
    check_template_components(NAMED, [body("a    b", "x", names=("guests", "day"))])  # 4 is fine


def test_named_template_needs_parameter_names_that_match() -> None:
    assert code_of(check_template_components, NAMED, [body("4", "Sat")]) == 132012
    assert (
        code_of(check_template_components, NAMED, [body("4", "Sat", names=("guests", "month"))])
        == 132000
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [("PAUSED", 132015), ("DISABLED", 132016), ("PENDING", 132001), ("REJECTED", 132001)],
)
def test_only_approved_templates_can_be_sent(status: str, code: int) -> None:
    check_template_status("APPROVED", "t", "en_US")
    assert code_of(check_template_status, status, "t", "en_US") == code


# -- pricing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "category", "window_open", "expected"),
    [
        ("pmp-2025-07", None, True, ("free_customer_service", "service", False)),
        ("pmp-2025-07", "UTILITY", True, ("free_customer_service", "utility", False)),
        ("pmp-2025-07", "UTILITY", False, ("regular", "utility", True)),
        ("pmp-2025-07", "MARKETING", True, ("regular", "marketing", True)),
        ("pmp-2025-07", "AUTHENTICATION", False, ("regular", "authentication", True)),
        ("pmp-2026-10", None, True, ("regular", "service", True)),
        ("pmp-2026-10", "UTILITY", True, ("regular", "utility", True)),
        ("pmp-2026-10", "MARKETING", False, ("regular", "marketing", True)),
    ],
)
def test_pricing_rules(
    rules: str, category: str | None, window_open: bool, expected: tuple
) -> None:
    pricing = decide_pricing(rules, category, window_open)  # type: ignore[arg-type]
    assert (pricing.type, pricing.category, pricing.billable) == expected
    assert pricing.as_webhook() == {
        "billable": expected[2],
        "pricing_model": "PMP",
        "type": expected[0],
        "category": expected[1],
    }


def test_us_numbers_including_unassigned_area_codes_count_as_us() -> None:
    assert is_us_number("16505551234", "US")
    assert is_us_number("15550001234", None)
    assert not is_us_number("14165551234", "CA")
    assert not is_us_number("447700900123", "GB")


# -- status plans ---------------------------------------------------------------------------

DELAYS = StatusDelays(sent=1.0, delivered=2.0, read=3.0)


def plan(**kwargs) -> list:
    defaults = dict(
        delays=DELAYS,
        reaction=False,
        failure_code=None,
        fail_after_sent=False,
        will_read=True,
        skip_delivered=False,
        out_of_order=False,
    )
    return plan_statuses(**{**defaults, **kwargs})


def test_plain_plan_is_sent_delivered_read_with_pricing_on_sent_and_delivered_only() -> None:
    steps = plan()
    assert [(s.status, s.event_offset, s.with_pricing) for s in steps] == [
        ("sent", 1.0, True),
        ("delivered", 3.0, True),
        ("read", 6.0, False),
    ]


def test_voice_message_is_played_after_read_without_pricing() -> None:
    steps = plan(voice=True)
    assert [(s.status, s.event_offset, s.with_pricing) for s in steps][-2:] == [
        ("read", 6.0, False),
        ("played", 9.0, False),
    ]
    assert [s.status for s in plan(voice=True, will_read=False)] == ["sent", "delivered"]
    assert later_status("read", "played") == "played" and later_status("played", "read") == "played"


def test_free_entry_point_is_free_under_both_rules() -> None:
    for rules in ("pmp-2025-07", "pmp-2026-10"):
        for category in (None, "MARKETING", "UTILITY"):
            pricing = decide_pricing(rules, category, False, free_entry_point=True)
            assert (pricing.type, pricing.category, pricing.billable) == (
                "free_entry_point",
                "referral_conversion",
                False,
            )


def test_skipped_delivered_moves_pricing_to_read() -> None:
    steps = plan(skip_delivered=True)
    assert [(s.status, s.with_pricing) for s in steps] == [("sent", True), ("read", True)]


def test_out_of_order_emits_delivered_before_sent_but_keeps_true_timestamps() -> None:
    steps = plan(out_of_order=True, will_read=False)
    by_status = {s.status: s for s in steps}
    assert by_status["delivered"].emit_offset < by_status["sent"].emit_offset
    assert by_status["delivered"].event_offset > by_status["sent"].event_offset


def test_failures_carry_no_pricing_and_reactions_only_get_sent() -> None:
    assert [(s.status, s.with_pricing, s.error_code) for s in plan(failure_code=131026)] == [
        ("failed", False, 131026)
    ]
    after_sent = plan(failure_code=131000, fail_after_sent=True)
    assert [s.status for s in after_sent] == ["sent", "failed"]
    assert [s.status for s in plan(reaction=True)] == ["sent"]


def test_status_progress_is_monotonic_and_failed_is_terminal() -> None:
    assert later_status("read", "delivered") == "read"
    assert later_status("sent", "delivered") == "delivered"
    assert later_status("failed", "read") == "failed"
    assert later_status("sent", "failed") == "failed"


def test_retry_backoff_doubles_up_to_a_cap() -> None:
    assert [retry_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# -- error envelopes and serialisation -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        (0, 401),
        (1, 400),
        (2, 503),
        (10, 403),
        (100, 400),
        (190, 401),
        (200, 403),
        (130429, 400),
        (131000, 500),
        (131047, 400),
        (131056, 400),
        (131057, 500),
        (132000, 400),
        (132001, 404),
        (132015, 400),
        (132016, 400),
    ],
)
def test_http_statuses_follow_metas_error_table(code: int, http_status: int) -> None:
    assert ERROR_TABLE[code].http_status == http_status


def test_graph_error_envelope_shape() -> None:
    body = graph_error_body(
        130429, "Cloud API message throughput has been reached.", "Az8or2yhqkZfEZ"
    )
    assert body == {
        "error": {
            "message": "(#130429) Rate limit hit",
            "type": "OAuthException",
            "code": 130429,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": "Cloud API message throughput has been reached.",
            },
            "fbtrace_id": "Az8or2yhqkZfEZ",
        }
    }


def test_webhook_error_object_repeats_title_as_message() -> None:
    error = webhook_error_object(131049)
    assert error["title"] == error["message"]
    assert error["code"] == 131049 and "details" in error["error_data"] and error["href"]
    assert "type" not in error and "fbtrace_id" not in error


def test_meta_like_serialisation_escapes_unicode_slash_and_at_and_signature_covers_raw_bytes() -> (
    None
):
    payload = {"text": "café ☕ مرحبا", "url": "https://x/y", "email": "a@b.c"}
    body = serialize_like_meta(payload)
    assert b"caf\\u00e9" in body and b"https:\\/\\/x\\/y" in body and b"a\\u0040b.c" in body
    assert body.isascii()
    assert json.loads(body) == payload
    secret = b"s3cret"
    header = signature_header(body, secret)
    assert header == "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert signature_header(reserialised, secret) != header
