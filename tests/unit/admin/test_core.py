"""The admin CLI's pure decisions: API key format and lookup, documents, template shapes."""

from __future__ import annotations

import hashlib
import secrets

import orjson
import pytest

from services.admin import core
from shared.errors import ServiceError

NOW = 1_764_000_000_000


def test_api_keys_are_hw_live_and_32_url_safe_characters() -> None:
    key = core.api_key_from_random(secrets.token_urlsafe(24))
    assert key.startswith("hw_live_") and len(key) == 40
    assert core.is_api_key(key)
    with pytest.raises(ValueError):
        core.api_key_from_random("short")
    with pytest.raises(ValueError):
        core.api_key_from_random("!" * 32)


def test_only_the_sha256_and_a_short_prefix_of_a_key_are_stored() -> None:
    key = "hw_live_" + "Ab1_" * 8
    doc = core.api_key_doc(key, account_id="acc", name="ci", now_ms=NOW)
    assert doc["_id"] == hashlib.sha256(key.encode()).hexdigest()
    assert doc["prefix"] == "hw_live_Ab1_Ab1_" and key not in str(doc.values())
    assert doc["revoked_at"] is None


def _keys() -> list[dict[str, object]]:
    keys = ["hw_live_" + c * 32 for c in "abc"]
    docs = [core.api_key_doc(k, account_id="acc", name="", now_ms=NOW) for k in keys]
    docs.append(
        core.api_key_doc("hw_live_aaaaaaaaZ" + "z" * 23, account_id="acc", name="", now_ms=NOW)
    )
    return docs


def test_a_key_is_found_by_full_key_id_id_prefix_or_visible_prefix() -> None:
    docs = _keys()
    target = docs[1]
    assert core.find_key(docs, "hw_live_" + "b" * 32) is target
    assert core.find_key(docs, str(target["_id"])) is target
    assert core.find_key(docs, str(target["_id"])[:10]) is target
    assert core.find_key(docs, "hw_live_bbbb") is target


@pytest.mark.parametrize(
    ("ident", "code"),
    [
        ("hw_live_aaaaaaaa", "ambiguous_api_key"),
        ("hw_live_zzzz", "unknown_api_key"),
        ("abc", "invalid_key_reference"),
        ("00000000", "unknown_api_key"),
    ],
)
def test_unclear_key_references_are_refused(ident: str, code: str) -> None:
    with pytest.raises(ServiceError) as info:
        core.find_key(_keys(), ident)
    assert info.value.code == code


def test_an_account_is_active_with_a_normalised_phone() -> None:
    doc = core.account_doc(
        account_id="acc_1",
        name=" Demo ",
        email="a@b.co",
        phone="+971 50 123 4567",
        business_name="Demo LLC",
        fb_business_manager_id="123456789012",
        low_balance_threshold=5,
        now_ms=NOW,
    )
    assert doc["status"] == "active" and doc["phone"] == "+971501234567"
    assert doc["name"] == "Demo" and doc["low_balance_threshold"] == 5
    assert doc["customer_service_window_check"] is True


def test_a_switch_is_on_or_off() -> None:
    assert core.on_off("on") is True and core.on_off(" OFF ") is False
    with pytest.raises(ServiceError):
        core.on_off("maybe")


@pytest.mark.parametrize(
    "overrides",
    [
        {"email": "not-an-email"},
        {"phone": "0501234567"},
        {"fb_business_manager_id": "abc"},
        {"low_balance_threshold": -1},
        {"name": " "},
    ],
)
def test_invalid_account_fields_are_refused(overrides: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "account_id": "acc_1",
        "name": "Demo",
        "email": "a@b.co",
        "phone": "+971501234567",
        "business_name": "Demo LLC",
        "fb_business_manager_id": "123456789012",
        "low_balance_threshold": 0,
        "now_ms": NOW,
        **overrides,
    }
    with pytest.raises(ServiceError):
        core.account_doc(**fields)  # type: ignore[arg-type]


def test_registering_someone_elses_waba_or_number_is_refused() -> None:
    core.check_owner(None, "acc", "x")
    core.check_owner({"account_id": "acc"}, "acc", "x")
    with pytest.raises(ServiceError) as info:
        core.check_owner({"account_id": "other"}, "acc", "x")
    assert info.value.code == "already_registered"


def test_a_phone_number_document_never_shows_its_token() -> None:
    doc = core.phone_number_doc(
        phone_number_id="109731225428301",
        account_id="acc",
        waba={"_id": "102290129340398", "portfolio_id": "880011"},
        display_phone_number="+15550001001",
        encrypted_token="gAAA",
        throughput_mps=80,
        messaging_limit="TIER_2K",
        now_ms=NOW,
    )
    assert doc["access_token_encrypted"] == "gAAA" and doc["display_phone_number"] == "15550001001"
    assert doc["portfolio_id"] == "880011"
    assert "access_token_encrypted" not in core.phone_number_view(doc)


