"""Prometheus material under deploy/ is checked by promtool (Debian's prometheus package, which
`make test` installs): the configs parse, the alert rules parse, and the rules' own unit tests
(deploy/prometheus/alerts_test.yml) pass."""

import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_prometheus_configs_are_valid(config: str) -> None:
    result = _promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
