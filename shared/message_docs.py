"""The `messages` document of an accepted send request, built from its SendRequested event.

status creates the document from the event (it is the collection's one writer); ingest builds the
same shape to answer the request, to keep its idempotency record and to show the message before
status has stored it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.messages import SendRequested

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The fields a status event never writes: what the client asked for, as ingest accepted it.
REQUEST_FIELDS = (
    "account_id",
    "phone_number_id",
    "waba_id",
    "portfolio_id",
    "recipient",
    "recipient_region",
    "type",
    "content",
    "category",
    "created_at",
    "expires_at",
    "client_reference",
    "callback_data",
    "reply_to",
)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def message_document(event: SendRequested) -> dict[str, Any]:
    accepted_at = from_ms(event.accepted_at)
    doc: dict[str, Any] = {
        "_id": event.message_id,
        "account_id": event.account_id,
        "phone_number_id": event.phone_number_id,
        "waba_id": event.waba_id,
        "portfolio_id": event.portfolio_id,
        "recipient": event.recipient,
        "recipient_region": event.recipient_region,
        "type": event.message_type,
        # Stored as its JSON text: FerretDB's CPU per insert grows with every nested field
        # (measured: -26 % per document), and nothing queries inside a message's content.
        "content": orjson.dumps(event.content).decode(),
        "category": event.category,
        "status": "accepted",
        "history": [{"status": "accepted", "at": accepted_at, "source": "ingest"}],
        "created_at": accepted_at,
        "expires_at": from_ms(event.expires_at),
        # wamid, error, pricing and price are absent until status sets them (readers use .get):
        # every field costs FerretDB CPU on each insert, nulls included.
    }
    if event.client_reference is not None:
        doc["client_reference"] = event.client_reference
    if event.callback_data is not None:
        doc["callback_data"] = event.callback_data  # the client's biz_opaque_callback_data
    if event.reply_to is not None:
        doc["reply_to"] = event.reply_to
    return doc
