"""Client webhook endpoints: the rules shared by the two ways of managing them -- the client API
(ingest's `/v1/webhook-endpoints`) and the operator acting for a client (`hala webhooks`) -- so
both apply exactly the same ones. Pure: no I/O, no clock, no randomness; times (ms), ids and
random bytes are passed in.

The `webhook_endpoints` document (shape in shared/collections.py) is made and changed here;
notify reads it and keeps its own verdict on the endpoint in `endpoint_states`. An endpoint
receives events while the client's switch is on (`enabled`), it is not deleted, and notify has
not disabled it since the client last enabled it (`disabled_at` after `enabled_at`): enabling
an endpoint again therefore needs no write of notify's.

Secrets are Standard Webhooks symmetric keys: `whsec_` + base64 of 32 random bytes. The whole
`whsec_…` string is stored Fernet-encrypted (`secrets[].encrypted`); it is shown to the client
once, when it is made (creation, rotation). A rotated-out secret keeps signing for 24 hours.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from shared.client_events import ClientEventType, EndpointFormat
from shared.messages import NotifyRequested
from shared.webhook_urls import UnacceptableUrl, check_endpoint_url

ENDPOINT_ID_PREFIX = "we"  # `we_` + 26 characters (shared.ids.new_id)
SECRET_ID_PREFIX = "whs"
NOTIFY_REQUEST_PREFIX = "nreq"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP_MS = 24 * 3600 * 1000
MAX_ENDPOINTS_PER_ACCOUNT = 20
MAX_EVENT_PATTERNS = 50
MAX_DESCRIPTION_CHARS = 500
MAX_EVENT_ID_CHARS = 256
UPDATABLE_FIELDS = ("url", "events", "enabled", "description")

EVENT_TYPES: tuple[str, ...] = get_args(ClientEventType)
FORMATS: tuple[str, ...] = get_args(EndpointFormat)
# Every `<prefix>.*` a client may name: each dotted prefix of a known type.
EVENT_PREFIXES: frozenset[str] = frozenset(
    t.rsplit(".", n)[0] for t in EVENT_TYPES for n in range(1, t.count(".") + 1)
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_NO_SPACE = re.compile(r"^\S+$")


class EndpointRuleError(ValueError):
    """A rule an endpoint request breaks: `code` is machine-readable, `field` names the input."""

    def __init__(self, code: str, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details


# --- validation -----------------------------------------------------------------------------


def check_url(url: str, *, allow_loopback_http: bool) -> str:
    """The URL, if a client may register it (shared.webhook_urls; loopback http only in
    development). Raises EndpointRuleError with the URL rule's code."""
    try:
        return check_endpoint_url(url, allow_loopback_http=allow_loopback_http).url
    except UnacceptableUrl as exc:
        raise EndpointRuleError(exc.code, str(exc), "url") from None


def check_events(events: Any) -> list[str]:
    """An endpoint's event patterns: known types, `<prefix>.*` of known types, or `*`; at least
    one; duplicates dropped (order kept)."""
    if not isinstance(events, list) or not events:
        raise EndpointRuleError(
            "invalid_field",
            '`events` must list at least one event type (e.g. "message.*", or "*" for every event)',
            "events",
        )
    if len(events) > MAX_EVENT_PATTERNS:
        raise EndpointRuleError(
            "invalid_field", f"`events` lists at most {MAX_EVENT_PATTERNS} patterns", "events"
        )
    for i, pattern in enumerate(events):
        if not is_event_pattern(pattern):
            raise EndpointRuleError(
                "unknown_event_type",
                f"`{pattern}` is not an event type, `<prefix>.*` or `*`",
                f"events[{i}]",
                known=list(EVENT_TYPES),
            )
    return list(dict.fromkeys(events))


def is_event_pattern(pattern: Any) -> bool:
    if not isinstance(pattern, str):
        return False
    if pattern == "*" or pattern in EVENT_TYPES:
        return True
    return pattern.endswith(".*") and pattern[:-2] in EVENT_PREFIXES


def check_format(value: Any) -> str:
    if value not in FORMATS:
        raise EndpointRuleError(
            "invalid_field", f"`format` is one of {', '.join(FORMATS)}", "format"
        )
    return str(value)


def check_description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_CHARS:
        raise EndpointRuleError(
            "invalid_field",
            f"`description` is text of at most {MAX_DESCRIPTION_CHARS} characters",
            "description",
        )
    return value.strip()


def check_room(active_endpoints: int) -> None:
    """An account keeps at most MAX_ENDPOINTS_PER_ACCOUNT endpoints (deleted ones aside)."""
    if active_endpoints >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise EndpointRuleError(
            "endpoint_limit_reached",
            f"an account has at most {MAX_ENDPOINTS_PER_ACCOUNT} endpoints: delete one first",
            limit=MAX_ENDPOINTS_PER_ACCOUNT,
        )


# --- secrets --------------------------------------------------------------------------------


