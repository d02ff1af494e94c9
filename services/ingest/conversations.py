"""Conversations for the business, pure: the 24-hour customer-service window, the contacts
list, and one contact's messages in both directions merged into one page.

Inbound messages (and the business's app-sent echoes) are status's `inbound_messages`; our sends
are `messages`; contacts and their windows are `conversations` (shapes in shared/collections.py).
No await, no clock, no I/O: documents and `now_ms` are passed in.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.ingest.core import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    iso,
    stored_content,
    to_ms,
)
from services.ingest.errors import invalid_field, reject
from shared.message_docs import from_ms

WINDOW_MS = 24 * 3600 * 1000


# --- the customer-service window ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    open: bool
    expires_at: int | None  # ms; None when the contact never opened one


def window_of(conversation: dict[str, Any] | None, now_ms: int) -> Window:
    """The window a `conversations` document says is open: until `window_expires_at` (the
    last window-opening message + 24 h, which status only ever moves forward)."""
    expires = conversation.get("window_expires_at") if conversation else None
    if not isinstance(expires, int):
        return Window(False, None)
    return Window(now_ms < expires, expires)


def latest_window(windows: list[Window]) -> Window:
    """Of the windows of the same person under several wa_id spellings, the one that lasts."""
    best = Window(False, None)
    for window in windows:
        if window.expires_at is not None and (
            best.expires_at is None or window.expires_at > best.expires_at
        ):
            best = window
    return best


def check_window(window: Window, message_type: str, enforced: bool) -> None:
    """A free-form message needs the user's window open; templates always pass. Meta would
    refuse it with 131047 after we reserved credit and queued it: refuse it now."""
    if not enforced or message_type == "template" or window.open:
        return
    raise reject(
        "outside_customer_service_window",
        "the recipient has not written in the last 24 hours: only a template may be "
        "sent outside the customer-service window",
        window_expires_at=iso(window.expires_at),
    )


def window_enforced(account: dict[str, Any] | None) -> bool:
    """Per account (`accounts.customer_service_window_check`), on unless switched off."""
    return (account or {}).get("customer_service_window_check") is not False


def window_cache_seconds(window: Window, now_ms: int, closed_seconds: float) -> float:
    """How long a looked-up window may be remembered: an open one until it closes (a window
    only ever grows), a closed one briefly (the user may write any second)."""
    if window.open and window.expires_at is not None:
        return max(0.0, (window.expires_at - now_ms) / 1000)
    return closed_seconds


def wa_id_candidates(e164: str) -> list[str]:
    """The wa_ids a recipient may have at Meta: its digits, and for Mexican and Brazilian
    mobiles the other spelling WhatsApp uses (Mexico: a `1` after 52; Brazil: without the
    ninth digit for older accounts), so the window of a user Meta names differently is found."""
    digits = e164.lstrip("+")
    candidates = [digits]
    if digits.startswith("52") and len(digits) == 12:
        candidates.append("521" + digits[2:])
    elif digits.startswith("521") and len(digits) == 13:
        candidates.append("52" + digits[3:])
    elif digits.startswith("55") and len(digits) == 13 and digits[4] == "9":
        candidates.append(digits[:4] + digits[5:])
    elif digits.startswith("55") and len(digits) == 12 and digits[4] in "6789":
        candidates.append(digits[:4] + "9" + digits[4:])
    return candidates


def window_view(window: Window) -> dict[str, Any]:
    return {"open": window.open, "expires_at": iso(window.expires_at)}


# --- queries -----------------------------------------------------------------------------------

_WA_ID = re.compile(r"^\+?[A-Za-z0-9._-]{1,256}$")
_PHONE_NUMBER_ID = re.compile(r"^\d{1,64}$")


@dataclass(frozen=True, slots=True)
class Cursor:
    at: int  # ms
    id: str


@dataclass(frozen=True, slots=True)
class ConversationQuery:
    limit: int
    after: Cursor | None = None


@dataclass(frozen=True, slots=True)
class ThreadQuery:
    wa_id: str
    limit: int
    newest_first: bool = True
    phone_number_id: str | None = None
    after: Cursor | None = None

    @property
    def recipient(self) -> str:
        """How our own messages name the contact (E.164)."""
        return "+" + self.wa_id


def _known_params(params: dict[str, str], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise reject("unknown_field", f"unknown query parameter `{name}`", field=name)


def _limit(params: dict[str, str]) -> int:
    raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid_field("limit", f"`limit` must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def parse_conversation_query(params: dict[str, str]) -> ConversationQuery:
    _known_params(params, {"limit", "cursor"})
    cursor = params.get("cursor")
    return ConversationQuery(_limit(params), decode_cursor(cursor) if cursor else None)


def parse_thread_query(wa_id: str, params: dict[str, str]) -> ThreadQuery:
    _known_params(params, {"limit", "cursor", "phone_number_id", "order"})
    if not _WA_ID.match(wa_id):
        raise invalid_field("wa_id", "`wa_id` is the contact's WhatsApp id (digits, no '+')")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_field("order", "`order` is `desc` (newest first) or `asc`")
    phone_number_id = params.get("phone_number_id")
    if phone_number_id is not None and not _PHONE_NUMBER_ID.match(phone_number_id):
        raise invalid_field("phone_number_id", "`phone_number_id` is a number's id (digits)")
    cursor = params.get("cursor")
    return ThreadQuery(
        wa_id.lstrip("+"),
        _limit(params),
        order == "desc",
        phone_number_id,
        decode_cursor(cursor) if cursor else None,
    )


def encode_cursor(at: int, item_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([at, item_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    try:
        at, item_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(at, int) or not isinstance(item_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise reject(
            "invalid_cursor", "`cursor` is not one this API returned", field="cursor"
        ) from None
    return Cursor(at, item_id)


# --- views -------------------------------------------------------------------------------------


def _content_of_inbound(doc: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(Meta's whole item, its object for the type). Status keeps the item as JSON text."""
    raw = doc.get("content")
    try:
        item = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        return {}, None
    return item, item.get(str(doc.get("type")))


