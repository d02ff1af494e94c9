"""The admin CLI's decisions, pure: documents it writes, API key format, template shapes, how
an operator's identifier names an API key, and how dead letters are shown and replayed. No
await, no clock, no I/O: times and random values are passed in."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.dead_letters import DLQ_HEADERS, REPLAYED_FROM
from shared.errors import InvalidRequest, NotFound, PermanentError
from shared.messages import ALL_TOPICS
from shared.phone import parse_e164

API_KEY_PREFIX = "hw_live_"
API_KEY_RANDOM_CHARS = 32
API_KEY_VISIBLE_CHARS = len(API_KEY_PREFIX) + 8  # "hw_live_AbCd1234": enough to tell keys apart
DEFAULT_LOW_BALANCE_THRESHOLD = 1_000_000  # micros: one unit of the account currency
MESSAGING_LIMITS = (
    "TIER_50",
    "TIER_250",
    "TIER_1K",
    "TIER_2K",
    "TIER_10K",
    "TIER_100K",
    "TIER_UNLIMITED",
)

_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_META_ID = re.compile(r"^\d{6,20}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


# --- API keys -------------------------------------------------------------------------------


def api_key_from_random(random_part: str) -> str:
    """`hw_live_` + 32 URL-safe characters (the caller draws them from `secrets`)."""
    if len(random_part) != API_KEY_RANDOM_CHARS or not _URL_SAFE.match(random_part):
        raise ValueError("an API key needs 32 URL-safe random characters")
    return API_KEY_PREFIX + random_part


def is_api_key(value: str) -> bool:
    rest = value.removeprefix(API_KEY_PREFIX)
    return (
        value.startswith(API_KEY_PREFIX)
        and len(rest) == API_KEY_RANDOM_CHARS
        and bool(_URL_SAFE.match(rest))
    )


def hash_api_key(api_key: str) -> str:
    """What `api_keys._id` holds: the key itself is never stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_doc(api_key: str, *, account_id: str, name: str, now_ms: int) -> dict[str, Any]:
    return {
        "_id": hash_api_key(api_key),
        "account_id": account_id,
        "name": name,
        "prefix": api_key[:API_KEY_VISIBLE_CHARS],
        "created_at": from_ms(now_ms),
        "revoked_at": None,
    }


def key_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "key_id": doc["_id"],
        "prefix": doc.get("prefix"),
        "name": doc.get("name"),
        "account_id": doc.get("account_id"),
        "created_at": doc.get("created_at"),
        "revoked_at": doc.get("revoked_at"),
        "rate_limit": doc.get("rate_limit"),
    }


