"""The corpus of real webhook payloads (see SOURCES.md), and what each one holds, counted from
its raw JSON without status's parser (the tests compare the parser's plan against this)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).parent

_ITEM_LISTS = {
    "statuses": "statuses",
    "messages": "inbound",
    "message_echoes": "echoes",
    "user_preferences": "user_preferences",
    "errors": "value_errors",
}
_TEMPLATE_FIELDS = {
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
    "message_template_components_update",
}
_WABA_FACT_FIELDS = {
    "account_review_update",
    "account_alerts",
    "security",
    "business_capability_update",
}
_MESSAGE_FIELDS = {"messages", "smb_message_echoes", "user_preferences"}


def corpus_files() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*.json"))


def expected_counts(payload: dict[str, Any]) -> Counter[str]:
    """What a webhook holds, by kind, read off its structure."""
    counts: Counter[str] = Counter()
    for entry in payload.get("entry", []):
        for change in entry.get("changes", []):
            field, value = change.get("field"), change.get("value") or {}
            if field in _MESSAGE_FIELDS:
                for key, kind in _ITEM_LISTS.items():
                    counts[kind] += len(value.get(key) or [])
                if field == "user_preferences" and not value.get("user_preferences"):
                    counts["ignored"] += 1
            elif field in _TEMPLATE_FIELDS:
                counts["template_updates"] += 1
            elif field in ("phone_number_quality_update", "phone_number_name_update"):
                counts["number_updates"] += 1
            elif field == "account_update":
                counts["account_updates"] += 1
            elif field in _WABA_FACT_FIELDS:
                counts["waba_facts"] += 1
            else:
                counts["ignored"] += 1
    return counts


def load(path: Path) -> tuple[bytes, dict[str, Any]]:
    raw = path.read_bytes()
    return raw, json.loads(raw)
