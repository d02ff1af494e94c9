"""An account's contact lists, pure, shared by the services that read and write them (the
rules of each list are here once, like shared/webhook_endpoints.py's for endpoints):

- the marketing suppression list (`suppressions`, written by status's processor alone, from
  users' STOP/START keywords, Meta's `user_preferences` webhooks, Meta's 131050 failures and
  the change requests of clients and operators): a suppressed contact gets no marketing
  template from that number; utility and authentication templates and service messages still
  go, as Meta allows;
- the block list (`blocked_recipients`, written by ingest's API and the admin CLI, inserts and
  deletes only): numbers the account never sends anything to.

Shapes are in shared/collections.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

SuppressionSource = Literal["keyword", "user_preferences", "meta", "api", "operator"]
MAX_NOTE_CHARS = 500


def suppression_id(phone_number_id: str, wa_id: str) -> str:
    return f"{phone_number_id}:{wa_id}"


def suppression_doc(
    *,
    account_id: str | None,
    phone_number_id: str,
    wa_id: str,
    suppressed: bool,
    source: SuppressionSource,
    at: int,
    now_ms: int,
    keyword: str | None = None,
    detail: str = "",
    operator: str = "",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": suppression_id(phone_number_id, wa_id),
        "account_id": account_id,
        "phone_number_id": phone_number_id,
        "wa_id": wa_id,
        "suppressed": suppressed,
        "source": source,
        "at": at,
        "detail": detail[:MAX_NOTE_CHARS],
        "updated_at": now_ms,
    }
    if keyword is not None:
        doc["keyword"] = keyword
    if operator:
        doc["operator"] = operator
    return doc


def is_suppressed(doc: Mapping[str, Any] | None, account_id: str) -> bool:
    """Whether a stored suppression applies to this account's send (a number that changed
    hands keeps its list, but only its present owner's entries count)."""
    return doc is not None and doc.get("suppressed") is True and doc.get("account_id") == account_id


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def suppression_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    wa_id = str(doc.get("wa_id") or "")
    return {
        "phone_number_id": doc.get("phone_number_id"),
        "wa_id": wa_id,
        "recipient": "+" + wa_id if wa_id.isdigit() else None,
        "suppressed": doc.get("suppressed") is True,
        "source": doc.get("source"),
        "since": iso(_int(doc.get("at"))),
        "keyword": doc.get("keyword"),
        "note": doc.get("detail") or None,
    }


def blocked_id(account_id: str, e164: str) -> str:
    return f"{account_id}:{e164}"


# Every account that ever blocked a number has this document too: a send to an account without
# it needs no lookup of its recipient (most accounts block nobody). Written with the first
# block, by the same writers; never removed but with the account (a stale one only costs
# lookups).
def blocks_marker_id(account_id: str) -> str:
    return f"{account_id}:*"


def blocks_marker_doc(account_id: str, now_ms: int) -> dict[str, Any]:
    return {
        "_id": blocks_marker_id(account_id),
        "account_id": account_id,
        "marker": True,
        "created_at": now_ms,
    }


# What a listing of an account's blocks matches (never the marker).
def blocked_entries(account_id: str) -> dict[str, Any]:
    return {"account_id": account_id, "marker": {"$ne": True}}


def blocked_doc(
    *, account_id: str, e164: str, note: str, source: Literal["api", "operator"], now_ms: int
) -> dict[str, Any]:
    return {
        "_id": blocked_id(account_id, e164),
        "account_id": account_id,
        "recipient": e164,
        "note": note[:MAX_NOTE_CHARS],
        "source": source,
        "created_at": now_ms,
    }


def blocked_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "recipient": doc.get("recipient"),
        "note": doc.get("note") or None,
        "source": doc.get("source"),
        "created_at": iso(_int(doc.get("created_at"))),
    }


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
