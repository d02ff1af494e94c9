"""Hypothesis strategies for Meta's webhooks: well-formed items of every field and type (from
Meta's documented shapes, reference meta-messages-and-webhooks.md §4-§6), then mutated the ways
real traffic and bugs do: keys dropped, wrong types, nulls, unknown fields, unicode, huge and
empty lists, whole items, changes or entries replaced, the body truncated.

Each generated `Case` knows which of its items were left well-formed (`expected_*`): those must
come out of the planner (and land in the database) whatever happened to their siblings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

WHATSAPP = "whatsapp_business_account"
NUMBER_IDS = ("106540352242922", "106540352242923")
WABA_ID = "102290129340398"

# --- scalars --------------------------------------------------------------------------------

digits = st.text(alphabet="0123456789", min_size=6, max_size=15)
seconds = st.integers(min_value=1_600_000_000, max_value=1_900_000_000)
timestamps = seconds.map(str)
# Meta's texts: any unicode, emoji and right-to-left included (surrogates cannot be sent as
# UTF-8 JSON, so they are excluded).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
words = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=16
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def wamids(draw: st.DrawFn) -> str:
    """Mostly distinct ids (hypothesis favours short, simple strings, which collide), some
    drawn from Meta's alphabet."""
    if draw(st.booleans()):
        return "wamid." + draw(
            st.text(
                alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=+/",
                min_size=4,
                max_size=24,
            )
        )
    return "wamid.HBgL" + draw(st.uuids()).hex