def inbound_item(doc: dict[str, Any]) -> dict[str, Any]:
    """An `inbound_messages` document (a user's message, or a business echo) as a thread
    item."""
    item, content = _content_of_inbound(doc)
    referral = item.get("referral")
    errors = item.get("errors")
    return {
        "direction": "echo" if doc.get("direction") == "echo" else "inbound",
        "id": doc["_id"],
        "wamid": doc["_id"],
        "type": doc.get("type") or "unknown",
        "at": iso(_ms(doc.get("sent_at"))),
        "phone_number_id": doc.get("phone_number_id", ""),
        "content": content,
        "context_message_id": doc.get("context_wamid"),
        "media_id": doc.get("media_id"),
        "status": None,
        "referral": referral if isinstance(referral, dict) else None,
        "errors": errors if isinstance(errors, list) else None,
    }


def outbound_item(doc: dict[str, Any]) -> dict[str, Any]:
    """A `messages` document (one of our sends) as a thread item."""
    return {
        "direction": "outbound",
        "id": doc["_id"],
        "wamid": doc.get("wamid"),
        "type": doc.get("type") or "unknown",
        "at": iso(doc.get("created_at")),
        "phone_number_id": doc.get("phone_number_id", ""),
        "content": stored_content(doc),
        "context_message_id": doc.get("reply_to"),
        "media_id": None,
        "status": doc.get("status"),
        "referral": None,
        "errors": None,
    }


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return to_ms(value)
    except (TypeError, ValueError):
        return None


def inbound_key(doc: dict[str, Any]) -> tuple[int, str]:
    return _ms(doc.get("sent_at")) or 0, str(doc["_id"])


def outbound_key(doc: dict[str, Any]) -> tuple[int, str]:
    return _ms(doc.get("created_at")) or 0, str(doc["_id"])


def last_message(
    inbound: dict[str, Any] | None, outbound: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The newer of a contact's last inbound (or echo) and last outbound message."""
    if inbound is None and outbound is None:
        return None
    if outbound is None or (inbound is not None and inbound_key(inbound) >= outbound_key(outbound)):
        return inbound_item(inbound)  # type: ignore[arg-type]
    return outbound_item(outbound)


def conversation_view(
    conversation: dict[str, Any],
    inbound: dict[str, Any] | None,
    outbound: dict[str, Any] | None,
    now_ms: int,
) -> dict[str, Any]:
    """A contact (ordered by their own latest message, which is what `conversations` keeps)
    with the newest message of either direction."""
    last = last_message(inbound, outbound)
    return {
        "wa_id": conversation.get("wa_id", ""),
        "phone_number_id": conversation.get("phone_number_id", ""),
        "contact_name": conversation.get("contact_name"),
        "last_message_at": (
            last["at"] if last is not None else iso(_ms(conversation.get("last_message_at")))
        ),
        "last_message": last,
        "customer_service_window": window_view(window_of(conversation, now_ms)),
    }


def conversation_key(conversation: dict[str, Any]) -> tuple[int, str]:
    return _ms(conversation.get("last_message_at")) or 0, str(conversation["_id"])


def conversation_page(
    conversations: list[dict[str, Any]], limit: int, views: list[dict[str, Any]]
) -> dict[str, Any]:
    """`conversations` holds up to limit + 1 documents, newest first; `views` the shown ones'."""
    shown = conversations[:limit]
    next_cursor = (
        encode_cursor(*conversation_key(shown[-1]))
        if len(conversations) > limit and shown
        else None
    )
    return {"data": views, "next_cursor": next_cursor}


def thread_page(
    inbound: list[dict[str, Any]], outbound: list[dict[str, Any]], query: ThreadQuery
) -> dict[str, Any]:
    """Merge a contact's messages of both directions into one page in time order (each list
    holds up to limit + 1 documents past the cursor, in the query's order): the extra ones only
    say that there is a next page."""
    keyed = [(inbound_key(d), "in", d) for d in inbound] + [
        (outbound_key(d), "out", d) for d in outbound
    ]
    keyed.sort(key=lambda entry: entry[0], reverse=query.newest_first)
    shown = keyed[: query.limit]
    items = [inbound_item(d) if kind == "in" else outbound_item(d) for _, kind, d in shown]
    next_cursor = encode_cursor(*shown[-1][0]) if len(keyed) > query.limit and shown else None
    return {"data": items, "next_cursor": next_cursor}


def cursor_time(cursor: Cursor) -> Any:
    """The cursor's time as a BSON date, for `messages.created_at`."""
    return from_ms(cursor.at)
