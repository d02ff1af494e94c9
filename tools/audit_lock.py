"""Known vulnerabilities in the locked Python dependencies, by pip-audit (run by `make lint`).

    python tools/audit_lock.py requirements-lock.txt [--strict]

pip-audit reads the hashed lock as it is (`--disable-pip`: nothing is resolved or installed) and
asks its vulnerability service (`PIP_AUDIT_VULNERABILITY_SERVICE`: pypi by default, osv, esms)
about every pinned version. Any known vulnerability fails, always.

A dependency the service could not answer for is not a pass: pip-audit lists it as skipped
("not found on PyPI" when the service answers 404, as a PyPI mirror without the per-version
JSON API does), and an unreachable service is an error. Both are printed loudly; they fail only
with `--strict` (`make lint AUDIT_STRICT=1`), so that lint still runs where no vulnerability
service can be reached, and CI with network access can demand a real audit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BANNER = "!" * 78


def audit(lock: Path) -> tuple[int, dict[str, Any] | None, str]:
    """pip-audit's exit code, its JSON report (None when it produced none) and its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--disable-pip",
                "--requirement",
                str(lock),
                "--format",
                "json",
                "--output",
                str(report),
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        data = json.loads(report.read_text()) if report.exists() and report.stat().st_size else None
    return done.returncode, data, done.stderr


def summarise(data: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """(vulnerabilities as lines, skipped dependencies as lines, how many were audited)."""
    vulnerable, skipped, audited = [], [], 0
    for dep in data.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            vulnerable.append(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    return vulnerable, skipped, audited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument(
        "--strict", action="store_true", help="also fail when dependencies could not be audited"
    )
    args = parser.parse_args(argv)
    code, data, stderr = audit(args.lock)
    if data is None:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}"
        print(
            f"{BANNER}\npip-audit could not audit {args.lock}: no vulnerability service "
            f"answered.\n  {reason}\n{BANNER}",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    vulnerable, skipped, audited = summarise(data)
    if vulnerable:
        print(
            f"pip-audit: {len(vulnerable)} known vulnerabilities in {args.lock}:", file=sys.stderr
        )
        for line in vulnerable:
            print(f"  {line}", file=sys.stderr)
        return 1
    if code != 0:  # not a vulnerability, not a skip: pip-audit itself failed
        print(f"pip-audit failed (exit code {code}):\n{stderr}", file=sys.stderr)
        return 1
    if skipped:
        verdict = (
            "Failing (--strict)."
            if args.strict
            else "Not failing: --strict (make lint AUDIT_STRICT=1) fails here."
        )
        print(
            f"{BANNER}\npip-audit audited {audited} of {audited + len(skipped)} locked "
            f"dependencies; {len(skipped)} could NOT be checked (the vulnerability service "
            "did not know them), e.g.\n  " + "\n  ".join(skipped[:3]) + f"\n{verdict}\n{BANNER}",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    print(f"pip-audit: no known vulnerabilities in the {audited} locked dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
