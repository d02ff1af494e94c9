"""Webhook payloads in Meta's shapes, Meta-like serialisation, and the signature. Pure."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from tools.metasim.core import PlannedStatus, Pricing
from tools.metasim.errors import webhook_error_object
from tools.metasim.state import PhoneNumber, SendRecord, Template


def status_item(
    record: SendRecord,
    planned: PlannedStatus,
    event_wall: float,
    pricing: Pricing,
    with_conversation: bool,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": record.wamid,
        "status": planned.status,
        "timestamp": str(int(event_wall)),
        "recipient_id": record.recipient,
    }
    # Inside a free-entry-point window every version carries `conversation` (one id per
    # window); otherwise only below v24.0, with a per-message id.
    if planned.status != "failed" and (record.conversation is not None or with_conversation):
        if record.conversation is not None:
            conversation_id, expires = record.conversation
        else:
            conversation_id = hashlib.md5(record.wamid.encode()).hexdigest()
            expires = event_wall + 86_400
        conversation: dict[str, Any] = {"id": conversation_id}
        if planned.status == "sent":
            conversation["expiration_timestamp"] = str(int(expires))
        conversation["origin"] = {"type": pricing.category}
        item["conversation"] = conversation
    if planned.with_pricing:
        item["pricing"] = pricing.as_webhook()
    if record.biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = record.biz_opaque_callback_data
    if planned.error_code is not None:
        item["errors"] = [webhook_error_object(planned.error_code, planned.error_details)]
    return item


def messages_value_head(number: PhoneNumber) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "metadata": number.metadata}


def inbound_parts(
    wa_id: str, name: str, wamid: str, at_wall: float, message: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact, message) for a `messages` change; `message` holds type + type-specific fields."""
    contact = {"profile": {"name": name}, "wa_id": wa_id}
    return contact, {"from": wa_id, "id": wamid, "timestamp": str(int(at_wall)), **message}


def webhook_language(language: str) -> str:
    """Meta's template webhooks spell the language with a hyphen (en-US), unlike the en_US used
    to send; reproduced so receivers normalise it."""
    return language.replace("_", "-")


# Pass as `reason` to leave the key out (Meta omits it on some events).
OMIT_REASON = object()


def template_status_value(
    template: Template,
    event: str,
    reason: object = "NONE",
    other_info: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`reason` may be JSON null (scheduled for deletion) or `_OMIT`ted altogether."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": int(template.id),
        "message_template_name": template.name,
        "message_template_language": webhook_language(template.language),
    }
    if reason is not OMIT_REASON:
        value["reason"] = reason
    value["message_template_category"] = template.category
    if other_info:
        value["other_info"] = other_info
    value.update(extra or {})
    return value


def template_quality_value(template: Template, previous: str, new: str) -> dict[str, Any]:
    return {
        "previous_quality_score": previous,
        "new_quality_score": new,
        "message_template_id": int(template.id),
        "message_template_name": template.name,
        "message_template_language": webhook_language(template.language),
    }


def template_category_value(
    template: Template, previous: str, new: str, impending_at: float | None
) -> dict[str, Any]:
    """Impending (24 h notice: `correct_category`, `new_category` = still the current one,
    `category_update_timestamp`) or completed (`previous_category`, `new_category`)."""
    value: dict[str, Any] = {
        "message_template_id": int(template.id),
        "message_template_name": template.name,
        "message_template_language": webhook_language(template.language),
    }
    if impending_at is not None:
        value["correct_category"] = new
        value["new_category"] = previous
        value["category_update_timestamp"] = int(impending_at)
    else:
        value["previous_category"] = previous
        value["new_category"] = new
    return value


def phone_number_quality_value(
    number: PhoneNumber, event: str, current: str, old: str | None
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "display_phone_number": number.display_phone_number,
        "event": event,
        "current_limit": current,
    }
    if old is not None:
        value["old_limit"] = old
    value["max_daily_conversations_per_business"] = current
    return value


def phone_number_name_value(
    number: PhoneNumber, decision: str, requested: str, rejection_reason: str | None
) -> dict[str, Any]:
    return {
        "display_phone_number": number.display_phone_number,
        "decision": decision,
        "requested_verified_name": requested,
        "rejection_reason": rejection_reason,
    }


def user_preferences_value(
    number: PhoneNumber, wa_id: str, name: str | None, value: str, detail: str, at_wall: float
) -> dict[str, Any]:
    contact: dict[str, Any] = {"wa_id": wa_id}
    if name:
        contact = {"profile": {"name": name}, "wa_id": wa_id}
    return {
        "messaging_product": "whatsapp",
        "metadata": number.metadata,
        "contacts": [contact],
        "user_preferences": [
            {
                "wa_id": wa_id,
                "detail": detail,
                "category": "marketing_messages",
                "value": value,
                "timestamp": int(at_wall),
            }
        ],
    }


def message_echoes_value(
    number: PhoneNumber, to: str, wamid: str, at_wall: float, message: dict[str, Any]
) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": number.metadata,
        "message_echoes": [
            {
                "from": number.display_phone_number,
                "to": to,
                "id": wamid,
                "timestamp": str(int(at_wall)),
                **message,
            }
        ],
    }


def throughput_upgrade_value(number: PhoneNumber, tier: str) -> dict[str, Any]:
    return {
        "display_phone_number": number.display_phone_number,
        "event": "THROUGHPUT_UPGRADE",
        "current_limit": tier,
    }


# Fields whose value carries `metadata` (a phone number's): their entries have no `time`.
METADATA_FIELDS = frozenset(
    {"messages", "user_preferences", "smb_message_echoes", "smb_app_state_sync", "history"}
)


def envelope(entries: Iterable[tuple[str, list[dict[str, Any]]]], wall: float) -> dict[str, Any]:
    """Meta's outer shape; `time` appears on entries carrying account-level fields."""
    out = []
    for waba_id, changes in entries:
        entry: dict[str, Any] = {"id": waba_id}
        if any(change["field"] not in METADATA_FIELDS for change in changes):
            entry["time"] = int(wall)
        entry["changes"] = changes
        out.append(entry)
    return {"object": "whatsapp_business_account", "entry": out}


def serialize_like_meta(payload: Any, escape: bool = True) -> bytes:
    """Meta's encoder escapes non-ASCII as \\uXXXX, and (as seen in the wild) '/' and '@' too, so
    a receiver that re-serialises the parsed JSON computes a different signature."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    if escape:
        # Outside strings JSON never contains '/' or '@', so a textual replace is safe.
        text = text.replace("/", "\\/").replace("@", "\\u0040")
    return text.encode("ascii")


def signature_header(body: bytes, app_secret: bytes) -> str:
    return "sha256=" + hmac.new(app_secret, body, hashlib.sha256).hexdigest()
