"""The benchmark's cost-per-message arithmetic (bench/cost.py): pure, on made-up snapshots."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cost


def _snapshot(
    at: float,
    cpu: dict[str, float],
    db: dict[str, dict[str, float]],
    kafka: dict[str, int] | None,
    busy: float,
) -> cost.Snapshot:
    return cost.Snapshot(at=at, cpu=cpu, machine_busy_s=busy, db=db, kafka=kafka)


def test_cost_per_message_divides_each_process_and_counts_a_fetch_once() -> None:
    before = _snapshot(
        100.0,
        {"ingest": 1.0, "kafka": 10.0},
        {"status": {"insert": 5, "find": 2}},
        {"Produce": 10, "Fetch": 100, "FetchConsumer": 100},
        busy=50.0,
    )
    after = _snapshot(
        110.0,
        {"ingest": 1.2, "kafka": 10.6},
        {"status": {"insert": 105, "find": 2, "update": 100}},
        {"Produce": 110, "Fetch": 300, "FetchConsumer": 300},
        busy=51.0,
    )
    found = cost.per_message(before, after, 100)
    assert found["cpu_ms"] == {"ingest": 2.0, "kafka": 6.0, "total": 8.0}
    assert found["machine_other_cpu_ms"] == 2.0  # 1 s busy, 0.8 s of it ours
    assert found["db_ops"] == 2.0 and found["db_ops_by_command"] == {"insert": 1.0, "update": 1.0}
    assert found["kafka_requests"] == 3.0  # Produce 1 + Fetch 2; FetchConsumer not again
    assert found["rate_per_s"] == 10.0


def test_net_of_idle_takes_the_idle_rates_over_the_window_away() -> None:
    before = _snapshot(0.0, {"kafka": 0.0}, {"status": {"find": 0}}, {"Fetch": 0}, busy=0.0)
    after = _snapshot(10.0, {"kafka": 2.0}, {"status": {"find": 300}}, {"Fetch": 500}, busy=2.0)
    idle = {"cpu_cores": {"kafka": 0.1}, "db_ops_per_s": 10.0, "kafka_requests_per_s": 20.0}
    net = cost.per_message(before, after, 100, idle)["net_of_idle"]
    assert net == {"cpu_ms_total": 10.0, "db_ops": 2.0, "kafka_requests": 3.0}


def test_rows_say_met_against_the_issue_targets_and_not_measured_without_jmx() -> None:
    before = _snapshot(0.0, {"kafka": 0.0}, {"status": {"find": 0}}, None, busy=0.0)
    after = _snapshot(10.0, {"kafka": 0.3}, {"status": {"find": 200}}, None, busy=0.3)
    rows = cost.rows("x", cost.per_message(before, after, 100), shared_infra=False)
    assert [r["met"] for r in rows] == [True, True, False]
    assert "not measured" in rows[2]["figures"]
    assert cost.rows("x", {}, shared_infra=False)[0]["met"] is False
