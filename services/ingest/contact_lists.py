"""The contact list API's decisions, pure: bodies decoded into their declarations
(services/ingest/contact_schemas.py), the shared rules (shared/opt_out.py,
shared/contact_lists.py) applied with their failures as ingest's error codes, the change
requests, pages and views.

No await, no clock, no I/O: documents, times and ids are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from services.ingest.contact_schemas import (
    BlockedRecipientCreate,
    OptOutKeywordsUpdate,
    SuppressionCreate,
)
from services.ingest.conversations import Cursor, decode_cursor, encode_cursor
from services.ingest.core import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    normalised_recipient,
    validation_error,
)
from services.ingest.errors import invalid_field, reject
from shared import contact_lists, opt_out
from shared.messages import SuppressionChangeRequested
from shared.phone import wa_id_of

Doc = dict[str, Any]
_SUPPRESSION = msgspec.json.Decoder(SuppressionCreate)
_KEYWORDS = msgspec.json.Decoder(OptOutKeywordsUpdate)
_BLOCK = msgspec.json.Decoder(BlockedRecipientCreate)
SUPPRESSION_REQUEST_PREFIX = "supr"


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except msgspec.DecodeError:
        raise reject("malformed_json", "the request body is not valid JSON") from None


def _given(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


# --- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int
    after: Cursor | None = None
    phone_number_id: str | None = None


def parse_page_query(params: Mapping[str, str], *, by_number: bool = False) -> PageQuery:
    allowed = {"limit", "cursor"} | ({"phone_number_id"} if by_number else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise reject("unknown_field", f"unknown query parameter `{unknown[0]}`", field=unknown[0])
    raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid_field("limit", f"`limit` must be an integer from 1 to {MAX_PAGE_SIZE}")
    cursor = params.get("cursor")
    number = params.get("phone_number_id")
    if number is not None and not (number.isdigit() and len(number) <= 64):
        raise invalid_field("phone_number_id", "`phone_number_id` is a phone number id")
    return PageQuery(int(raw), decode_cursor(cursor) if cursor else None, number)


def _page(docs: list[Doc], limit: int, time_field: str, view: Any) -> Doc:
    """`docs` holds up to limit + 1 items, newest first: the extra one only says that there is
    a next page."""
    shown = docs[:limit]
    last = shown[-1] if shown else None
    next_cursor = (
        encode_cursor(int(last.get(time_field) or 0), str(last["_id"]))
        if len(docs) > limit and last is not None
        else None
    )
    return {"data": [view(d) for d in shown], "next_cursor": next_cursor}


# --- suppressions -----------------------------------------------------------------------------


def parse_suppression(raw: bytes) -> SuppressionCreate:
    request: SuppressionCreate = _decode(_SUPPRESSION, raw)
    return request


def suppression_recipient(recipient: str, business_region: str | None) -> str:
    """The contact's E.164 (a national number read in the sending number's country)."""
    return normalised_recipient(recipient, business_region, "recipient")


def suppression_request(
    *,
    request_id: str,
    account_id: str,
    phone: Mapping[str, Any],
    e164: str,
    suppressed: bool,
    note: str,
    now_ms: int,
) -> SuppressionChangeRequested:
    return SuppressionChangeRequested(
        event_id=request_id,
        account_id=account_id,
        waba_id=str(phone["waba_id"]),
        phone_number_id=str(phone["_id"]),
        wa_id=wa_id_of(e164),
        suppressed=suppressed,
        source="api",
        note=note,
        requested_at=now_ms,
    )


def suppression_accepted(event: SuppressionChangeRequested) -> Doc:
    return {
        "request_id": event.event_id,
        "phone_number_id": event.phone_number_id,
        "wa_id": event.wa_id,
        "recipient": "+" + event.wa_id,
        "suppressed": event.suppressed,
        "requested_at": contact_lists.iso(event.requested_at),
    }


def suppression_page(docs: list[Doc], limit: int) -> Doc:
    return _page(docs, limit, "at", contact_lists.suppression_view)


# --- opt-out keywords -------------------------------------------------------------------------


def parse_keywords(raw: bytes) -> opt_out.KeywordConfig:
    request: OptOutKeywordsUpdate = _decode(_KEYWORDS, raw)
    try:
        return opt_out.config(_given(request.opt_out), _given(request.opt_in))
    except opt_out.KeywordError as exc:
        details: dict[str, Any] = {}
        if exc.keyword is not None:
            details["keyword"] = exc.keyword
        raise invalid_field(exc.field, exc.message, **details) from None


def keywords_view(doc: Mapping[str, Any] | None) -> Doc:
    return opt_out.config_view(opt_out.config_of(doc))


# --- blocked recipients -----------------------------------------------------------------------


def parse_block(raw: bytes) -> BlockedRecipientCreate:
    request: BlockedRecipientCreate = _decode(_BLOCK, raw)
    return request


def blocked_recipient(recipient: str) -> str:
    """A blocked number is international: the block applies to every sending number."""
    return normalised_recipient(recipient, None, "recipient")


def block_doc(account_id: str, e164: str, note: str, now_ms: int) -> Doc:
    return contact_lists.blocked_doc(
        account_id=account_id, e164=e164, note=note, source="api", now_ms=now_ms
    )


def blocked_view(doc: Mapping[str, Any]) -> Doc:
    return contact_lists.blocked_view(doc)


def blocked_page(docs: list[Doc], limit: int) -> Doc:
    return _page(docs, limit, "created_at", contact_lists.blocked_view)


def not_blocked() -> Exception:
    return reject("not_found", "the number is not on the account's block list")