def chance(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws (hypothesis favours small integers, so
    `integers(0, n) == 0` would be true far more often)."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


def optional(
    d: dict[str, Any], key: str, strategy: st.SearchStrategy[Any], draw: st.DrawFn
) -> None:
    if draw(st.booleans()):
        d[key] = draw(strategy)


# --- well-formed items ------------------------------------------------------------------------

pricing = st.fixed_dictionaries(
    {},
    optional={
        "billable": st.booleans(),
        "pricing_model": st.sampled_from(["PMP", "CBP"]),
        "type": st.sampled_from(
            ["regular", "free_customer_service", "free_entry_point", "new_one"]
        ),
        "category": st.sampled_from(
            [
                "marketing",
                "utility",
                "authentication",
                "authentication-international",
                "service",
                "referral_conversion",
                "marketing_lite",
                "group_marketing",
            ]
        ),
    },
)
error_items = st.lists(
    st.fixed_dictionaries(
        {
            "code": st.sampled_from([131047, 131026, 131051, 130472, 131053, 2593109]),
            "title": texts,
        },
        optional={
            "message": texts,
            "href": texts,
            "error_data": st.fixed_dictionaries({"details": texts}),
        },
    ),
    max_size=2,
)


@st.composite
def status_items(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": draw(wamids()),
        "status": draw(
            st.sampled_from(["sent", "delivered", "read", "failed", "played", "deleted", "warning"])
        ),
        "timestamp": draw(timestamps),
        "recipient_id": draw(digits),
    }
    optional(item, "pricing", pricing, draw)
    optional(item, "errors", error_items, draw)
    optional(item, "biz_opaque_callback_data", st.one_of(texts, st.just("msg_01HZY")), draw)
    optional(
        item,
        "conversation",
        st.fixed_dictionaries(
            {"id": words},
            optional={
                "expiration_timestamp": timestamps,
                "origin": st.fixed_dictionaries({"type": words}),
            },
        ),
        draw,
    )
    if draw(st.booleans()):
        item.update(
            recipient_type="group",
            recipient_participant_id=draw(digits),
            recipient_participant_user_id="US." + draw(digits),
        )
    optional(item, "recipient_user_id", digits.map(lambda d: "US." + d), draw)
    return item


MEDIA = ("image", "video", "audio", "document", "sticker")


@st.composite
def type_objects(draw: st.DrawFn, message_type: str) -> dict[str, Any] | None:
    if message_type == "text":
        return {"body": draw(texts)}
    if message_type in MEDIA:
        obj = {"id": draw(digits), "mime_type": "image/jpeg", "sha256": draw(words)}
        optional(obj, "caption", texts, draw)
        optional(obj, "url", texts, draw)
        optional(obj, "voice" if message_type == "audio" else "animated", st.booleans(), draw)
        return obj
    if message_type == "location":
        return {
            "latitude": draw(st.floats(-90, 90)),
            "longitude": draw(st.floats(-180, 180)),
            **draw(st.fixed_dictionaries({}, optional={"name": texts, "address": texts})),
        }
    if message_type == "interactive":
        kind = draw(st.sampled_from(["button_reply", "list_reply", "nfm_reply"]))
        if kind == "nfm_reply":
            return {
                "type": kind,
                "nfm_reply": {
                    "name": "flow",
                    "body": "Sent",
                    "response_json": '{"flow_token": "t"}',
                },
            }
        return {"type": kind, kind: {"id": draw(words), "title": draw(texts)}}
    if message_type == "button":
        return {"payload": draw(texts), "text": draw(texts)}
    if message_type == "reaction":
        reaction: dict[str, Any] = {"message_id": draw(wamids())}
        optional(reaction, "emoji", st.sampled_from(["", "\U0001f44d", "\u2764\ufe0f"]), draw)
        return reaction
    if message_type == "order":
        return {
            "catalog_id": draw(digits),
            "text": draw(texts),
            "product_items": [
                {
                    "product_retailer_id": draw(words),
                    "quantity": 2,
                    "item_price": 7.99,
                    "currency": "USD",
                }
            ],
        }
    if message_type == "system":
        return {"body": draw(texts), "type": "user_changed_number", "wa_id": draw(digits)}
    if message_type == "unsupported":
        return {"type": draw(st.sampled_from(["edit", "poll", "view_once"]))}
    if message_type == "contacts":
        return None  # `contacts` is a list at the item's level
    return None  # request_welcome and types we never heard of carry no object


INBOUND_TYPES = (
    "text",
    *MEDIA,
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "request_welcome",
    "brand_new_type",
)


@st.composite
def inbound_items(draw: st.DrawFn) -> dict[str, Any]:
    message_type = draw(st.sampled_from(INBOUND_TYPES))
    item: dict[str, Any] = {
        "from": draw(digits),
        "id": draw(wamids()),
        "timestamp": draw(timestamps),
        "type": message_type,
    }
    if chance(draw, 10):  # BSUID era: no number, only the user's BSUID
        item["from"] = ""
        item["from_user_id"] = "US." + draw(digits)
    obj = draw(type_objects(message_type))
    if obj is not None:
        item[message_type] = obj
    if message_type == "contacts":
        item["contacts"] = [
            {
                "name": {"formatted_name": draw(texts)},
                "phones": [{"phone": draw(digits), "type": "CELL"}],
            }
        ]
    optional(
        item,
        "context",
        st.one_of(
            st.fixed_dictionaries({"from": digits, "id": wamids()}),
            st.just({"forwarded": True}),
            st.just({"frequently_forwarded": True}),
        ),
        draw,
    )
    optional(
        item,
        "referral",
        st.fixed_dictionaries(
            {
                "source_url": texts,
                "source_id": digits,
                "source_type": st.just("ad"),
                "headline": texts,
            },
            optional={"ctwa_clid": words},
        ),
        draw,
    )
    if message_type == "unsupported":
        item["errors"] = draw(error_items)
    return item


@st.composite
def echo_items(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "from": "15550783881",
        "to": draw(digits),
        "id": draw(wamids()),
        "timestamp": draw(timestamps),
        "type": "text",
        "text": {"body": draw(texts)},
    }


@st.composite
def preference_items(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "wa_id": draw(digits),
        "detail": draw(texts),
        "category": "marketing_messages",
        "value": draw(st.sampled_from(["stop", "resume", "signup"])),
        "timestamp": draw(seconds),
    }


template_identity = st.fixed_dictionaries(
    {
        "message_template_id": st.integers(1, 10**16),
        "message_template_name": words,
        "message_template_language": st.sampled_from(["en-US", "en_US", "pt_BR", "es"]),
    }
)


@st.composite
def template_values(draw: st.DrawFn, field_name: str) -> dict[str, Any]:
    value = draw(template_identity)
    if field_name == "message_template_status_update":
        value["event"] = draw(
            st.sampled_from(
                ["APPROVED", "REJECTED", "PAUSED", "DISABLED", "PENDING_DELETION", "SOMETHING_NEW"]
            )
        )
        optional(value, "reason", st.one_of(st.none(), st.sampled_from(["NONE", "SCAM"])), draw)
        optional(
            value, "message_template_category", st.sampled_from(["UTILITY", "MARKETING"]), draw
        )
        optional(
            value, "other_info", st.fixed_dictionaries({"title": words, "description": texts}), draw
        )
    elif field_name == "message_template_quality_update":
        value.update(
            previous_quality_score="GREEN",
            new_quality_score=draw(st.sampled_from(["GREEN", "YELLOW", "RED", "UNKNOWN"])),
        )
    elif field_name == "template_category_update":
        if draw(st.booleans()):
            value.update(previous_category="MARKETING", new_category="UTILITY")
        else:
            value.update(
                new_category="MARKETING",
                correct_category="UTILITY",
                category_update_timestamp=draw(seconds),
            )
    else:
        value.update(
            message_template_element=draw(texts),
            message_template_buttons=[
                {"message_template_button_type": "URL", "message_template_button_text": draw(texts)}
            ],
        )
    return value


@st.composite
def other_values(draw: st.DrawFn, field_name: str) -> dict[str, Any]:
    if field_name == "phone_number_quality_update":
        value: dict[str, Any] = {
            "display_phone_number": "15550783881",
            "event": draw(
                st.sampled_from(["THROUGHPUT_UPGRADE", "ONBOARDING", "FLAGGED", "UNFLAGGED"])
            ),
        }
        optional(
            value,
            "current_limit",
            st.sampled_from(["TIER_250", "TIER_2K", "TIER_10K", "TIER_UNLIMITED"]),
            draw,
        )
        optional(
            value,
            "max_daily_conversations_per_business",
            st.sampled_from(["TIER_2K", 2000, 100000, -1]),
            draw,
        )
        return value
    if field_name == "phone_number_name_update":
        return {
            "display_phone_number": "15550783881",
            "decision": draw(st.sampled_from(["APPROVED", "REJECTED", "DEFERRED"])),
            "requested_verified_name": draw(texts),
            "rejection_reason": None,
        }
    if field_name == "account_update":
        event = draw(
            st.sampled_from(
                [
                    "DISABLED_UPDATE",
                    "ACCOUNT_DELETED",
                    "PARTNER_ADDED",
                    "PARTNER_REMOVED",
                    "PARTNER_APP_UNINSTALLED",
                    "PARTNER_APP_INSTALLED",
                    "ACCOUNT_VIOLATION",
                    "VOLUME_BASED_PRICING_TIER_UPDATE",
                ]
            )
        )
        value = {"event": event}
        if event == "DISABLED_UPDATE":
            value["ban_info"] = {
                "waba_ban_state": draw(
                    st.sampled_from(["DISABLE", "REINSTATE", "SCHEDULE_FOR_DISABLE"])
                ),
                "waba_ban_date": "x",
            }
        if event.startswith("PARTNER"):
            value["waba_info"] = {"waba_id": draw(digits), "owner_business_id": draw(digits)}
        return value
    if field_name == "business_capability_update":
        return {
            "max_daily_conversation_per_phone": 2000,
            "max_daily_conversations_per_business": draw(st.sampled_from([2000, "TIER_10K", -1])),
        }
    if field_name == "account_review_update":
        return {"decision": draw(st.sampled_from(["APPROVED", "REJECTED"]))}
    if field_name == "account_alerts":
        return {
            "entity_type": "PHONE_NUMBER",
            "entity_id": draw(digits),
            "alert_info": {
                "alert_severity": "WARNING",
                "alert_status": "ACTIVE",
                "alert_type": draw(words),
                "alert_description": draw(texts),
            },
        }
    if field_name == "security":
        return {"display_phone_number": "15550783881", "event": "PIN_CHANGED"}
    # fields we only count (flows, history, calls, ...): any object
    return draw(st.dictionaries(words, any_json, max_size=4))


TEMPLATE_FIELDS = (
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
    "message_template_components_update",
)
OTHER_FIELDS = (
    "phone_number_quality_update",
    "phone_number_name_update",
    "account_update",
    "business_capability_update",
    "account_review_update",
    "account_alerts",
    "security",
    "flows",
    "history",
    "smb_app_state_sync",
    "calls",
    "partner_solutions",
    "brand_new_field",
)


# --- cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One generated webhook body and what must come out of it."""

    body: bytes
    envelope_broken: bool = False  # the body as a whole is not Meta's (a 400 is right)
    expected_statuses: set[tuple[str, str]] = field(default_factory=set)  # (wamid, status)
    expected_inbound: set[str] = field(default_factory=set)  # wamids, echoes included
    expected_other: int = 0  # template/number/account/fact changes left whole


def _mutate_object(draw: st.DrawFn, obj: dict[str, Any]) -> Any:
    """One of the ways an item goes wrong (some leave it readable: then it is just not
    counted on)."""
    how = draw(
        st.sampled_from(["drop", "wrong_type", "null", "unknown", "replace", "huge", "unicode_key"])
    )
    obj = dict(obj)
    if how == "replace" or not obj:
        return draw(any_json)
    key = draw(st.sampled_from(sorted(obj)))
    if how == "drop":
        del obj[key]
    elif how == "wrong_type":
        obj[key] = draw(
            st.one_of(
                st.integers(min_value=-(2**80), max_value=2**80),
                st.lists(json_scalars, max_size=3),
                st.booleans(),
                st.floats(allow_nan=False, allow_infinity=False),
            )
        )
    elif how == "null":
        obj[key] = None
    elif how == "unknown":
        obj[draw(texts)] = draw(any_json)
    elif how == "huge":
        obj[key] = "x" * draw(st.integers(1000, 20_000))
    else:
        obj[draw(texts) + "\u202e\u0000"] = draw(texts)
    return obj


@st.composite
def item_lists(
    draw: st.DrawFn, strategy: st.SearchStrategy[dict[str, Any]], max_items: int
) -> tuple[list[Any], list[dict[str, Any]]]:
    """(the list as sent, the items of it left well-formed)."""
    items = draw(st.lists(strategy, max_size=max_items))
    sent: list[Any] = []
    kept: list[dict[str, Any]] = []
    for item in items:
        if chance(draw, 4):
            sent.append(_mutate_object(draw, item))
        else:
            sent.append(item)
            kept.append(item)
    return sent, kept


@dataclass
class _Marks:
    statuses: set[tuple[str, str]] = field(default_factory=set)
    inbound: set[str] = field(default_factory=set)
    other: int = 0


@st.composite
def cases(draw: st.DrawFn, max_items: int = 4, max_changes: int = 3, max_entries: int = 2) -> Case:
    case = Case(body=b"")
    entries: list[Any] = []
    for _ in range(draw(st.integers(0, max_entries))):
        changes: list[Any] = []
        marks: list[_Marks] = []
        for _ in range(draw(st.integers(0, max_changes))):
            change, mark = draw(_changes(max_items))
            changes.append(change)
            marks.append(mark)
        entry: dict[str, Any] = {"id": WABA_ID, "changes": changes}
        optional(entry, "time", seconds, draw)
        if chance(draw, 16):  # a whole entry goes wrong: its items with it
            entries.append(_mutate_object(draw, entry))
            continue
        entries.append(entry)
        for mark in marks:
            case.expected_statuses |= mark.statuses
            case.expected_inbound |= mark.inbound
            case.expected_other += mark.other
    payload: dict[str, Any] = {"object": WHATSAPP, "entry": entries}
    optional(payload, "brand_new_top_level", any_json, draw)
    body = json.dumps(payload, ensure_ascii=draw(st.booleans())).encode()
    envelope = draw(
        st.sampled_from(["whole"] * 17 + ["truncated", "other_object", "not_an_object"])
    )
    if envelope == "truncated":  # cut on the way
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif envelope == "other_object":
        body = json.dumps({**payload, "object": draw(texts)}).encode()
    elif envelope == "not_an_object":
        body = json.dumps(draw(st.one_of(json_scalars, st.lists(json_scalars)))).encode()
    if envelope != "whole":
        case.envelope_broken = True
        case.expected_statuses, case.expected_inbound, case.expected_other = set(), set(), 0
    case.body = body
    return case


@st.composite
def _changes(draw: st.DrawFn, max_items: int) -> tuple[Any, _Marks]:
    """One change, and what of it must come out."""
    kind = draw(
        st.sampled_from(
            [
                "messages",
                "messages",
                "messages",
                "smb_message_echoes",
                "user_preferences",
                "template",
                "other",
            ]
        )
    )
    marks = _Marks()
    if kind in ("messages", "smb_message_echoes", "user_preferences"):
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": "15550783881",
                "phone_number_id": draw(st.sampled_from(NUMBER_IDS)),
            },
        }
        if kind == "messages":
            statuses, kept_statuses = draw(item_lists(status_items(), max_items))
            messages, kept_messages = draw(item_lists(inbound_items(), max_items))
            value.update(statuses=statuses, messages=messages)
            if draw(st.booleans()):
                value["contacts"] = [{"profile": {"name": draw(texts)}, "wa_id": draw(digits)}]
            if chance(draw, 6):
                value["errors"] = draw(error_items)
            if chance(draw, 20):  # a huge list
                value["statuses"] = statuses * 50
            marks.statuses = {(s["id"], s["status"]) for s in kept_statuses}
            marks.inbound = {m["id"] for m in kept_messages}
        elif kind == "smb_message_echoes":
            echoes, kept = draw(item_lists(echo_items(), max_items))
            value["message_echoes"] = echoes
            marks.inbound = {m["id"] for m in kept}
        else:
            preferences, _ = draw(item_lists(preference_items(), max_items))
            value["user_preferences"] = preferences
        change: dict[str, Any] = {"field": kind, "value": value}
    elif kind == "template":
        field_name = draw(st.sampled_from(TEMPLATE_FIELDS))
        change = {"field": field_name, "value": draw(template_values(field_name))}
        marks.other = 1
    else:
        field_name = draw(st.sampled_from(OTHER_FIELDS))
        change = {"field": field_name, "value": draw(other_values(field_name))}
        marks.other = 1 if field_name in ACTED_ON_FIELDS else 0
    if chance(draw, 10):  # the change itself goes wrong
        broken = draw(
            st.sampled_from(
                [
                    {"field": change["field"], "value": draw(any_json)},
                    {"field": draw(st.one_of(st.none(), st.integers())), "value": change["value"]},
                    {"value": change["value"]},
                    draw(any_json),
                ]
            )
        )
        return broken, _Marks()
    return change, marks


ACTED_ON_FIELDS = frozenset(
    {
        "phone_number_quality_update",
        "phone_number_name_update",
        "account_update",
        "business_capability_update",
        "account_review_update",
        "account_alerts",
        "security",
    }
)
