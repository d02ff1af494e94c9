"""The audit log's rules: which commands are audited, what an entry keeps (secrets redacted, no
results), and that `audit_log` is append-only in the code: one module touches it, with inserts
and finds only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.admin import audit_core
from services.admin.cli import build_parser
from shared.errors import InvalidRequest

REPO = Path(__file__).resolve().parents[3]
NOW = 1_764_000_000_000
ANA = audit_core.Operator(name="ana", os_user="deploy", host="ops-1", remote_address="203.0.113.7")
API_KEY = "hw_live_" + "A" * 32


def _args(*argv: str) -> dict[str, object]:
    return vars(build_parser().parse_args(list(argv)))


def test_every_command_that_changes_something_is_audited_and_reads_are_not() -> None:
    changing = [
        ("accounts", "create"),
        ("accounts", "suspend"),
        ("accounts", "update"),
        ("accounts", "erase"),
        ("wabas", "register"),
        ("numbers", "register"),
        ("keys", "issue"),
        ("keys", "revoke"),
        ("credits", "topup"),
        ("templates", "sync"),
        ("tokens", "rotate"),
        ("dlq", "replay"),
        ("webhooks", "create"),
    ]  # a command added later is audited by default
    for group, command in changing:
        assert audit_core.is_audited(group, command, {}), (group, command)
    for group, command in audit_core.READ_ONLY:
        assert not audit_core.is_audited(group, command, {})
    assert not audit_core.is_audited("dlq", "replay", {"dry_run": True})
    assert not audit_core.is_audited("audit", "list", {})


def test_an_entry_says_who_what_target_when_where_and_the_outcome() -> None:
    args = _args(
        "numbers",
        "register",
        "--account",
        "acc_1",
        "--waba-id",
        "102290129340398",
        "--phone-number-id",
        "109731225428301",
        "--display-phone-number",
        "15550001001",
        "--access-token-file",
        "/home/ana/EAA-secret.token",
    )
    doc = audit_core.entry(
        entry_id="aud_1",
        operator=ANA,
        group="numbers",
        command="register",
        arguments=args,
        result={"phone_number_id": "109731225428301"},
        error=None,
        now_ms=NOW,
    )
    assert doc["_id"] == "aud_1" and doc["command"] == "numbers register"
    assert doc["operator"] == {
        "name": "ana",
        "os_user": "deploy",
        "host": "ops-1",
        "remote_address": "203.0.113.7",
    }
    assert doc["target"] == {
        "account_id": "acc_1",
        "waba_id": "102290129340398",
        "phone_number_id": "109731225428301",
    }
    # (the token itself never is an argument: hala reads it from a file or stdin)
    assert doc["arguments"]["access_token_file"] == "[redacted]"
    assert "EAA-secret" not in repr(doc)
    assert doc["outcome"] == "ok" and "error" not in doc
    assert int(doc["at"].timestamp() * 1000) == NOW


def test_a_failed_attempt_is_recorded_with_its_error_and_a_full_api_key_keeps_its_prefix() -> None:
    args = _args("keys", "revoke", API_KEY)
    doc = audit_core.entry(
        entry_id="aud_2",
        operator=ANA,
        group="keys",
        command="revoke",
        arguments=args,
        result=None,
        error=InvalidRequest("no such key", code="unknown_key"),
        now_ms=NOW,
    )
    assert doc["outcome"] == "error"
    assert doc["error"] == {"code": "unknown_key", "message": "no such key"}
    assert doc["arguments"]["key"] == API_KEY[:16] + "…"
    assert API_KEY not in repr(doc)


def test_a_created_account_is_the_target_and_results_are_never_kept() -> None:
    args = _args("keys", "issue", "--account", "acc_9")
    doc = audit_core.entry(
        entry_id="aud_3",
        operator=ANA,
        group="keys",
        command="issue",
        arguments=args,
        result={"api_key": API_KEY, "key_id": "ab12", "account_id": "acc_9"},
        error=None,
        now_ms=NOW,
    )
    assert doc["target"] == {"account_id": "acc_9", "key_id": "ab12"}
    assert API_KEY not in repr(doc)
    created = audit_core.target({}, {"_id": "acc_new", "name": "Demo"})
    assert created == {"account_id": "acc_new"}


def test_the_operator_is_hala_operator_else_the_os_user_and_ssh_gives_the_address() -> None:
    assert (
        audit_core.operator(
            configured="ana",
            os_user="deploy",
            host="h",
            ssh_connection="198.51.100.4 52000 10.0.0.5 22",
        ).label
        == "ana@h"
    )
    local = audit_core.operator(configured=None, os_user="deploy", host="h", ssh_connection=None)
    assert (local.name, local.remote_address) == ("deploy", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - 86_400_000),
        ("7d", NOW - 7 * 86_400_000),
        ("90m", NOW - 90 * 60_000),
        ("2025-11-24", 1_763_942_400_000),
        ("2025-11-24T16:00:00+04:00", 1_763_985_600_000),
    ],
)
def test_since_takes_a_date_or_a_span(text: str, expected: int) -> None:
    assert audit_core.since_ms(text, NOW) == expected


def test_since_refuses_anything_else() -> None:
    with pytest.raises(InvalidRequest):
        audit_core.since_ms("last tuesday", NOW)


def test_audit_log_is_append_only_in_the_code() -> None:
    """One module touches `audit_log` (services/admin/audit.py), with insert_one and find only;
    elsewhere it appears only where collections are declared and indexed."""
    users = {}
    for path in [
        *REPO.glob("services/**/*.py"),
        *REPO.glob("shared/**/*.py"),
        *REPO.glob("tools/**/*.py"),
        *REPO.glob("deploy/**/*.py"),
        *REPO.glob("bench/**/*.py"),
    ]:
        text = path.read_text()
        if "AUDIT_LOG" in text or "audit_log" in text:
            users[str(path.relative_to(REPO))] = text
    assert set(users) <= {
        "shared/collections.py",
        "services/admin/audit.py",
        "services/admin/audit_core.py",
        "services/admin/commands.py",
        "services/admin/cli.py",
    }, set(users)
    operations = set(re.findall(r"\[AUDIT_LOG\]\s*\.(\w+)", users["services/admin/audit.py"]))
    assert operations == {"insert_one", "find"}
    for name, text in users.items():
        if name != "services/admin/audit.py":  # the others only declare or index it
            assert "[AUDIT_LOG]" not in text and 'audit_log"]' not in text, name


def test_an_accounts_profile_is_not_kept_in_the_log() -> None:
    args = _args(
        "accounts",
        "create",
        "--name",
        "Ana Lima",
        "--email",
        "ana@x.example",
        "--phone",
        "+971501234567",
        "--business-name",
        "Lima LLC",
        "--fb-business-manager-id",
        "123456789012",
    )
    doc = audit_core.entry(
        entry_id="aud_4",
        operator=ANA,
        group="accounts",
        command="create",
        arguments=args,
        result={"_id": "acc_5"},
        error=None,
        now_ms=NOW,
    )
    for personal in ("Ana Lima", "ana@x.example", "+971501234567", "Lima LLC"):
        assert personal not in repr(doc)
    assert doc["arguments"]["name"] == "[personal data]"
    assert doc["arguments"]["fb_business_manager_id"] == "123456789012"
    # A key's or a WABA's name is not personal: kept.
    key = audit_core.entry(
        entry_id="aud_5",
        operator=ANA,
        group="keys",
        command="issue",
        arguments=_args("keys", "issue", "--account", "acc_5", "--name", "backend"),
        result=None,
        error=None,
        now_ms=NOW,
    )
    assert key["arguments"]["name"] == "backend"
