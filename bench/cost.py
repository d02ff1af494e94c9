"""What a message costs the machine: CPU per process, database round trips and Kafka requests,
over a window of traffic, divided by the messages the window carried.

- CPU: user + system time of every process of the pipeline (/proc/<pid>/stat), Kafka's JVM and
  the database server included (their pids from the infrastructure's run directory). On the
  shared broker and database of a busy machine their figures include other people's clients:
  `run_all.py --own-infra` gives the run a broker and database of its own.
- Database round trips: each service counts the commands its MongoDB client sends
  (`hala_mongodb_commands_total{command}`, a PyMongo CommandListener in `shared/mongo.py`);
  scraped from every service's /metrics before and after. Exact, and per service.
- Kafka requests: counted by the broker (JMX `kafka.network:type=RequestMetrics,
  name=RequestsPerSec`, the `Count` of every request type), read through
  `bench/jmx/RequestCounts.java` when the broker serves JMX (`KAFKA_JMX_PORT` in
  `deploy/local/infra.sh`, which `--own-infra` sets). Exact for the whole broker, so the
  broker's own requests (its heartbeats to its controller) are in it, and, on a shared
  broker, everybody's. Without JMX, not measured.

Figures are amortised: the window runs from the first request to the moment every message is
stored as delivered, idle polling included. An idle window of the same processes is measured
too (`idle_per_s`), so what the fixed overhead costs can be told from what each message costs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT, cpu_seconds, infra_pids, infra_run_dir, log, machine_ticks, scrape

# The targets, per message, amortised.
TARGET_CPU_MS = 4.0
TARGET_DB_OPS = 3.0
TARGET_KAFKA_REQUESTS = 5.0
JMX_SOURCE = ROOT / "bench" / "jmx" / "RequestCounts.java"
_JMX_PORT = re.compile(r"-Dcom\.sun\.management\.jmxremote\.port=(\d+)")


class BrokerRequests:
    """Snapshots of the broker's request counts, by request type (a JVM kept running)."""

    def __init__(self, port: int, user: str, password_file: Path) -> None:
        self._command = ["java", str(JMX_SOURCE), str(port), user, str(password_file)]
        self._proc: subprocess.Popen[str] | None = None

    @classmethod
    def discover(cls) -> BrokerRequests | None:
        """The local broker's JMX, when infra.sh started it with KAFKA_JMX_PORT."""
        pid = infra_pids().get("kafka")
        password = infra_run_dir() / "secrets" / "jmx" / "hala-monitor.password"
        if pid is None or not password.exists() or not shutil.which("java"):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        found = _JMX_PORT.search(cmdline)
        return cls(int(found.group(1)), "hala-monitor", password) if found else None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().strip()
        if first != "ready":
            error = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"JMX reader did not start: {first!r} {error[-500:]}")

    def snapshot(self) -> dict[str, int]:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        counts: dict[str, int] = {}
        while (line := self._proc.stdout.readline().strip()) != ".":
            if not line:
                raise RuntimeError("JMX reader stopped")
            name, value = line.rsplit(" ", 1)
            counts[name] = int(value)
        return counts

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (PostgreSQL: one backend process per
    connection, whose time the postmaster's own figure leaves out)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += cpu_seconds(int(stat.parent.name))
    return total


# Processes whose children do their work.
TREES = {"postgres"}


def _db_commands(values: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        name, _, labels = key.partition("{")
        if name == "hala_mongodb_commands_total":
            command = labels.rstrip("}").partition("command=")[2].split(",")[0]
            out[command] = out.get(command, 0.0) + value
    return out


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]
    machine_busy_s: float
    db: dict[str, dict[str, float]]  # service -> command -> count
    kafka: dict[str, int] | None


@dataclass
class CostMeter:
    """Cost of a window over `pids` (name -> pid); `metrics` (name -> ops URL) are scraped for
    database commands."""

    pids: dict[str, int]
    metrics: dict[str, str]
    broker: BrokerRequests | None = None
    _ticks: float = field(default_factory=lambda: float(os.sysconf("SC_CLK_TCK")))

    @classmethod
    def for_platform(cls, platform: Any, names: list[str]) -> CostMeter:
        procs = [platform.procs[n] for n in names if n in platform.procs]
        pids = {p.name: p.pid for p in procs if p.process is not None}
        pids.update(infra_pids())
        metrics = {
            p.name: p.ops_url for p in procs if p.process is not None and p.kind != "metasim"
        }
        broker = BrokerRequests.discover()
        if broker is not None:
            try:
                broker.start()
            except (OSError, RuntimeError) as exc:
                log(f"cost: broker requests not measured: {exc}")
                broker = None
        return cls(pids, metrics, broker)

    async def snapshot(self) -> Snapshot:
        db = {}
        for name, url in self.metrics.items():
            try:
                db[name] = _db_commands(await scrape(url))
            except Exception as exc:  # a service that stopped answering: say so, count none
                log(f"cost: /metrics of {name} not read: {exc!r}")
                db[name] = {}
        kafka = await asyncio.to_thread(self.broker.snapshot) if self.broker else None
        busy, _ = machine_ticks()
        return Snapshot(
            time.monotonic(),
            {
                n: tree_cpu_seconds(p) if n in TREES else cpu_seconds(p)
                for n, p in self.pids.items()
            },
            busy / self._ticks,
            db,
            kafka,
        )

    async def idle(self, seconds: float) -> dict[str, Any]:
        """Rates of a window without traffic: the fixed overhead (polling, heartbeats)."""
        before = await self.snapshot()
        await asyncio.sleep(seconds)
        after = await self.snapshot()
        elapsed = after.at - before.at
        diff = _diff(before, after)
        return {
            "seconds": round(elapsed, 1),
            "cpu_cores": {n: round(v / elapsed, 3) for n, v in diff["cpu_s"].items()},
            "db_ops_per_s": round(diff["db_total"] / elapsed, 1),
            "kafka_requests_per_s": (
                None if diff["kafka_total"] is None else round(diff["kafka_total"] / elapsed, 1)
            ),
        }

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()


# Kafka's RequestMetrics count each Fetch twice: as `Fetch` and as `FetchConsumer` or
# `FetchFollower`. Those two are shown but not added to the total.
FETCH_BREAKDOWN = ("FetchConsumer", "FetchFollower")


def _diff(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    cpu = {n: max(0.0, after.cpu[n] - before.cpu.get(n, 0.0)) for n in after.cpu}
    db = {}
    for service, counts in after.db.items():
        was = before.db.get(service, {})
        db[service] = {c: v - was.get(c, 0.0) for c, v in counts.items() if v - was.get(c, 0.0)}
    kafka = None
    if after.kafka is not None and before.kafka is not None:
        kafka = {
            r: v - before.kafka.get(r, 0)
            for r, v in after.kafka.items()
            if v - before.kafka.get(r, 0)
        }
    return {
        "cpu_s": cpu,
        "db": db,
        "db_total": sum(sum(c.values()) for c in db.values()),
        "kafka": kafka,
        "kafka_total": None
        if kafka is None
        else sum(v for r, v in kafka.items() if r not in FETCH_BREAKDOWN),
        "machine_busy_s": after.machine_busy_s - before.machine_busy_s,
    }


def per_message(
    before: Snapshot, after: Snapshot, messages: int, idle: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The window's cost divided by its messages; with `idle`, also net of the idle rates."""
    elapsed = after.at - before.at
    diff = _diff(before, after)
    n = max(1, messages)
    cpu_ms = {name: round(s * 1000 / n, 2) for name, s in diff["cpu_s"].items()}
    total_cpu = sum(diff["cpu_s"].values())
    result: dict[str, Any] = {
        "messages": messages,
        "seconds": round(elapsed, 1),
        "rate_per_s": round(messages / elapsed, 1) if elapsed else None,
        "cpu_ms": {**cpu_ms, "total": round(total_cpu * 1000 / n, 2)},
        # everything else on the machine (the load generator, other people's work)
        "machine_other_cpu_ms": round(max(0.0, diff["machine_busy_s"] - total_cpu) * 1000 / n, 2),
        "db_ops": round(diff["db_total"] / n, 2),
        "db_ops_by_service": {s: round(sum(c.values()) / n, 2) for s, c in diff["db"].items()},
        "db_ops_by_command": _by_command(diff["db"], n),
        "kafka_requests": (
            None if diff["kafka_total"] is None else round(diff["kafka_total"] / n, 2)
        ),
        "kafka_requests_by_type": (
            None
            if diff["kafka"] is None
            else dict(
                sorted(
                    ((r, round(v / n, 2)) for r, v in diff["kafka"].items()), key=lambda kv: -kv[1]
                )
            )
        ),
    }
    if idle is not None:
        idle_cpu = sum(idle["cpu_cores"].values()) * elapsed
        result["net_of_idle"] = {
            "cpu_ms_total": round(max(0.0, total_cpu - idle_cpu) * 1000 / n, 2),
            "db_ops": round(max(0.0, diff["db_total"] - idle["db_ops_per_s"] * elapsed) / n, 2),
            "kafka_requests": (
                None
                if diff["kafka_total"] is None or idle["kafka_requests_per_s"] is None
                else round(
                    max(0.0, diff["kafka_total"] - idle["kafka_requests_per_s"] * elapsed) / n, 2
                )
            ),
        }
    return result


def _by_command(db: dict[str, dict[str, float]], n: int) -> dict[str, float]:
    total: dict[str, float] = {}
    for counts in db.values():
        for command, v in counts.items():
            total[command] = total.get(command, 0.0) + v
    return {c: round(v / n, 2) for c, v in sorted(total.items(), key=lambda kv: -kv[1])}


def rows(label: str, cost: dict[str, Any], shared_infra: bool) -> list[dict[str, Any]]:
    """The table's cost-per-message rows, each with its target and met / not met."""
    if not cost:
        return [
            {
                "benchmark": f"{label} CPU ms/msg",
                "figures": "not measured",
                "target": f"total <= {TARGET_CPU_MS:g} ms",
                "met": False,
            }
        ]
    cpu = cost["cpu_ms"]
    names = [
        n
        for n in (
            "ingest",
            "billing",
            "sender",
            "status",
            "notify",
            "metasim",
            "kafka",
            "ferretdb",
            "postgres",
        )
        if n in cpu
    ]
    note = " (shared broker/db: others' load in kafka, ferretdb)" if shared_infra else ""
    cpu_met = cpu["total"] <= TARGET_CPU_MS
    db_met = cost["db_ops"] <= TARGET_DB_OPS
    kafka = cost["kafka_requests"]
    top_db = ", ".join(f"{c} {v}" for c, v in list(cost["db_ops_by_command"].items())[:4])
    by_service = ", ".join(f"{s} {v}" for s, v in cost["db_ops_by_service"].items())
    net = cost.get("net_of_idle") or {}

    def net_of_idle(key: str) -> str:
        return f"; {net[key]} net of idle" if net.get(key) is not None else ""

    out = [
        {
            "benchmark": f"{label} CPU ms/msg",
            "figures": f"total {cpu['total']}{net_of_idle('cpu_ms_total')}: "
            + " ".join(f"{n} {cpu[n]}" for n in names)
            + f" @ {cost['rate_per_s']}/s, {cost['messages']} msgs{note}",
            "target": f"total <= {TARGET_CPU_MS:g} ms",
            "met": cpu_met,
        },
        {
            "benchmark": f"{label} DB ops/msg",
            "figures": f"{cost['db_ops']}{net_of_idle('db_ops')} ({by_service}; {top_db})",
            "target": f"<= {TARGET_DB_OPS:g}",
            "met": db_met,
        },
    ]
    if kafka is None:
        out.append(
            {
                "benchmark": f"{label} Kafka req/msg",
                "figures": "not measured (broker without JMX: run_all.py --own-infra)",
                "target": f"<= {TARGET_KAFKA_REQUESTS:g}",
                "met": False,
            }
        )
    else:
        types = [
            (r, v)
            for r, v in (cost["kafka_requests_by_type"] or {}).items()
            if r not in FETCH_BREAKDOWN
        ]
        top = ", ".join(f"{r} {v}" for r, v in types[:5])
        out.append(
            {
                "benchmark": f"{label} Kafka req/msg",
                "figures": f"{kafka}{net_of_idle('kafka_requests')} ({top}; broker's count){note}",
                "target": f"<= {TARGET_KAFKA_REQUESTS:g}",
                "met": kafka <= TARGET_KAFKA_REQUESTS,
            }
        )
    return out