def test_a_templates_shape_is_derived_from_metas_components() -> None:
    item = {
        "id": "1689556908129801",
        "name": "order_confirmation",
        "language": "en_US",
        "category": "UTILITY",
        "status": "APPROVED",
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is confirmed, {{1}}."},
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "QUICK_REPLY", "text": "Stop"},
                    {"type": "URL", "text": "Track", "url": "https://x/track/{{1}}"},
                ],
            },
        ],
    }
    doc = core.template_doc("102290129340398", item, NOW)
    assert doc["_id"] == "102290129340398:order_confirmation:en_US"
    assert doc["header_format"] == "IMAGE" and doc["body_params"] == ["1", "2"]
    assert doc["body_param_count"] == 2 and doc["button_params"] == [{"index": 1, "count": 1}]
    assert doc["category"] == "UTILITY" and doc["template_id"] == "1689556908129801"
    assert orjson.loads(doc["components_json"]) == item["components"]


def test_named_and_text_header_templates() -> None:
    item = {
        "name": "r",
        "language": "en_US",
        "category": "MARKETING",
        "status": "PAUSED",
        "parameter_format": "NAMED",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "For {{who}}"},
            {"type": "BODY", "text": "Table for {{guests}} on {{day}}."},
        ],
    }
    doc = core.template_doc("1", item, NOW)
    assert doc["parameter_format"] == "NAMED" and doc["header_params"] == ["who"]
    assert doc["body_params"] == ["guests", "day"] and doc["status"] == "PAUSED"


def test_example_components_satisfy_the_shape() -> None:
    doc = core.template_doc(
        "1",
        {
            "name": "o",
            "language": "en_US",
            "category": "UTILITY",
            "status": "APPROVED",
            "components": [
                {"type": "HEADER", "format": "IMAGE"},
                {"type": "BODY", "text": "{{1}} {{2}}"},
                {"type": "BUTTONS", "buttons": [{"type": "URL", "url": "x/{{1}}"}]},
            ],
        },
        NOW,
    )
    components = core.example_components(doc)
    assert [c["type"] for c in components] == ["header", "body", "button"]
    assert len(components[1]["parameters"]) == 2


def test_ingest_accepts_the_example_parameters_for_every_shape_the_sync_writes() -> None:
    """The template documents the admin writes are the ones ingest checks sends against."""
    from services.ingest import core as ingest_core

    items = [
        {
            "name": "a",
            "components": [
                {"type": "HEADER", "format": "VIDEO"},
                {"type": "BODY", "text": "{{1}}"},
            ],
        },
        {
            "name": "b",
            "parameter_format": "NAMED",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "{{x}}"},
                {"type": "BODY", "text": "{{y}} {{z}}"},
            ],
        },
        {
            "name": "c",
            "components": [
                {"type": "BODY", "text": "{{1}} is your code."},
                {"type": "BUTTONS", "buttons": [{"type": "OTP"}]},
            ],
        },
        {"name": "d", "components": [{"type": "BODY", "text": "No parameters."}]},
    ]
    for item in items:
        doc = core.template_doc(
            "1", {"language": "en_US", "category": "UTILITY", "status": "APPROVED", **item}, NOW
        )
        request = ingest_core.parse_send_request(
            {
                "from": "1",
                "to": "+447912345678",
                "type": "template",
                "template": {
                    "name": doc["name"],
                    "language": {"code": "en_US"},
                    "components": core.example_components(doc),
                },
            }
        )
        assert ingest_core.check_template(doc, request) == "utility"


def test_alert_emails_are_a_checked_list_without_duplicates() -> None:
    assert core.alert_emails(" a@x.example, B@y.example ,a@X.example,") == [
        "a@x.example",
        "B@y.example",
    ]
    assert core.alert_emails("") == []
    for bad in ("a@x.example,nope", ",".join(f"u{n}@x.example" for n in range(11))):
        with pytest.raises(ServiceError) as raised:
            core.alert_emails(bad)
        assert raised.value.details == {"field": "alert_emails"}


def test_a_new_account_has_no_alert_emails_yet() -> None:
    doc = core.account_doc(
        account_id="acc_1",
        name="Demo",
        email="a@b.co",
        phone="+971501234567",
        business_name="Demo LLC",
        fb_business_manager_id="123456789012",
        low_balance_threshold=5,
        now_ms=NOW,
    )
    assert doc["alert_emails"] == []
