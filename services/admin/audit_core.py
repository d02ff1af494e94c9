"""The audit log's decisions, pure: which commands are audited, what an entry says (who, what,
target, when, from where, outcome) with secrets redacted, and how `hala audit` filters.

Every command that changes something is audited, including ones added later: only the commands
listed in READ_ONLY are not. An entry never holds a command's result (an issued API key is in
one), only its arguments, redacted: an argument whose name says it is a secret is replaced, a
value that is a whole API key keeps only its visible prefix, and an account's profile fields
(name, email, phone, business name) are not kept at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.admin.core import API_KEY_VISIBLE_CHARS, from_ms, is_api_key
from shared.errors import InvalidRequest

# (group, command) pairs that change nothing. `dlq replay --dry-run` is read-only too.
READ_ONLY: frozenset[tuple[str, str]] = frozenset(
    {
        ("accounts", "list"),
        ("accounts", "show"),
        ("wabas", "list"),
        ("numbers", "list"),
        ("keys", "list"),
        ("keys", "generate-encryption-key"),
        ("balance", "show"),
        ("ledger", "show"),
        ("templates", "list"),
        ("dlq", "list"),
        ("dlq", "show"),
        ("audit", "list"),
        ("suppressions", "list"),
        ("blocks", "list"),
    }
)

REDACTED = "[redacted]"
# An account's profile is personal data: an entry keeps that it was given, not its value, so
# that erasing the account needs no change to the (append-only) log.
PERSONAL = "[personal data]"
_PERSONAL_FIELDS = frozenset({"name", "email", "phone", "business_name"})
_SECRET_NAME = re.compile(r"token|secret|password|passphrase|credential|private", re.IGNORECASE)
# Arguments that name what a command acts on, in the order they are shown.
TARGET_FIELDS = (
    "account_id",
    "waba_id",
    "phone_number_id",
    "key",
    "key_id",
    "topic",
    "endpoint_id",
)
AUDIT_ID_PREFIX = "aud"


@dataclass(frozen=True)
class Operator:
    """Who runs `hala`, and from where."""

    name: str  # HALA_OPERATOR, else the OS user
    os_user: str
    host: str
    # The SSH client's address when the command came over SSH (SSH_CONNECTION's first field).
    remote_address: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.host}"


def operator(
    *, configured: str | None, os_user: str, host: str, ssh_connection: str | None
) -> Operator:
    name = (configured or "").strip() or os_user
    remote = ssh_connection.split()[0] if ssh_connection and ssh_connection.split() else None
    return Operator(name=name, os_user=os_user, host=host, remote_address=remote)


def is_audited(group: str, command: str, arguments: Mapping[str, Any]) -> bool:
    if (group, command) in READ_ONLY or group == "audit":
        return False
    return not (group, command) == ("dlq", "replay") or not arguments.get("dry_run")


def redact(arguments: Mapping[str, Any], *, profile: bool = False) -> dict[str, Any]:
    """The arguments as an audit entry may keep them (`profile`: they are an account's
    profile, whose fields are personal data)."""
    kept: dict[str, Any] = {}
    for name, value in arguments.items():
        if name in ("group", "command", "json"):
            continue
        if _SECRET_NAME.search(name) and value is not None:
            kept[name] = REDACTED
        elif profile and name in _PERSONAL_FIELDS and value not in (None, ""):
            kept[name] = PERSONAL
        elif isinstance(value, str) and is_api_key(value.strip()):
            kept[name] = value.strip()[:API_KEY_VISIBLE_CHARS] + "…"
        elif isinstance(value, str | int | float | bool) or value is None:
            kept[name] = value
        else:
            kept[name] = str(value)
    return kept


def target(arguments: Mapping[str, Any], result: Any = None) -> dict[str, Any]:
    """What the command acted on: the ids among its (redacted) arguments, plus the account a
    command created or named in its result."""
    found = {f: arguments[f] for f in TARGET_FIELDS if arguments.get(f) not in (None, "")}
    if isinstance(result, Mapping):
        for name in ("account_id", "key_id", "waba_id", "phone_number_id"):
            value = result.get(name)
            if isinstance(value, str) and name not in found:
                found[name] = value
        created = result.get("_id")
        if isinstance(created, str) and created.startswith("acc_"):
            found.setdefault("account_id", created)
    return found


def entry(
    *,
    entry_id: str,
    operator: Operator,
    group: str,
    command: str,
    arguments: Mapping[str, Any],
    result: Any,
    error: BaseException | None,
    now_ms: int,
) -> dict[str, Any]:
    """The audit_log document for one command run."""
    kept = redact(arguments, profile=group == "accounts")
    doc: dict[str, Any] = {
        "_id": entry_id,
        "at": from_ms(now_ms),
        "operator": {
            "name": operator.name,
            "os_user": operator.os_user,
            "host": operator.host,
            "remote_address": operator.remote_address,
        },
        "command": f"{group} {command}",
        "arguments": kept,
        "target": target(kept, result if error is None else None),
        "outcome": "ok" if error is None else "error",
    }
    if error is not None:
        doc["error"] = {
            "code": getattr(error, "code", type(error).__name__),
            "message": str(getattr(error, "message", "")) or type(error).__name__,
        }
    return doc


_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def since_ms(text: str, now_ms: int) -> int:
    """`--since`: an ISO date or date-time (UTC unless it says otherwise), or a span back from
    now: 90m, 24h, 7d."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        unit = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[match.group(2)]
        return now_ms - int(match.group(1)) * unit
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            "--since is an ISO date or date-time, or a span like 24h or 7d",
            code="invalid_field",
            details={"field": "since"},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as `hala audit` shows it."""
    operator_doc = doc.get("operator") or {}
    shown = {
        "id": doc["_id"],
        "at": doc.get("at"),
        "operator": operator_doc.get("name"),
        "host": operator_doc.get("host"),
        "command": doc.get("command"),
        "target": doc.get("target"),
        "outcome": doc.get("outcome"),
        "arguments": doc.get("arguments"),
    }
    if operator_doc.get("remote_address"):
        shown["remote_address"] = operator_doc["remote_address"]
    if doc.get("error"):
        shown["error"] = doc["error"]
    return shown
