"""An account's hold, read from its `account_holds` document (guard writes it; ingest and the
admin CLI read it), pure.

Each rule that fired has its own entry with the time it fired (`at`); a release records its
time (`released_at`). The account is held while some rule fired after the latest release, so
no write ever has to be conditional: a rule sets its own field, a release sets its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _ms(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def active_holds(doc: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The rules holding the account now (fired after the latest release), by rule."""
    if not doc:
        return {}
    released = _ms(doc.get("released_at")) or 0
    holds = doc.get("holds")
    if not isinstance(holds, Mapping):
        return {}
    return {
        rule: hold
        for rule, hold in sorted(holds.items())
        if isinstance(hold, Mapping) and (_ms(hold.get("at")) or 0) > released
    }


def is_held(doc: Mapping[str, Any] | None) -> bool:
    return bool(active_holds(doc))


def hold_view(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """What `hala accounts show` prints and ingest's 403 says: held or not, each active rule
    with when and why, and the last release."""
    active = active_holds(doc)
    view: dict[str, Any] = {
        "held": bool(active),
        "rules": [
            {"rule": rule, "since": _ms(hold.get("at")), "reason": str(hold.get("reason") or "")}
            for rule, hold in active.items()
        ],
    }
    if doc and doc.get("released_at") is not None:
        view["released_at"] = _ms(doc.get("released_at"))
        view["released_by"] = doc.get("released_by")
        view["release_reason"] = doc.get("release_reason")
    return view
