"""ingest's pure core: validation, canonical hashing, idempotency decisions, template parameter
checks, Meta-shape translation, cursors."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest import core, passthrough
from shared.errors import RECORD_WRITTEN_UNKNOWN, DependencyUnavailable, ServiceError
from tests.unit.ingest.fakes import WABA_A, template, template_body, text_body

NOW = 1_764_000_000_000


def _code(call: Any, *args: Any) -> tuple[str, dict[str, Any]]:
    with pytest.raises(ServiceError) as info:
        call(*args)
    return info.value.code, info.value.details


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ("just a string", "invalid_request", None),
        (text_body(extra=1), "unknown_field", "extra"),
        (text_body(text={"body": "x", "html": True}), "unknown_field", "text.html"),
        (
            template_body(template={"name": "a", "language": {"code": "en", "x": 1}}),
            "unknown_field",
            "template.language.x",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [{"type": "body", "colour": 1}],
                }
            ),
            "unknown_field",
            "template.components[0].colour",
        ),
        ({k: v for k, v in text_body().items() if k != "from"}, "invalid_field", "from"),
        (text_body(**{"from": 123}), "invalid_field", "from"),
        ({k: v for k, v in text_body().items() if k != "to"}, "invalid_field", "to"),
        ({k: v for k, v in text_body().items() if k != "type"}, "invalid_field", "type"),
        (text_body(type="image"), "invalid_field", "text"),
        (text_body(type="imagery"), "invalid_field", "type"),
        (text_body(type="template"), "invalid_field", "text"),
        ({k: v for k, v in text_body().items() if k != "text"}, "invalid_field", "text"),
        (text_body(text={"body": ""}), "invalid_field", "text.body"),
        (text_body(text={"body": "x" * 4097}), "invalid_field", "text.body"),
        (text_body(text={"body": "x", "preview_url": "yes"}), "invalid_field", "text.preview_url"),
        (text_body(client_reference="x" * 257), "invalid_field", "client_reference"),
        (text_body(client_reference=5), "invalid_field", "client_reference"),
        (text_body(validity_seconds=29), "invalid_field", "validity_seconds"),
        (text_body(validity_seconds=30 * 86400 + 1), "invalid_field", "validity_seconds"),
        (text_body(validity_seconds=True), "invalid_field", "validity_seconds"),
        (text_body(validity_seconds=60.5), "invalid_field", "validity_seconds"),
        (template_body(template={"language": {"code": "en_US"}}), "invalid_field", "template.name"),
        (
            template_body(template={"name": "a", "language": "en_US"}),
            "invalid_field",
            "template.language",
        ),
        (
            template_body(template={"name": "a", "language": {"code": "en"}, "components": {}}),
            "invalid_field",
            "template.components",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [{"type": "footer"}],
                }
            ),
            "invalid_field",
            "template.components[0].type",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [{"type": "button", "index": 0}],
                }
            ),
            "invalid_field",
            "template.components[0].sub_type",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [{"type": "button", "sub_type": "url", "index": "first"}],
                }
            ),
            "invalid_field",
            "template.components[0].index",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [{"type": "body", "parameters": ["Ana"]}],
                }
            ),
            "invalid_field",
            "template.components[0].parameters[0]",
        ),
        (text_body(to=447912345678), "invalid_phone_number", "to"),
        (text_body(to=["+447912345678"]), "invalid_phone_number", "to"),
        (text_body(to="+44 12"), "invalid_phone_number", "to"),
    ],
)
def test_each_invalid_request_is_refused_with_its_code_and_field(
    body: Any, code: str, field: str | None
) -> None:
    got_code, details = _code(core.parse_send_request, body)
    assert got_code == code
    assert details.get("field") == field


def test_a_valid_request_is_normalised() -> None:
    request = core.parse_send_request(text_body(to="+44 7912 345678"))
    assert request.recipient == "+447912345678" and request.recipient_region == "GB"
    assert request.recipient_input == "+44 7912 345678"
    assert request.validity_seconds == core.DEFAULT_VALIDITY_SECONDS
    assert request.client_reference is None


def test_validity_bounds_are_inclusive() -> None:
    assert core.parse_send_request(text_body(validity_seconds=30)).validity_seconds == 30
    assert (
        core.parse_send_request(text_body(validity_seconds=2_592_000)).validity_seconds == 2_592_000
    )


# --- canonical hashing ----------------------------------------------------------------------


def test_the_body_hash_ignores_key_order_spelling_of_to_and_explicit_defaults() -> None:
    a = core.parse_send_request(
        {
            "to": "+447912345678",
            "type": "text",
            "from": "1",
            "text": {"preview_url": False, "body": "hi"},
        }
    )
    b = core.parse_send_request(
        {
            "from": "1",
            "text": {"body": "hi", "preview_url": False},
            "type": "text",
            "to": "+44 7912 345678",
            "validity_seconds": 86400,
        }
    )
    assert core.request_hash(a) == core.request_hash(b)


def test_the_body_hash_changes_with_any_content() -> None:
    base = core.request_hash(core.parse_send_request(text_body()))
    for changed in (
        text_body(text={"body": "other"}),
        text_body(client_reference="r"),
        text_body(validity_seconds=60),
        text_body(to="+16502530000"),
    ):
        assert core.request_hash(core.parse_send_request(changed)) != base


# --- idempotency ----------------------------------------------------------------------------


def _doc(created_ms: int, body_hash: str = "h") -> dict[str, Any]:
    return {
        "_id": f"msg_{created_ms}",
        "created_at": core.from_ms(created_ms),
        "body_hash": body_hash,
    }


def test_no_earlier_message_means_a_new_one() -> None:
    assert core.message_to_replay([], "h", NOW) is None


def test_an_earlier_message_with_the_same_body_within_24h_is_replayed() -> None:
    doc = _doc(NOW - 23 * 3600 * 1000)
    assert core.message_to_replay([doc], "h", NOW) is doc


def test_an_earlier_message_with_another_body_within_24h_is_a_conflict() -> None:
    code, details = _code(core.message_to_replay, [_doc(NOW - 1000, "other")], "h", NOW)
    assert code == "idempotency_key_reused" and details["message_id"] == f"msg_{NOW - 1000}"


def test_a_message_older_than_24h_does_not_hold_the_key() -> None:
    assert core.message_to_replay([_doc(NOW - 24 * 3600 * 1000, "other")], "h", NOW) is None


def test_when_a_key_was_reused_after_24h_the_newest_message_answers() -> None:
    old, new = _doc(NOW - 30 * 3600 * 1000, "other"), _doc(NOW - 1000)
    assert core.message_to_replay([old, new], "h", NOW) is new


def test_keyed_message_ids_are_stable_within_a_bucket_and_change_across_buckets() -> None:
    bucket_start = core.idempotency_bucket(NOW) * core.IDEMPOTENCY_WINDOW_MS
    same = core.keyed_message_id("acc", "k", bucket_start)
    assert core.keyed_message_id("acc", "k", bucket_start + 3600_000) == same
    assert core.keyed_message_id("acc", "k", bucket_start - 1) != same
    assert core.keyed_message_id("acc2", "k", bucket_start) != same
    assert same.startswith("msg_") and len(same) == 4 + 26


def test_a_key_is_looked_up_in_this_and_the_previous_bucket_of_its_account() -> None:
    bucket = core.idempotency_bucket(NOW)
    assert core.idempotency_record_ids("acc", "k", NOW) == [
        f"acc:key:{bucket}:k",
        f"acc:key:{bucket - 1}:k",
    ]
    assert core.idempotency_record_ids("acc2", "k", NOW)[0] != f"acc:key:{bucket}:k"


def test_an_idempotency_record_gives_back_its_message() -> None:
    doc = _doc_of(text_body())
    record = core.idempotency_record(doc, "k", "h", NOW)
    assert record["_id"] == core.idempotency_record_ids("acc", "k", NOW)[0]
    assert record["body_hash"] == "h" and record["message_id"] == "msg_1"
    assert core.message_of_record(record) == {**doc, "body_hash": "h"}


# --- API keys -------------------------------------------------------------------------------


def test_api_keys_are_looked_up_by_sha256_hex() -> None:
    digest = core.hash_api_key("hw_live_" + "x" * 32)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != core.hash_api_key("hw_live_" + "y" * 32)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Token abc", "bearer"])
def test_a_missing_or_malformed_authorization_header_is_unauthorized(header: str | None) -> None:
    assert _code(core.api_key_from_header, header)[0] == "unauthorized"


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert core.api_key_from_header("bearer abc") == "abc"


# --- templates ------------------------------------------------------------------------------


def _request(components: list[dict[str, Any]], name: str = "t") -> core.SendRequest:
    return core.parse_send_request(
        template_body(
            template={"name": name, "language": {"code": "en_US"}, "components": components}
        )
    )


def _body(*values: str, names: tuple[str, ...] = ()) -> dict[str, Any]:
    params = [
        ({"type": "text", "text": v, "parameter_name": n} if names else {"type": "text", "text": v})
        for v, n in zip(values, names or values, strict=True)
    ]
    return {"type": "body", "parameters": params}


def test_a_template_with_the_right_parameters_passes_and_gives_its_category() -> None:
    t = template(WABA_A, "t", category="MARKETING", body_params=["1", "2"])
    assert core.check_template(t, _request([_body("a", "b")])) == "marketing"


def test_unknown_and_unapproved_templates_are_refused() -> None:
    assert _code(core.check_template, None, _request([]))[0] == "unknown_template"
    code, details = _code(
        core.check_template, template(WABA_A, "t", status="REJECTED"), _request([])
    )
    assert code == "template_not_approved" and details["status"] == "REJECTED"


@pytest.mark.parametrize(
    ("shape", "components"),
    [
        ({"body_params": ["1", "2"]}, [_body("a")]),
        ({"body_params": ["1"]}, [_body("a", "b")]),
        ({"body_params": []}, [_body("a")]),
        (
            {"body_params": ["n", "d"], "parameter_format": "NAMED"},
            [_body("4", "sat", names=("n", "x"))],
        ),
        ({"header_format": "IMAGE"}, []),
        (
            {"header_format": "IMAGE"},
            [{"type": "header", "parameters": [{"type": "video", "video": {"id": "1"}}]}],
        ),
        ({"header_format": "TEXT", "header_params": ["1"]}, []),
        ({"button_params": [{"index": 0, "count": 1}]}, []),
        (
            {"button_params": [{"index": 0, "count": 1}]},
            [
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "1",
                    "parameters": [{"type": "text", "text": "x"}],
                }
            ],
        ),
    ],
)
def test_parameter_mismatches_are_refused(
    shape: dict[str, Any], components: list[dict[str, Any]]
) -> None:
    t = template(WABA_A, "t", **shape)
    assert _code(core.check_template, t, _request(components))[0] == "template_parameter_mismatch"


def test_media_headers_and_button_parameters_are_matched_by_type_and_index() -> None:
    t = template(
        WABA_A,
        "t",
        header_format="IMAGE",
        body_params=["1"],
        button_params=[{"index": 1, "count": 1}],
    )
    components = [
        {"type": "header", "parameters": [{"type": "image", "image": {"id": "9"}}]},
        _body("a"),
        {
            "type": "button",
            "sub_type": "url",
            "index": 1,
            "parameters": [{"type": "text", "text": "x"}],
        },
    ]
    assert core.check_template(t, _request(components)) == "utility"


def test_named_parameters_may_come_in_any_order() -> None:
    t = template(WABA_A, "t", parameter_format="NAMED", body_params=["n", "d"])
    assert core.check_template(t, _request([_body("sat", "4", names=("d", "n"))])) == "utility"


# --- Meta's shape ---------------------------------------------------------------------------


def _meta(**overrides: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": "+16502530000",
        "type": "text",
        "text": {"body": "hi"},
        **overrides,
    }


def test_a_meta_request_becomes_the_same_request_as_the_v1_shape() -> None:
    meta = core.parse_meta_request(
        _meta(biz_opaque_callback_data="ref", context={"message_id": "wamid.X"}), "1", "US"
    )
    v1 = core.parse_send_request(
        {
            "from": "1",
            "to": "+16502530000",
            "type": "text",
            "text": {"body": "hi"},
            "biz_opaque_callback_data": "ref",
            "context": {"message_id": "wamid.X"},
        }
    )
    assert meta == v1
    assert core.request_hash(meta) == core.request_hash(v1)


def test_meta_requests_default_to_text_like_meta() -> None:
    body = _meta()
    del body["type"]
    assert core.parse_meta_request(body, "1", "US").message_type == "text"


def test_a_meta_number_without_plus_is_read_in_the_business_numbers_country() -> None:
    assert core.parse_meta_request(_meta(to="6502530000"), "1", "US").recipient == "+16502530000"
    assert core.parse_meta_request(_meta(to="16502530000"), "1", "US").recipient == "+16502530000"
    assert _code(core.parse_meta_request, _meta(to="12"), "1", "US")[0] == "invalid_phone_number"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"to": "+16502530000", "text": {"body": "x"}}, "invalid_field"),
        (_meta(messaging_product="sms"), "invalid_field"),
        (_meta(recipient_type="group"), "unsupported"),
        (_meta(recipient_type="broadcast"), "invalid_field"),
        (_meta(context={"message_id": "w", "quote": True}), "unknown_field"),
        (_meta(**{"from": "1"}), "unknown_field"),
    ],
)
def test_meta_requests_are_validated(body: dict[str, Any], code: str) -> None:
    assert _code(core.parse_meta_request, body, "1", "US")[0] == code


def test_the_meta_response_echoes_the_input_and_gives_the_wa_id() -> None:
    request = core.parse_meta_request(_meta(to="(650) 253-0000"), "1", "US")
    doc = _accepted(request)
    assert core.meta_accepted_response(doc) == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "(650) 253-0000", "wa_id": "16502530000"}],
        "messages": [{"id": "msg_1", "message_status": "accepted"}],
    }


def test_meta_error_bodies_use_metas_codes_and_lead_details_with_ours() -> None:
    body = core.meta_error_body(
        "template_not_approved", "is PAUSED", {"status": "PAUSED"}, 132001, "trace"
    )
    assert body == {
        "error": {
            "message": "(#132015) is PAUSED",
            "type": "OAuthException",
            "code": 132015,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": "template_not_approved: is PAUSED",
            },
            "fbtrace_id": "trace",
        }
    }


def test_the_business_region_comes_from_the_display_number() -> None:
    assert core.region_of_display_number("15550001001") == "US"
    assert core.region_of_display_number("447912345678") == "GB"
    assert core.region_of_display_number(None) is None


# --- the document and the event -------------------------------------------------------------


def test_the_event_is_rebuilt_from_the_document_exactly() -> None:
    request = core.parse_send_request(text_body(client_reference="r", validity_seconds=60))
    doc = _accepted(request)
    event = core.send_requested_event(doc)
    assert event == core.send_requested(
        message_id="msg_1",
        account_id="acc",
        request=request,
        phone={"waba_id": "w", "portfolio_id": "p"},
        category="service",
        now_ms=NOW,
    )
    assert event.accepted_at == NOW and event.expires_at == NOW + 60_000
    assert event.message_id == event.event_id == "msg_1"
    assert event.client_reference == "r" and event.portfolio_id == "p"


def test_times_render_as_iso_8601_utc_from_dates_or_milliseconds() -> None:
    assert core.iso(NOW) == "2025-11-24T16:00:00.000Z"
    assert core.iso(core.from_ms(NOW + 5)) == "2025-11-24T16:00:00.005Z"
    assert core.to_ms(core.from_ms(NOW + 5)) == NOW + 5


# --- listing --------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_garbage_is_refused() -> None:
    doc = {"_id": "msg_9", "created_at": core.from_ms(NOW)}
    assert core.decode_cursor(core.encode_cursor(doc)) == (core.from_ms(NOW), "msg_9")
    for garbage in ("abc", "W10", "WyJ4IiwgMV0"):
        assert _code(core.decode_cursor, garbage)[0] == "invalid_cursor"


def test_a_page_has_a_cursor_only_when_more_items_exist() -> None:
    docs = [{"_id": f"m{i}", "created_at": core.from_ms(NOW - i)} for i in range(3)]
    assert core.page(docs, 2)["next_cursor"] == core.encode_cursor(docs[1])
    assert core.page(docs[:2], 2)["next_cursor"] is None
    assert [m["id"] for m in core.page(docs, 2)["data"]] == ["m0", "m1"]


def test_list_query_times_accept_z_and_offsets() -> None:
    query = core.parse_list_query(
        {"since": "2025-11-24T16:00:00Z", "until": "2025-11-24T18:00:00 02:00"}
    )
    assert query.since == core.from_ms(NOW) and query.until == core.from_ms(NOW)
    assert query.limit == core.DEFAULT_PAGE_SIZE


def _flow_button(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "button",
        "sub_type": "flow",
        "index": 0,
        "parameters": [{"type": "action", "action": {"flow_token": "t", "flow_action_data": data}}],
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (text_body(text={"body": "a\x00b"}), "text.body"),
        (text_body(client_reference="a\x00"), "client_reference"),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [_flow_button({"k": [[1]]})],
                }
            ),
            "template.components[0].parameters[0].action.flow_action_data.k[0]",
        ),
        (
            template_body(
                template={
                    "name": "a",
                    "language": {"code": "en"},
                    "components": [_flow_button({"$where": "x"})],
                }
            ),
            "template.components[0].parameters[0].action.flow_action_data.$where",
        ),
        (text_body(biz_opaque_callback_data="a\x00"), "biz_opaque_callback_data"),
    ],
)
def test_content_the_database_cannot_hold_is_refused_up_front(body: Any, field: str) -> None:
    assert _code(core.parse_send_request, body) == ("invalid_field", {"field": field})


def test_new_message_ids_have_the_shared_ulid_layout() -> None:
    from shared.ids import _b32

    random_bytes = bytes(range(10))
    expected = "msg_" + _b32(NOW, 10) + _b32(int.from_bytes(random_bytes, "big"), 16)
    assert core.new_message_id(NOW, random_bytes) == expected
    assert core.new_message_id(NOW, b"\xff" * 10) > core.new_message_id(NOW - 1, b"\xff" * 10)


def test_content_is_stored_as_json_text_and_read_back_as_an_object() -> None:
    request = core.parse_send_request(text_body())
    doc = _accepted(request)
    assert isinstance(doc["content"], str)
    assert core.send_requested_event(doc).content == request.content
    assert core.message_view(doc)["content"] == request.content
    older = {**doc, "content": request.content}  # documents written before: an object
    assert core.send_requested_event(older).content == request.content
    assert core.message_view(older)["content"] == request.content
    assert "wamid" not in doc and "price" not in doc
    assert core.message_view(doc)["wamid"] is None and core.message_view(doc)["error"] is None


def test_the_document_keeps_the_clients_spelling_of_to_only_when_it_differs() -> None:
    def doc(to: str) -> dict[str, Any]:
        return _doc_of(text_body(to=to))

    assert "recipient_input" not in doc("+447912345678")
    spelled = doc("+44 7912 345678")
    assert spelled["recipient_input"] == "+44 7912 345678"
    assert core.meta_accepted_response(spelled)["contacts"][0]["input"] == "+44 7912 345678"
    assert (
        core.meta_accepted_response(doc("+447912345678"))["contacts"][0]["input"] == "+447912345678"
    )


def _accepted(request: core.SendRequest) -> dict[str, Any]:
    event = core.send_requested(
        message_id="msg_1",
        account_id="acc",
        request=request,
        phone={"waba_id": "w", "portfolio_id": "p"},
        category="service",
        now_ms=NOW,
    )
    return core.accepted_message(event, request)


def _doc_of(body: dict[str, Any]) -> dict[str, Any]:
    return _accepted(core.parse_send_request(body))


# Found by schemathesis (tests/e2e/test_openapi_fuzz.py): an empty JSON key gave a 500.
def test_an_empty_key_is_an_unknown_field_not_a_crash() -> None:
    assert _code(core.parse_send_request, {**text_body(), "": 1}) == (
        "unknown_field",
        {"field": ""},
    )
    assert _code(passthrough.parse_v1_mark_read, b'{"": 1}', "wamid.x") == (
        "unknown_field",
        {"field": ""},
    )


def test_an_unconfirmed_publish_is_a_503_that_names_the_message_and_keeps_the_details() -> None:
    cause = DependencyUnavailable(
        "kafka unavailable: late",
        details={"dependency": "kafka", "record_written": RECORD_WRITTEN_UNKNOWN},
    )
    error = core.publish_unconfirmed(cause, "msg_01ABC")
    assert (error.http_status, error.code) == (503, "dependency_unavailable")
    assert error.details == {
        "dependency": "kafka",
        "record_written": "unknown",
        "message_id": "msg_01ABC",
    }
    assert "may have been accepted" in error.message
    assert cause.details == {"dependency": "kafka", "record_written": "unknown"}  # not changed
