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
    # Below v24.0 every priced status also carries a per-message `conversation`.
    if with_conversation and planned.status != "failed":
        conversation: dict[str, Any] = {"id": hashlib.md5(record.wamid.encode()).hexdigest()}
        if planned.status == "sent":
            conversation["expiration_timestamp"] = str(int(event_wall) + 86_400)
        conversation["origin"] = {"type": pricing.category}
        item["conversation"] = conversation
    if planned.with_pricing:
        item["pricing"] = pricing.as_webhook()
    if record.biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = record.biz_opaque_callback_data
    if planned.error_code is not None:
        item["errors"] = [webhook_error_object(planned.error_code)]
    return item


def messages_value_head(number: PhoneNumber) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "metadata": number.metadata}


def inbound_parts(
    wa_id: str, name: str, wamid: str, at_wall: float, message: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact, message) for a `messages` change; `message` holds type + type-specific fields."""
    contact = {"profile": {"name": name}, "wa_id": wa_id}
    return contact, {"from": wa_id, "id": wamid, "timestamp": str(int(at_wall)), **message}


def template_status_value(
    template: Template, event: str, reason: str | None, other_info: dict[str, str] | None = None
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": int(template.id),
        "message_template_name": template.name,
        # Meta's documented example spells the language with a hyphen (en-US) here, unlike the
        # en_US used to send; reproduced so receivers normalise it.
        "message_template_language": template.language.replace("_", "-"),
        "reason": reason,
        "message_template_category": template.category,
    }
    if other_info:
        value["other_info"] = other_info
    return value


def throughput_upgrade_value(number: PhoneNumber, tier: str) -> dict[str, Any]:
    return {
        "display_phone_number": number.display_phone_number,
        "event": "THROUGHPUT_UPGRADE",
        "current_limit": tier,
    }


def envelope(entries: Iterable[tuple[str, list[dict[str, Any]]]], wall: float) -> dict[str, Any]:
    """Meta's outer shape; `time` appears on entries carrying non-`messages` fields."""
    out = []
    for waba_id, changes in entries:
        entry: dict[str, Any] = {"id": waba_id}
        if any(change["field"] != "messages" for change in changes):
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