def find_key(docs: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    """The one key an operator named: the full key, its id (sha256 hex) or a unique start of
    it, or its visible prefix."""
    ident = ident.strip()
    if is_api_key(ident):
        ident = hash_api_key(ident)
    if ident.startswith(API_KEY_PREFIX):
        matches = [d for d in docs if str(d.get("prefix", "")).startswith(ident)]
    elif len(ident) >= 8 and all(c in "0123456789abcdef" for c in ident):
        matches = [d for d in docs if d["_id"].startswith(ident)]
    else:
        raise InvalidRequest(
            "name a key by its id (hex, at least 8 characters) or its prefix (hw_live_…)",
            code="invalid_key_reference",
        )
    if not matches:
        raise NotFound("no API key matches", code="unknown_api_key")
    if len(matches) > 1:
        raise InvalidRequest(
            f"{len(matches)} keys match; give more characters", code="ambiguous_api_key"
        )
    return matches[0]


# --- accounts, WABAs, numbers ---------------------------------------------------------------


def account_doc(
    *,
    account_id: str,
    name: str,
    email: str,
    phone: str,
    business_name: str,
    fb_business_manager_id: str,
    low_balance_threshold: int,
    now_ms: int,
) -> dict[str, Any]:
    if not name.strip() or not business_name.strip():
        raise InvalidRequest("name and business name must not be empty", code="invalid_field")
    if not _EMAIL.match(email):
        raise InvalidRequest(
            "email is not an email address", code="invalid_field", details={"field": "email"}
        )
    e164, _ = parse_e164(phone)
    if not _META_ID.match(fb_business_manager_id):
        raise InvalidRequest(
            "the Business Manager id is Meta's numeric id",
            code="invalid_field",
            details={"field": "fb_business_manager_id"},
        )
    if low_balance_threshold < 0:
        raise InvalidRequest(
            "the low balance threshold cannot be negative",
            code="invalid_field",
            details={"field": "low_balance_threshold"},
        )
    return {
        "_id": account_id,
        "name": name.strip(),
        "email": email,
        "phone": e164,
        "business_name": business_name.strip(),
        "fb_business_manager_id": fb_business_manager_id,
        "status": "active",
        "low_balance_threshold": low_balance_threshold,
        # where alerts go besides `email` (notify; `hala accounts update --alert-emails`)
        "alert_emails": [],
        # ingest refuses free-form messages to contacts whose 24 h window is closed
        "customer_service_window_check": True,
        "created_at": from_ms(now_ms),
    }


MAX_ALERT_EMAILS = 10


def alert_emails(value: str) -> list[str]:
    """`a@x.example,b@y.example` as the account's alert addresses (notify emails them and the
    account's own email); empty clears the list. Duplicates are dropped (case-insensitively)."""
    addresses = [a.strip() for a in value.split(",") if a.strip()]
    for address in addresses:
        if not _EMAIL.match(address):
            raise InvalidRequest(
                f"{address!r} is not an email address",
                code="invalid_field",
                details={"field": "alert_emails"},
            )
    first: dict[str, str] = {}
    for address in addresses:
        first.setdefault(address.lower(), address)
    unique = list(first.values())
    if len(unique) > MAX_ALERT_EMAILS:
        raise InvalidRequest(
            f"at most {MAX_ALERT_EMAILS} alert addresses",
            code="invalid_field",
            details={"field": "alert_emails"},
        )
    return unique


def low_balance_threshold(value: int) -> int:
    if value < 0:
        raise InvalidRequest(
            "the low balance threshold cannot be negative",
            code="invalid_field",
            details={"field": "low_balance_threshold"},
        )
    return value


# --- request rate limits and the cap on messages in flight -----------------------------------

DEFAULT = "default"  # an operator's word for "remove the override: the service default applies"
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


def rate_limit(spec: str, burst: int | None = None) -> dict[str, Any] | str:
    """`N/s`, `N/min` or `N/h` as stored on an account or API key (`rate_limit`:
    `{"per_second", "burst"}`, read by ingest), or DEFAULT to remove the override. `burst`:
    how many may come at once (default N: one unit's worth)."""
    if spec.strip().lower() == DEFAULT:
        if burst is not None:
            raise InvalidRequest(
                "--rate-limit-burst goes with a rate, not with `default`",
                code="invalid_field",
                details={"field": "rate_limit_burst"},
            )
        return DEFAULT
    match = _RATE.match(spec.lower())
    if match is None or match.group(2) not in _RATE_UNITS:
        raise InvalidRequest(
            "a rate limit is N/s, N/min or N/h (e.g. 50/s), or `default`",
            code="invalid_field",
            details={"field": "rate_limit"},
        )
    count = float(match.group(1))
    per_second = count / _RATE_UNITS[match.group(2)]
    if per_second <= 0:
        raise InvalidRequest(
            "a rate limit must be above zero", code="invalid_field", details={"field": "rate_limit"}
        )
    if burst is None:
        burst = max(1, math.ceil(count))
    if burst < 1:
        raise InvalidRequest(
            "the burst must be at least 1",
            code="invalid_field",
            details={"field": "rate_limit_burst"},
        )
    return {"per_second": per_second, "burst": burst}


def max_in_flight(value: str) -> int | str:
    """An account's cap on messages in flight (0: none for this account), or DEFAULT."""
    text = value.strip().lower()
    if text == DEFAULT:
        return DEFAULT
    if not text.isdigit():
        raise InvalidRequest(
            "--max-in-flight is a whole number (0: no cap) or `default`",
            code="invalid_field",
            details={"field": "max_in_flight"},
        )
    return int(text)


def on_off(value: str) -> bool:
    """An operator's on/off switch value."""
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise InvalidRequest("a switch is `on` or `off`", code="invalid_field")


def require_meta_id(value: str, what: str) -> str:
    if not _META_ID.match(value):
        raise InvalidRequest(
            f"{what} must be Meta's numeric id", code="invalid_field", details={"field": what}
        )
    return value


def check_owner(existing: dict[str, Any] | None, account_id: str, what: str) -> None:
    """Registering is idempotent for the same account; taking another account's is refused."""
    if existing is not None and existing.get("account_id") != account_id:
        raise PermanentError(f"{what} is registered to another account", code="already_registered")


def waba_doc(
    *, waba_id: str, account_id: str, portfolio_id: str, name: str, now_ms: int
) -> dict[str, Any]:
    return {
        "_id": require_meta_id(waba_id, "waba_id"),
        "account_id": account_id,
        "portfolio_id": require_meta_id(portfolio_id, "portfolio_id"),
        "name": name,
        "created_at": from_ms(now_ms),
    }


def phone_number_doc(
    *,
    phone_number_id: str,
    account_id: str,
    waba: dict[str, Any],
    display_phone_number: str,
    encrypted_token: str,
    throughput_mps: int,
    messaging_limit: str,
    now_ms: int,
) -> dict[str, Any]:
    display = display_phone_number.lstrip("+")
    if not display.isdigit() or not 7 <= len(display) <= 15:
        raise InvalidRequest(
            "the display number is digits with the country code",
            code="invalid_field",
            details={"field": "display_phone_number"},
        )
    if throughput_mps <= 0:
        raise InvalidRequest(
            "throughput must be positive", code="invalid_field", details={"field": "throughput_mps"}
        )
    if messaging_limit not in MESSAGING_LIMITS:
        raise InvalidRequest(
            f"messaging limit must be one of {', '.join(MESSAGING_LIMITS)}",
            code="invalid_field",
            details={"field": "messaging_limit"},
        )
    return {
        "_id": require_meta_id(phone_number_id, "phone_number_id"),
        "account_id": account_id,
        "waba_id": waba["_id"],
        "portfolio_id": waba["portfolio_id"],
        "display_phone_number": display,
        "access_token_encrypted": encrypted_token,
        "throughput_mps": throughput_mps,
        "messaging_limit": messaging_limit,
        "status": "active",
        "registered_at": from_ms(now_ms),
    }


def phone_number_view(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything but the token, even encrypted."""
    return {k: v for k, v in doc.items() if k != "access_token_encrypted"}


# --- templates ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def placeholders(text: str) -> list[str]:
    """Distinct placeholder names in order of first appearance: ["1", "2"] or ["first_name"]."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text or "")))


def template_doc(waba_id: str, item: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """One template from Meta's `GET /<WABA_ID>/message_templates`, with the shape ingest checks
    sends against: header format and parameters, body parameters, buttons with parameters."""
    name, language = str(item["name"]), str(item["language"])
    components = list(item.get("components") or [])
    header_format: str | None = None
    header_params: list[str] = []
    body_params: list[str] = []
    # {index, count} objects, not [index, count] pairs: FerretDB stores no nested arrays.
    button_params: list[dict[str, int]] = []
    buttons: list[dict[str, Any]] = []
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_params = placeholders(component.get("text", ""))
        elif kind == "BODY":
            body_params = placeholders(component.get("text", ""))
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons") or []):
                button_kind = str(button.get("type", "")).upper()
                buttons.append(
                    {"index": index, "type": button_kind, "text": button.get("text", "")}
                )
                if button_kind == "URL" and placeholders(button.get("url", "")):
                    button_params.append({"index": index, "count": 1})
                elif button_kind in ("COPY_CODE", "OTP"):
                    button_params.append({"index": index, "count": 1})
    return {
        "_id": f"{waba_id}:{name}:{language}",
        "waba_id": waba_id,
        "template_id": str(item.get("id", "")),
        "name": name,
        "language": language,
        "category": str(item.get("category", "")).upper(),
        "status": str(item.get("status", "")).upper(),
        "parameter_format": str(item.get("parameter_format") or "POSITIONAL").upper(),
        # Meta's components verbatim, as JSON text: their examples hold nested arrays
        # (e.g. body_text [["Ana"]]), which FerretDB cannot store.
        "components_json": orjson.dumps(components).decode(),
        "header_format": header_format,
        "header_params": header_params,
        "body_params": body_params,
        "body_param_count": len(body_params),
        "button_params": button_params,
        "buttons": buttons,
        "synced_at": from_ms(now_ms),
    }


def example_components(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameters that satisfy a template's shape, for demos and docs."""
    components: list[dict[str, Any]] = []
    named = template.get("parameter_format") == "NAMED"

    def text_params(names: list[str]) -> list[dict[str, Any]]:
        return [
            (
                {"type": "text", "parameter_name": n, "text": f"demo-{n}"}
                if named
                else {"type": "text", "text": f"demo-{n}"}
            )
            for n in names
        ]

    header_format = template.get("header_format")
    if header_format in ("IMAGE", "VIDEO", "DOCUMENT"):
        kind = header_format.lower()
        components.append(
            {
                "type": "header",
                "parameters": [{"type": kind, kind: {"link": f"https://example.com/demo.{kind}"}}],
            }
        )
    elif template.get("header_params"):
        components.append({"type": "header", "parameters": text_params(template["header_params"])})
    if template.get("body_params"):
        components.append({"type": "body", "parameters": text_params(template["body_params"])})
    for button in template.get("button_params", []):
        components.append(
            {
                "type": "button",
                "sub_type": "url",
                "index": str(button["index"]),
                "parameters": [{"type": "text", "text": "demo"}] * button["count"],
            }
        )
    return components


# --- dead letters ---------------------------------------------------------------------------

TRACEBACK_LINES = 8


def dlq_topic_names(prefix: str, existing: Iterable[str]) -> list[str]:
    """The platform's dead-letter topics (with the prefix) that exist, sorted."""
    known = {prefix + topic.dlq for topic in ALL_TOPICS}
    return sorted(known.intersection(existing))


def resolve_dlq_topic(name: str, prefix: str, known: Iterable[str]) -> str:
    """The dead-letter topic an operator named: in full, without the prefix, or by its source
    topic (`messages.status-changed.v1` names `messages.status-changed.v1.dlq`)."""
    wanted = name.strip()
    if not wanted.endswith(".dlq"):
        wanted += ".dlq"
    candidates = [wanted] if wanted.startswith(prefix) and prefix else [prefix + wanted, wanted]
    names = set(known)
    for candidate in candidates:
        if candidate in names:
            return candidate
    raise NotFound(
        f"no dead-letter topic {name}", code="unknown_dlq_topic", details={"known": sorted(names)}
    )


def position_id(topic: str, partition: int, offset: int) -> str:
    """`topic:partition:offset`, how a record's position is written everywhere here."""
    return f"{topic}:{partition}:{offset}"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def decoded_value(value: bytes | None) -> Any:
    """A record's value for people: its JSON, else its text, else base64."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def describe_dead_letter(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    replay: dict[str, Any] | None = None,
    traceback_lines: int | None = TRACEBACK_LINES,
) -> dict[str, Any]:
    """One dead letter as `hala dlq show` prints it. `traceback_lines`: how many of the
    traceback's last lines (its end names the failure); None: all of it."""
    ours = {k: _text(v) for k, v in headers if k in DLQ_HEADERS}
    others = {k: _text(v) for k, v in headers if k not in DLQ_HEADERS}
    trace = ours.get("error_traceback") or ""
    lines = trace.rstrip("\n").splitlines()
    shown = lines if traceback_lines is None else lines[-traceback_lines:]
    attempts = ours.get("attempts") or ""
    return {
        "dead_letter": position_id(topic, partition, offset),
        "dead_lettered_at": _ms_text(ours.get("dead_lettered_at")),
        "written_at": None if timestamp_ms is None else from_ms(timestamp_ms),
        "service": ours.get("service"),
        "source": _source_id(ours),
        "error": {
            "type": ours.get("error_type"),
            "reason": ours.get("error_reason"),
            "detail": ours.get("error_detail"),
            "attempts": int(attempts) if attempts.isdigit() else None,
            "traceback": shown,
        },
        "key": _text(key),
        "headers": others,
        "value": decoded_value(value),
        "replayed": replay,
    }


def _source_id(ours: dict[str, str | None]) -> str | None:
    """The dead letter's source record, when its headers name it whole."""
    topic = ours.get("source_topic")
    partition = ours.get("source_partition") or ""
    offset = ours.get("source_offset") or ""
    if not topic or not partition.isdigit() or not offset.isdigit():
        return None
    return position_id(topic, int(partition), int(offset))


def _ms_text(value: str | None) -> datetime | None:
    return from_ms(int(value)) if value and value.isdigit() else None


@dataclass(frozen=True)
class ReplayPlan:
    """Where a dead letter goes back to, and with which headers."""

    id: str  # the dead letter's position: the `dlq_replays` _id
    source: str  # the original record's position (unique in `dlq_replays`)
    topic: str
    partition: int | None
    headers: list[tuple[str, bytes]]


def replay_plan(
    dlq_topic: str, partition: int, offset: int, headers: Sequence[tuple[str, bytes]]
) -> ReplayPlan:
    """Back to the topic the dead letter came from (its name without `.dlq`), to the same
    partition as the original (what keeps its key's records in one consumer's hands), with the
    original headers only, plus `replayed_from` naming the dead letter."""
    topic = dlq_topic.removesuffix(".dlq")
    values = {k: _text(v) for k, v in headers}
    named = values.get("source_topic")
    if named is not None and named != topic:
        raise InvalidRequest(
            f"the dead letter names {named} as its source, not {topic}", code="dlq_source_mismatch"
        )
    source_partition = values.get("source_partition") or ""
    target = int(source_partition) if source_partition.isdigit() else None
    dead_letter = position_id(dlq_topic, partition, offset)
    source = (
        position_id(topic, target, int(values["source_offset"] or ""))
        if target is not None and (values.get("source_offset") or "").isdigit()
        else f"unknown:{dead_letter}"
    )
    kept = [(k, v) for k, v in headers if k not in DLQ_HEADERS and k != REPLAYED_FROM]
    return ReplayPlan(
        id=dead_letter,
        source=source,
        topic=topic,
        partition=target,
        headers=[*kept, (REPLAYED_FROM, dead_letter.encode())],
    )


def replay_doc(plan: ReplayPlan, *, now_ms: int) -> dict[str, Any]:
    return {
        "_id": plan.id,
        "source": plan.source,
        "topic": plan.topic,
        "state": "replaying",
        "started_at": from_ms(now_ms),
    }