def new_secret(random_bytes: bytes) -> str:
    """`whsec_` + base64 of 32 random bytes (the caller draws them from `secrets`/`os`)."""
    if len(random_bytes) != SECRET_BYTES:
        raise ValueError(f"a webhook secret needs {SECRET_BYTES} random bytes")
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (what Standard Webhooks verifiers derive)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("not a whsec_ secret")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("not a whsec_ secret") from exc


def secret_entry(secret_id: str, encrypted: str, now_ms: int) -> dict[str, Any]:
    return {"id": secret_id, "encrypted": encrypted, "created_at": now_ms, "expires_at": None}


def live_secrets(secrets: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """The secrets that sign at `now_ms`: the current one and rotated-out ones not yet
    expired."""
    return [s for s in secrets if s.get("expires_at") is None or s["expires_at"] > now_ms]


def rotated(
    secrets: list[dict[str, Any]], new_entry: dict[str, Any], now_ms: int
) -> list[dict[str, Any]]:
    """The secrets after a rotation: expired ones dropped, the current one(s) expiring
    ROTATION_OVERLAP_MS from now (both sign until then), the new one current."""
    kept = []
    for entry in live_secrets(secrets, now_ms):
        if entry.get("expires_at") is None:
            entry = {**entry, "expires_at": now_ms + ROTATION_OVERLAP_MS}
        kept.append(entry)
    return [*kept, new_entry]


# --- documents ------------------------------------------------------------------------------


def new_endpoint(
    *,
    endpoint_id: str,
    account_id: str,
    url: str,
    events: Any,
    format: Any,
    description: Any,
    secret: dict[str, Any],
    now_ms: int,
    allow_loopback_http: bool,
) -> dict[str, Any]:
    """A new `webhook_endpoints` document, enabled, with its first secret."""
    return {
        "_id": endpoint_id,
        "account_id": account_id,
        "url": check_url(url, allow_loopback_http=allow_loopback_http),
        "events": check_events(events),
        "format": check_format(format),
        "description": check_description(description),
        "enabled": True,
        "enabled_at": now_ms,
        "secrets": [secret],
        "created_at": now_ms,
        "updated_at": now_ms,
        "deleted_at": None,
    }


def endpoint_update(
    given: Mapping[str, Any], *, now_ms: int, allow_loopback_http: bool
) -> dict[str, Any]:
    """The `$set` of a change: the fields given (url, events, enabled, description), checked.
    Enabling (`enabled: true`) also sets `enabled_at` = now, which re-enables an endpoint that
    notify disabled (see the module's docstring)."""
    unknown = sorted(set(given) - set(UPDATABLE_FIELDS))
    if unknown:
        raise EndpointRuleError(
            "unknown_field",
            f"`{unknown[0]}` cannot be changed (one of {', '.join(UPDATABLE_FIELDS)})",
            unknown[0],
        )
    if not given:
        raise EndpointRuleError(
            "invalid_request", "nothing to change: give one of " + ", ".join(UPDATABLE_FIELDS)
        )
    changes: dict[str, Any] = {"updated_at": now_ms}
    if "url" in given:
        changes["url"] = check_url(given["url"], allow_loopback_http=allow_loopback_http)
    if "events" in given:
        changes["events"] = check_events(given["events"])
    if "description" in given:
        changes["description"] = check_description(given["description"])
    if "enabled" in given:
        if not isinstance(given["enabled"], bool):
            raise EndpointRuleError("invalid_field", "`enabled` is true or false", "enabled")
        changes["enabled"] = given["enabled"]
        if given["enabled"]:
            changes["enabled_at"] = now_ms
    return changes


def deletion(now_ms: int) -> dict[str, Any]:
    """The `$set` of a (soft) delete: kept for its deliveries' history, never delivered to."""
    return {"deleted_at": now_ms, "enabled": False, "updated_at": now_ms}


def is_deleted(endpoint: Mapping[str, Any]) -> bool:
    return endpoint.get("deleted_at") is not None


def owned(endpoint: Mapping[str, Any] | None, account_id: str) -> Mapping[str, Any] | None:
    """The endpoint if it is the account's and not deleted (else None: another account's
    endpoint is indistinguishable from one that does not exist)."""
    if endpoint is None or endpoint.get("account_id") != account_id or is_deleted(endpoint):
        return None
    return endpoint


# --- health and views -----------------------------------------------------------------------


def disabled_by_notify(endpoint: Mapping[str, Any], state: Mapping[str, Any] | None) -> bool:
    """notify disabled it (410, or failing for days) after the client last enabled it."""
    disabled_at = to_ms((state or {}).get("disabled_at"))
    return disabled_at is not None and disabled_at > (to_ms(endpoint.get("enabled_at")) or 0)


def receiving(endpoint: Mapping[str, Any], state: Mapping[str, Any] | None) -> bool:
    return (
        bool(endpoint.get("enabled"))
        and not is_deleted(endpoint)
        and not disabled_by_notify(endpoint, state)
    )


def health_view(endpoint: Mapping[str, Any], state: Mapping[str, Any] | None) -> dict[str, Any]:
    state = state or {}
    disabled = disabled_by_notify(endpoint, state)
    return {
        "disabled": disabled,
        "disabled_reason": state.get("disabled_reason") if disabled else None,
        "disabled_at": iso(state.get("disabled_at")) if disabled else None,
        "failing_since": iso(state.get("failing_since")),
        "last_success_at": iso(state.get("last_success_at")),
    }


def endpoint_view(
    endpoint: Mapping[str, Any], state: Mapping[str, Any] | None, now_ms: int
) -> dict[str, Any]:
    """What the client (or an operator) sees: never a secret, even encrypted; the secrets'
    ids and expiry only."""
    return {
        "id": endpoint["_id"],
        "url": endpoint.get("url"),
        "events": endpoint.get("events", []),
        "format": endpoint.get("format", "standard"),
        "description": endpoint.get("description", ""),
        "enabled": bool(endpoint.get("enabled")),
        "receiving": receiving(endpoint, state),
        "created_at": iso(endpoint.get("created_at")),
        "updated_at": iso(endpoint.get("updated_at")),
        "secrets": [
            {
                "id": s.get("id"),
                "created_at": iso(s.get("created_at")),
                "expires_at": iso(s.get("expires_at")),
            }
            for s in live_secrets(list(endpoint.get("secrets", [])), now_ms)
        ],
        "health": health_view(endpoint, state),
    }


def attempt_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One `delivery_attempts` document (notify's; fields in shared/collections.py)."""
    status = doc.get("http_status")
    latency = doc.get("latency_ms")
    return {
        "id": doc.get("_id"),
        "event_id": doc.get("event_id"),
        "event_type": doc.get("event_type"),
        "attempt": doc.get("attempt"),
        "attempted_at": iso(doc.get("at")),
        "outcome": doc.get("outcome"),
        "http_status": status if isinstance(status, int) else None,
        "latency_ms": round(float(latency), 1) if isinstance(latency, int | float) else None,
        "error": doc.get("error"),
    }


# --- test events and replays ----------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """One event (`event_id`), or every event of the endpoint's types in [since, until) (ms)."""

    event_id: str | None = None
    since: int | None = None
    until: int | None = None


def replay(*, since: int | None, until: int | None, event_id: str | None, now_ms: int) -> Replay:
    """A replay request checked: an event id, or a time range (`until` defaults to now)."""
    if event_id is not None:
        if since is not None or until is not None:
            raise EndpointRuleError(
                "invalid_request",
                "a replay names one event (`event_id`) "
                "or a time range (`since`, `until`), not both",
            )
        if not 1 <= len(event_id) <= MAX_EVENT_ID_CHARS or not _NO_SPACE.match(event_id):
            raise EndpointRuleError(
                "invalid_field", "`event_id` is an event's id (evt_…)", "event_id"
            )
        return Replay(event_id=event_id)
    if since is None:
        raise EndpointRuleError(
            "invalid_field",
            "a replay needs `since` (and optionally `until`) or `event_id`",
            "since",
        )
    until = now_ms if until is None else until
    if since >= until:
        raise EndpointRuleError("invalid_field", "`since` must be before `until`", "since")
    if since > now_ms:
        raise EndpointRuleError("invalid_field", "`since` is in the future", "since")
    return Replay(since=since, until=until)


def notify_request(
    *,
    request_id: str,
    account_id: str,
    endpoint_id: str,
    now_ms: int,
    replay_of: Replay | None = None,
) -> NotifyRequested:
    """The command notify acts on: a test event now, or a replay with the original ids."""
    if replay_of is None:
        return NotifyRequested(
            event_id=request_id,
            account_id=account_id,
            endpoint_id=endpoint_id,
            kind="test",
            requested_at=now_ms,
        )
    return NotifyRequested(
        event_id=request_id,
        account_id=account_id,
        endpoint_id=endpoint_id,
        kind="replay",
        replay_event_id=replay_of.event_id,
        since=replay_of.since,
        until=replay_of.until,
        requested_at=now_ms,
    )


def notify_request_view(request: NotifyRequested) -> dict[str, Any]:
    view: dict[str, Any] = {
        "request_id": request.event_id,
        "endpoint_id": request.endpoint_id,
        "kind": request.kind,
        "requested_at": iso(request.requested_at),
    }
    if request.kind == "replay":
        view.update(
            event_id=request.replay_event_id, since=iso(request.since), until=iso(request.until)
        )
    return view


# --- time -----------------------------------------------------------------------------------


def to_ms(value: Any) -> int | None:
    """A stored time (ms, or a BSON date) in ms; None for anything else."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return ms_of(value)
    if isinstance(value, int | float):
        return int(value)
    return None


def iso(value: Any) -> str | None:
    """A time (ms or a BSON date) as ISO 8601 UTC with milliseconds, like the rest of the API."""
    ms = to_ms(value)
    if ms is None:
        return None
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_of(moment: datetime) -> int:
    """A client's ISO time (naive = UTC) in ms."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _ONE_MS
