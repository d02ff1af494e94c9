# ruff: noqa: E501 (the payloads are quoted verbatim)
"""Meta's webhook examples from the reference (meta-cloud-api.md §4.8), as bytes, and a signer."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

APP_SECRET = b"unit-app-secret"
WABA_ID = "102290129340398"


def sign(body: bytes, secret: bytes = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


INBOUND_TEXT = b"""{
  "object": "whatsapp_business_account",
  "entry": [{
    "id": "102290129340398",
    "changes": [{
      "value": {
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
        "contacts": [{ "profile": { "name": "Sheena Nelson" }, "wa_id": "16505551234" }],
        "messages": [{
          "from": "16505551234",
          "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
          "timestamp": "1749416383",
          "type": "text",
          "text": { "body": "Does it come in another color?" }
        }]
      },
      "field": "messages"
    }]
  }]
}"""

STATUS_SENT = b"""{
  "object": "whatsapp_business_account",
  "entry": [{
    "id": "102290129340398",
    "changes": [{
      "value": {
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
        "statuses": [{
          "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
          "status": "sent",
          "timestamp": "1750030073",
          "recipient_id": "16505551234",
          "conversation": { "id": "72b14d6bd5407799e66f64d1b338e567",
                            "expiration_timestamp": "1750116480",
                            "origin": { "type": "marketing" } },
          "pricing": { "billable": true, "pricing_model": "PMP", "type": "regular", "category": "marketing" }
        }]
      },
      "field": "messages"
    }]
  }]
}"""

BATCHED_STATUSES = b"""{
  "object": "whatsapp_business_account",
  "entry": [{
    "id": "102290129340398",
    "changes": [
      { "field": "messages",
        "value": { "messaging_product": "whatsapp",
          "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
          "statuses": [
            { "id": "wamid.AAA", "status": "delivered", "timestamp": "1750030080", "recipient_id": "16505551234",
              "pricing": { "billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "utility" } },
            { "id": "wamid.BBB", "status": "read", "timestamp": "1750030090", "recipient_id": "16505550000" } ] } },
      { "field": "messages",
        "value": { "messaging_product": "whatsapp",
          "metadata": { "display_phone_number": "15550783882", "phone_number_id": "106540352242923" },
          "statuses": [
            { "id": "wamid.CCC", "status": "failed", "timestamp": "1750030095", "recipient_id": "447700900123",
              "errors": [{ "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                "error_data": { "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number." },
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/" }] } ] } }
    ]
  }]
}"""

TEMPLATE_APPROVED = b"""{ "entry": [{ "id": "102290129340398", "time": 1751247548,
    "changes": [{ "value": { "event": "APPROVED", "message_template_id": 1689556908129832,
        "message_template_name": "order_confirmation", "message_template_language": "en-US",
        "reason": "NONE", "message_template_category": "UTILITY" },
      "field": "message_template_status_update" }] }],
  "object": "whatsapp_business_account" }"""

THROUGHPUT_UPGRADE = b"""{ "entry": [{ "id": "102290129340398", "time": 1748454394,
    "changes": [{ "value": { "display_phone_number": "15550783881", "event": "THROUGHPUT_UPGRADE",
        "current_limit": "TIER_UNLIMITED" }, "field": "phone_number_quality_update" }] }],
  "object": "whatsapp_business_account" }"""


def status_webhook(
    *statuses: dict[str, Any], phone_number_id: str = "106540352242922", waba_id: str = WABA_ID
) -> bytes:
    return body(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": phone_number_id,
                                },
                                "statuses": list(statuses),
                            },
                        }
                    ],
                }
            ],
        }
    )


def status_item(
    wamid: str, status: str, timestamp: int, callback: str | None = None, **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": "447911123456",
        **extra,
    }
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    return item
