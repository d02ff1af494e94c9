"""No log call passes a keyword that structlog or our processors own: `event` collides with the
positional event name (TypeError at the call, which once stopped a consumer), and the others
would be silently overwritten by the processors in shared/logging.py."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESERVED = {"event", "level", "timestamp", "service", "logger"}
METHODS = {
    "debug",
    "info",
    "warning",
    "warn",
    "error",
    "exception",
    "critical",
    "msg",
    "fatal",
    "bind",
    "new",
}


def _offending_calls(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in METHODS
            and "log" in ast.unparse(node.func.value).lower()
        ):
            found.extend((node.lineno, kw.arg) for kw in node.keywords if kw.arg in RESERVED)
    return found


def test_the_scan_finds_a_reserved_keyword() -> None:
    assert _offending_calls("log.info('x', event=1)\nself._log.warning('y', level=2)") == [
        (1, "event"),
        (2, "level"),
    ]
    assert _offending_calls("log.info('x', template_event=1)") == []


def test_no_log_call_in_the_code_base_passes_a_reserved_keyword() -> None:
    offending = [
        f"{path.relative_to(REPO)}:{line}: {name}="
        for folder in ("services", "shared", "tools")
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, name in _offending_calls(path.read_text())
    ]
    assert offending == []
