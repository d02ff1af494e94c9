"""`run_all.py --e2e-levels`: the fixed rates are parsed and kept by bench_e2e (pure)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_e2e  # noqa: E402 (bench/ is put on the path above)


@pytest.fixture(autouse=True)
def default_levels() -> Iterator[None]:
    seconds = bench_e2e.FIXED_LEVEL_S
    yield
    bench_e2e.configure(None, seconds)


def test_levels_are_parsed_in_order() -> None:
    assert bench_e2e.parse_levels("24,32") == [24.0, 32.0]
    assert bench_e2e.parse_levels(" 12.5 , 8,") == [12.5, 8.0]


@pytest.mark.parametrize("text", ["", ",", "0,24", "24,-1"])
def test_levels_that_are_not_positive_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="positive rates"):
        bench_e2e.parse_levels(text)


def test_configure_sets_the_levels_and_none_restores_the_ramp() -> None:
    bench_e2e.configure([24.0, 32.0], 10.0)
    assert bench_e2e.FIXED_LEVELS == [24.0, 32.0] and bench_e2e.FIXED_LEVEL_S == 10.0
    bench_e2e.configure(None)
    assert bench_e2e.FIXED_LEVELS == []  # the default: the ramp and shares of its capacity


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--e2e-levels", "0"], "positive rates"),
        (["--e2e-level-seconds", "5"], "needs --e2e-levels"),
    ],
)
def test_run_all_refuses_bad_level_options_before_starting_anything(
    args: list[str], error: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "e2e", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and error in done.stderr
