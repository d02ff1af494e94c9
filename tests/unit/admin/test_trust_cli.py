"""`hala`'s contact list and hold commands parse as documented, are audited (reads are not),
and their pure parts read keyword lists and rule overrides as documented."""

from __future__ import annotations

import pytest

from services.admin import audit_core, cli, trust
from shared.errors import InvalidRequest


def parse(*argv: str) -> object:
    return cli.build_parser().parse_args(list(argv))


def test_the_commands_parse_and_changes_are_audited() -> None:
    args = parse(
        "suppressions",
        "add",
        "--account",
        "acc_1",
        "--phone-number-id",
        "1",
        "--recipient",
        "+447911123456",
        "--note",
        "complaint",
    )
    assert (args.group, args.command, args.recipient, args.note) == (  # type: ignore[attr-defined]
        "suppressions",
        "add",
        "+447911123456",
        "complaint",
    )
    release = parse("accounts", "release", "acc_1", "--reason", "reviewed")
    assert release.reason == "reviewed"  # type: ignore[attr-defined]
    for argv, audited in (
        (("suppressions", "list", "--account", "a"), False),
        (("blocks", "list", "--account", "a"), False),
        (("blocks", "add", "--account", "a", "--recipient", "1"), True),
        (("accounts", "release", "a", "--reason", "r"), True),
        (("accounts", "update", "a", "--opt-out-keywords", "STOP"), True),
    ):
        ns = vars(parse(*argv))
        assert audit_core.is_audited(ns["group"], ns["command"], ns) is audited, argv
    with pytest.raises(SystemExit):
        parse("accounts", "release", "acc_1")  # a release says why


def test_keyword_lists_read_default_and_empty() -> None:
    assert trust.keyword_list("STOP, Fin ,,") == ["STOP", "Fin"]
    assert trust.keyword_list("default") is None and trust.keyword_list("") == []


def test_rule_overrides_are_set_replaced_and_dropped() -> None:
    rules = trust.guard_rule_overrides(
        None, ["failure_rate.threshold=0.8", "volume_spike.minimum=5000"]
    )
    assert rules == {"failure_rate": {"threshold": 0.8}, "volume_spike": {"minimum": 5000}}
    rules = trust.guard_rule_overrides(
        rules, ["volume_spike=default", "failure_rate.window_seconds=600"]
    )
    assert rules == {"failure_rate": {"threshold": 0.8, "window_seconds": 600}}
    for bad in (
        "nope.threshold=1",
        "failure_rate.colour=1",
        "failure_rate.threshold=x",
        "failure_rate.threshold=-1",
    ):
        with pytest.raises(InvalidRequest):
            trust.guard_rule_overrides(None, [bad])


def test_an_operators_number_is_international() -> None:
    assert trust.recipient("447911123456") == trust.recipient("+44 7911 123456")
    with pytest.raises(InvalidRequest) as refused:
        trust.recipient("07911 123456")
    assert refused.value.code == "invalid_phone_number"
