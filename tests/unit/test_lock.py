"""The hashed lock file (requirements-lock.txt, `make lock`) covers every dependency that
pyproject.toml declares, at the declared version, and every line carries hashes; and the
audit `make lint` runs fails on a known vulnerability, and on an audit that could not be made
only when strict."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import audit_lock

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-lock.txt"
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    entries: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        match = _PINNED.match(line)
        if match:
            current = canonicalize_name(match[1])
            entries[current] = (match[2], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
        elif not line.startswith((" ", "#")) and line.strip():
            pytest.fail(f"unexpected line in the lock: {line!r}")
    return entries


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [
        Requirement(r)
        for r in [*project["dependencies"], *(r for group in extras.values() for r in group)]
    ]


def test_every_declared_dependency_is_locked_at_its_version() -> None:
    locked = _locked()
    missing = [str(r) for r in _declared() if canonicalize_name(r.name) not in locked]
    assert not missing, f"not in {LOCK.name} (run `make lock`): {missing}"
    wrong = [
        f"{r}: locked {locked[canonicalize_name(r.name)][0]}"
        for r in _declared()
        if not r.specifier.contains(locked[canonicalize_name(r.name)][0], prereleases=True)
    ]
    assert not wrong, f"{LOCK.name} disagrees with pyproject.toml (run `make lock`): {wrong}"


def test_every_locked_package_has_hashes_and_the_lock_names_no_local_path() -> None:
    locked = _locked()
    assert len(locked) > len(_declared())  # the transitive ones too
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []
    assert "--find-links" not in LOCK.read_text() and "--index-url" not in LOCK.read_text()


# --- the audit's verdicts -----------------------------------------------------------------


def _report(*deps: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(deps), "fixes": []}


CLEAN = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
VULNERABLE = {
    "name": "aiohttp",
    "version": "3.14.5",
    "vulns": [{"id": "GHSA-xxxx-yyyy-zzzz", "fix_versions": ["3.14.6"]}],
}
SKIPPED = {
    "name": "aiohttp",
    "skip_reason": "Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)",
}


@pytest.mark.parametrize(
    ("code", "report", "strict", "exit_code"),
    [
        (0, _report(CLEAN), False, 0),
        (1, _report(CLEAN, VULNERABLE), False, 1),  # a vulnerability fails, strict or not
        (0, _report(CLEAN, SKIPPED), False, 0),  # could not be checked: loud, fails only strict
        (0, _report(CLEAN, SKIPPED), True, 1),
        (1, None, False, 0),  # no service reachable
        (1, None, True, 1),
        (2, _report(CLEAN), False, 1),  # pip-audit failed otherwise
    ],
)
def test_the_audit_fails_on_vulnerabilities_and_on_no_audit_only_when_strict(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
    report: dict[str, Any] | None,
    strict: bool,
    exit_code: int,
) -> None:
    monkeypatch.setattr(audit_lock, "audit", lambda lock: (code, report, "ConnectionError: x"))
    assert audit_lock.main([str(LOCK), *(["--strict"] if strict else [])]) == exit_code
    err = capsys.readouterr().err
    if report is not None and VULNERABLE in report["dependencies"]:
        assert "GHSA-xxxx-yyyy-zzzz" in err and "3.14.6" in err
    if report is None or SKIPPED in (report or {}).get("dependencies", []):
        assert "!!!!" in err  # loud
