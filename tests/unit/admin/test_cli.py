"""`hala`'s argument parsing and output, without a database."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from services.admin.cli import build_parser, main, read_access_token, render
from shared.errors import ServiceError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_accounts_create_takes_every_profile_field() -> None:
    args = parse(
        "accounts",
        "create",
        "--name",
        "Demo",
        "--email",
        "a@b.co",
        "--phone",
        "+971501234567",
        "--business-name",
        "Demo LLC",
        "--fb-business-manager-id",
        "123456789012",
        "--low-balance-threshold",
        "500",
    )
    assert (args.group, args.command) == ("accounts", "create")
    assert args.business_name == "Demo LLC" and args.fb_business_manager_id == "123456789012"
    assert args.low_balance_threshold == 500 and args.json is False


def test_the_low_balance_threshold_has_a_default() -> None:
    args = parse(
        "accounts",
        "create",
        "--name",
        "D",
        "--email",
        "a@b.co",
        "--phone",
        "+1",
        "--business-name",
        "D",
        "--fb-business-manager-id",
        "1",
    )
    assert args.low_balance_threshold == 1_000_000


@pytest.mark.parametrize(
    "argv",
    [
        ("--json", "accounts", "list"),
        ("accounts", "list", "--json"),
    ],
)
def test_json_output_is_accepted_before_or_after_the_command(argv: tuple[str, ...]) -> None:
    assert parse(*argv).json is True


def test_numbers_register_defaults_throughput_and_tier() -> None:
    args = parse(
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
        "--access-token",
        "-",
    )
    assert args.account_id == "acc_1" and args.throughput_mps == 80
    assert args.messaging_limit == "TIER_UNLIMITED" and args.access_token == "-"


REGISTER = (
    "numbers",
    "register",
    "--account",
    "a",
    "--waba-id",
    "1",
    "--phone-number-id",
    "2",
    "--display-phone-number",
    "3",
)


def test_an_access_token_in_argv_is_refused_with_the_ways_to_give_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*REGISTER, "--access-token", "EAAsecret")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "shows in `ps`" in err and "--access-token-file" in err
    assert "EAAsecret" not in err  # not echoed either


def test_the_access_token_is_read_from_stdin_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("EAA-from-stdin\n"))
    assert read_access_token(parse(*REGISTER, "--access-token", "-")) == "EAA-from-stdin"
    token_file = tmp_path / "token"
    token_file.write_text("EAA-from-file\n")
    assert (
        read_access_token(parse(*REGISTER, "--access-token-file", str(token_file)))
        == "EAA-from-file"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ServiceError) as info:
        read_access_token(parse(*REGISTER, "--access-token", "-"))
    assert info.value.code == "missing_access_token"
    with pytest.raises(SystemExit):  # one way, and only one, is required
        parse(*REGISTER)


@pytest.mark.parametrize(
    "argv",
    [
        (
            "numbers",
            "register",
            "--account",
            "a",
            "--waba-id",
            "1",
            "--phone-number-id",
            "2",
            "--display-phone-number",
            "3",
            "--access-token",
            "-",
            "--messaging-limit",
            "TIER_HUGE",
        ),
        ("credits", "topup", "--account", "a", "--amount", "-5"),
        ("credits", "topup", "--account", "a", "--amount", "1.5"),
        ("ledger", "show", "--account", "a", "--limit", "0"),
        ("accounts", "suspend"),
        ("accounts", "update", "acc_1", "--customer-service-window-check", "maybe"),
        ("keys", "issue"),
        ("nothing",),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_every_documented_command_parses() -> None:
    for argv in (
        ("accounts", "suspend", "acc_1"),
        ("accounts", "activate", "acc_1"),
        ("accounts", "show", "acc_1"),
        ("accounts", "update", "acc_1", "--customer-service-window-check", "off"),
        (
            "wabas",
            "register",
            "--account",
            "a",
            "--waba-id",
            "1",
            "--portfolio-id",
            "2",
            "--name",
            "W",
        ),
        ("numbers", "list", "--account", "a"),
        ("keys", "issue", "--account", "a", "--name", "ci"),
        ("keys", "revoke", "hw_live_abcd1234"),
        ("keys", "list", "--account", "a"),
        ("keys", "generate-encryption-key"),
        ("credits", "topup", "--account", "a", "--amount", "5000000", "--note", "first"),
        ("balance", "show", "--account", "a"),
        ("ledger", "show", "--account", "a"),
        (
            "templates",
            "sync",
            "--waba-id",
            "1",
            "--graph-url",
            "http://x",
            "--graph-version",
            "v23.0",
        ),
        ("tokens", "rotate"),
    ):
        args = parse(*argv)
        assert args.group == argv[0]


def test_generating_an_encryption_key_needs_no_connection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "generate-encryption-key"]) == 0
    key = capsys.readouterr().out.strip()
    from cryptography.fernet import Fernet

    Fernet(key.encode())  # a valid Fernet key
    assert main(["keys", "generate-encryption-key", "--json"]) == 0
    assert set(orjson.loads(capsys.readouterr().out)) == {"key"}


def test_json_rendering_handles_dates_and_human_rendering_nests() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert orjson.loads(render({"at": when}, True)) == {"at": "2026-01-02T03:04:05+00:00"}
    text = render({"account": {"_id": "acc_1"}, "wabas": [], "at": when}, False)
    assert "account:\n  _id: acc_1" in text and "at: 2026-01-02T03:04:05+00:00" in text
    assert render([], False) == "(none)"


def test_webhooks_create_takes_its_events_as_a_comma_separated_list() -> None:
    args = parse(
        "webhooks",
        "create",
        "--account",
        "acc_1",
        "--url",
        "https://h.example.com/",
        "--events",
        "message.*, balance.low",
        "--format",
        "meta",
    )
    assert (args.group, args.command, args.account_id) == ("webhooks", "create", "acc_1")
    assert args.events == ["message.*", "balance.low"] and args.format == "meta"
    assert (
        parse("webhooks", "create", "--account", "a", "--url", "u", "--events", "*").format
        == "standard"
    )


def test_webhooks_update_gives_only_what_was_said() -> None:
    args = parse("webhooks", "update", "we_1", "--account", "acc_1", "--enable")
    assert (args.endpoint_id, args.enabled, args.url, args.events) == ("we_1", True, None, None)
    assert parse("webhooks", "update", "we_1", "--account", "a", "--disable").enabled is False
    assert parse("webhooks", "update", "we_1", "--account", "a", "--url", "u").enabled is None


def test_webhooks_replay_takes_a_time_range_or_an_event_id() -> None:
    args = parse(
        "webhooks",
        "replay",
        "we_1",
        "--account",
        "a",
        "--since",
        "2025-11-24T10:00:00Z",
        "--until",
        "2025-11-24T12:00:00+02:00",
    )
    assert (args.since, args.until, args.event_id) == (1_763_978_400_000, 1_763_978_400_000, None)
    # a time without a zone is UTC
    assert (
        parse(
            "webhooks", "replay", "we_1", "--account", "a", "--since", "2025-11-24T10:00:00"
        ).since
        == 1_763_978_400_000
    )
    assert (
        parse("webhooks", "replay", "we_1", "--account", "a", "--event-id", "evt_1").event_id
        == "evt_1"
    )


def test_accounts_update_takes_alert_emails_and_a_threshold() -> None:
    args = parse(
        "accounts",
        "update",
        "acc_1",
        "--alert-emails",
        "a@x.example,b@y.example",
        "--low-balance-threshold",
        "2500000",
    )
    assert args.alert_emails == "a@x.example,b@y.example"
    assert args.low_balance_threshold == 2_500_000
    assert parse("accounts", "update", "acc_1").low_balance_threshold is None


@pytest.mark.parametrize(
    "argv",
    [
        ("webhooks", "list"),  # --account is required
        ("webhooks", "show", "--account", "a"),  # the endpoint id too
        ("webhooks", "create", "--account", "a", "--url", "u"),
        ("webhooks", "create", "--account", "a", "--url", "u", "--events", "*", "--format", "xml"),
        ("webhooks", "update", "we_1", "--account", "a", "--enable", "--disable"),
        ("webhooks", "replay", "we_1", "--account", "a"),
        (
            "webhooks",
            "replay",
            "we_1",
            "--account",
            "a",
            "--since",
            "2025-11-24",
            "--event-id",
            "e",
        ),
        ("webhooks", "replay", "we_1", "--account", "a", "--since", "yesterday"),
        ("webhooks", "deliveries", "we_1", "--account", "a", "--limit", "0"),
        ("accounts", "update", "acc_1", "--low-balance-threshold", "-1"),
    ],
)
def test_bad_webhook_arguments_are_refused_by_the_parser(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


@pytest.mark.parametrize(
    ("spec", "burst", "stored"),
    [
        ("50/s", None, {"per_second": 50.0, "burst": 50}),
        ("600/min", 20, {"per_second": 10.0, "burst": 20}),
        ("90/h", None, {"per_second": 0.025, "burst": 90}),
        ("2.5/s", None, {"per_second": 2.5, "burst": 3}),
        (" 10 / second ", 1, {"per_second": 10.0, "burst": 1}),
        ("default", None, "default"),
    ],
)
def test_a_rate_limit_is_n_per_unit_with_a_burst_of_n_unless_given(
    spec: str, burst: int | None, stored: object
) -> None:
    from services.admin import core

    assert core.rate_limit(spec, burst) == stored


@pytest.mark.parametrize(
    ("spec", "burst"),
    [
        ("fast", None),
        ("50", None),
        ("0/s", None),
        ("50/day", None),
        ("-5/s", None),
        ("default", 3),
        ("5/s", 0),
    ],
)
def test_an_unreadable_rate_limit_is_refused(spec: str, burst: int | None) -> None:
    from services.admin import core

    with pytest.raises(core.InvalidRequest):
        core.rate_limit(spec, burst)


def test_limits_are_options_of_accounts_update_and_keys_issue_and_update() -> None:
    args = parse(
        "accounts",
        "update",
        "acc_1",
        "--rate-limit",
        "50/s",
        "--rate-limit-burst",
        "80",
        "--max-in-flight",
        "default",
    )
    assert (args.rate_limit, args.rate_limit_burst, args.max_in_flight) == ("50/s", 80, "default")
    assert parse("keys", "issue", "--account", "a", "--rate-limit", "5/s").rate_limit == "5/s"
    assert parse("keys", "update", "hw_live_abc", "--rate-limit", "default").key == "hw_live_abc"
    with pytest.raises(SystemExit):
        parse("keys", "update", "hw_live_abc")  # nothing to change
