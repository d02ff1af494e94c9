"""The webhook endpoint API's decisions, pure: request bodies decoded into their declarations
(services/ingest/endpoint_schemas.py), the shared endpoint rules (shared/webhook_endpoints.py)
applied with their failures as ingest's error codes, pages and views.

No await, no clock, no I/O: documents, times, ids and secrets are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from services.ingest.conversations import Cursor, decode_cursor, encode_cursor
from services.ingest.core import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, validation_error
from services.ingest.endpoint_schemas import (
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
    WebhookReplayRequest,
)
from services.ingest.errors import invalid_field, reject
from shared import webhook_endpoints as rules
from shared.errors import ServiceError
from shared.messages import NotifyRequested

_ENDPOINT_ID = re.compile(r"^we_[0-9a-z]{26}$")
_CREATE = msgspec.json.Decoder(WebhookEndpointCreate)
_UPDATE = msgspec.json.Decoder(WebhookEndpointUpdate)
_REPLAY = msgspec.json.Decoder(WebhookReplayRequest)

Doc = dict[str, Any]


@contextmanager
def _as_our_errors() -> Iterator[None]:
    """A shared rule's refusal as one of ingest's error codes (services/ingest/errors.py)."""
    try:
        yield
    except rules.EndpointRuleError as exc:
        details = dict(exc.details)
        if exc.field is not None:
            details["field"] = exc.field
        raise reject(exc.code, exc.message, **details) from None


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except msgspec.DecodeError:
        raise reject("malformed_json", "the request body is not valid JSON") from None


# --- requests ---------------------------------------------------------------------------------


def check_endpoint_id(endpoint_id: str) -> str:
    """An id that cannot be an endpoint's is simply not found (nothing to look up)."""
    if not _ENDPOINT_ID.match(endpoint_id):
        raise not_found()
    return endpoint_id


def not_found() -> ServiceError:
    return reject("not_found", "no such webhook endpoint")


def owned(endpoint: Doc | None, account_id: str) -> Doc:
    """The account's endpoint, not deleted; anything else is 404 (another account's endpoint
    is indistinguishable from one that does not exist)."""
    found = rules.owned(endpoint, account_id)
    if found is None:
        raise not_found()
    return dict(found)


def parse_create(raw: bytes) -> WebhookEndpointCreate:
    request: WebhookEndpointCreate = _decode(_CREATE, raw)
    return request


def new_endpoint(
    request: WebhookEndpointCreate,
    *,
    account_id: str,
    endpoint_id: str,
    secret: Doc,
    now_ms: int,
    allow_loopback_http: bool,
    endpoints_in_use: int,
) -> Doc:
    """The new document, if the account has room for it and the request keeps every rule."""
    with _as_our_errors():
        doc = rules.new_endpoint(
            endpoint_id=endpoint_id,
            account_id=account_id,
            url=request.url,
            events=request.events,
            format=request.format,
            description=request.description,
            secret=secret,
            now_ms=now_ms,
            allow_loopback_http=allow_loopback_http,
        )
        rules.check_room(endpoints_in_use)
    return doc


def parse_update(raw: bytes, *, now_ms: int, allow_loopback_http: bool) -> Doc:
    """The `$set` of a PATCH body (only the fields it gives)."""
    request: WebhookEndpointUpdate = _decode(_UPDATE, raw)
    given = {
        name: getattr(request, name)
        for name in rules.UPDATABLE_FIELDS
        if getattr(request, name) is not msgspec.UNSET
    }
    with _as_our_errors():
        return rules.endpoint_update(given, now_ms=now_ms, allow_loopback_http=allow_loopback_http)


def parse_replay(raw: bytes, now_ms: int) -> rules.Replay:
    request: WebhookReplayRequest = _decode(_REPLAY, raw)

    def ms(value: Any) -> int | None:
        return None if value is msgspec.UNSET else rules.ms_of(value)

    event_id = None if request.event_id is msgspec.UNSET else request.event_id
    with _as_our_errors():
        return rules.replay(
            since=ms(request.since), until=ms(request.until), event_id=event_id, now_ms=now_ms
        )


def notify_request(
    *, request_id: str, endpoint: Doc, now_ms: int, replay_of: rules.Replay | None = None
) -> NotifyRequested:
    return rules.notify_request(
        request_id=request_id,
        account_id=endpoint["account_id"],
        endpoint_id=endpoint["_id"],
        now_ms=now_ms,
        replay_of=replay_of,
    )


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int
    after: Cursor | None = None


def parse_page_query(params: Mapping[str, str]) -> PageQuery:
    unknown = sorted(set(params) - {"limit", "cursor"})
    if unknown:
        raise reject("unknown_field", f"unknown query parameter `{unknown[0]}`", field=unknown[0])
    raw = params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid_field("limit", f"`limit` must be an integer from 1 to {MAX_PAGE_SIZE}")
    cursor = params.get("cursor")
    return PageQuery(int(raw), decode_cursor(cursor) if cursor else None)


# --- answers ----------------------------------------------------------------------------------


def endpoint_view(endpoint: Doc, state: Doc | None, now_ms: int) -> Doc:
    return rules.endpoint_view(endpoint, state, now_ms)


def with_secret(endpoint: Doc, secret: str, now_ms: int) -> Doc:
    """A created or rotated endpoint with its new secret, shown once."""
    return {"endpoint": rules.endpoint_view(endpoint, None, now_ms), "secret": secret}


def endpoint_page(docs: list[Doc], states: Mapping[str, Doc], limit: int, now_ms: int) -> Doc:
    """`docs` holds up to limit + 1 endpoints, newest first: the extra one only says that
    there is a next page."""
    shown = docs[:limit]
    next_cursor = (
        encode_cursor(int(shown[-1]["created_at"]), shown[-1]["_id"])
        if len(docs) > limit and shown
        else None
    )
    return {
        "data": [rules.endpoint_view(d, states.get(d["_id"]), now_ms) for d in shown],
        "next_cursor": next_cursor,
    }


def attempt_page(docs: list[Doc], limit: int) -> Doc:
    """`docs` holds up to limit + 1 attempts, newest first."""
    shown = docs[:limit]
    last = shown[-1] if shown else None
    next_cursor = (
        encode_cursor(rules.to_ms(last.get("at")) or 0, str(last["_id"]))
        if len(docs) > limit and last is not None
        else None
    )
    return {"data": [rules.attempt_view(d) for d in shown], "next_cursor": next_cursor}


def accepted(request: NotifyRequested) -> Doc:
    return rules.notify_request_view(request)
