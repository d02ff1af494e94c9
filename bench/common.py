"""What the benchmarks share: processes on free loopback ports, the benchmark world of the Meta
simulator, seeding, wrk, Kafka and /proc helpers, and the result files.

Every service runs as its own process (`python -m services.<name>`), like in production and in
tests/e2e, against the real local Kafka and MongoDB-compatible server, as its own Kafka
principal (SASL_SSL, the ACLs the set-up grants each benchmark's prefix); each benchmark gets
its own topic prefix and database, so runs never see each other's data (or the e2e tests').
The client ports of ingest and status stay plain HTTP here: the figures are the application's,
comparable with earlier runs (TLS is measured by nothing here); /metrics is read on the ops
ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/run_all.py`: the repo is not on the path
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from shared.kafka import (  # noqa: E402
    KafkaConfig,
    group_state,
    make_producer,
    publish_all,
    topic_name,
)
from shared.messages import ALL_TOPICS, SEND_APPROVED, Topic  # noqa: E402
from shared.mongo import make_client  # noqa: E402
from shared.ports import free_loopback_port  # noqa: E402
from shared.secrets import new_key  # noqa: E402
from tests.conftest import Broker  # noqa: E402
from tests.e2e.conftest import eventually  # noqa: E402
from tools.kafka_setup import revoke  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / ".run" / "bench"
LUA_POST = ROOT / "bench" / "lua" / "post.lua"
INFRA = ROOT / "deploy" / "local" / "infra.sh"
PIDS = ROOT / ".run" / "pids"
SERVER_CORE, CLIENT_CORE = "0", "1"
APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
GRAPH_VERSION = "v24.0"
PARTITIONS = SEND_APPROVED.partitions


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes and machine -----------------------------------------------------------------------


def pinned(core: str | None, command: list[str]) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", core, *command]


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float = 1.5, within: float = 30.0) -> float:
    """Wait (bounded) for the 1-minute load average to fall below `max_load`: another engineer's
    test suite shares these two cores. Returns the load average measuring starts with."""
    deadline = time.monotonic() + within
    load = load_average()
    while load > max_load and time.monotonic() < deadline:
        time.sleep(2)
        load = load_average()
    return round(load, 2)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def infra_run_dir() -> Path:
    """The run directory of the local infrastructure the benchmarks use (its pid files, JMX
    secrets): HALA_RUN_DIR, else the one HALA_KAFKA_SECRETS_DIR (<run dir>/secrets/kafka) lies
    in, else the repository's .run."""
    if os.environ.get("HALA_RUN_DIR"):
        return Path(os.environ["HALA_RUN_DIR"])
    secrets_dir = Path(os.environ.get("HALA_KAFKA_SECRETS_DIR", ""))
    if secrets_dir.parts[-2:] == ("secrets", "kafka"):
        return secrets_dir.parent.parent
    return PIDS.parent


def infra_pids() -> dict[str, int]:
    """Kafka's and FerretDB's pids when the local script runs them (not for external ones)."""
    pids = {}
    for name in ("kafka", "ferretdb", "postgres"):  # postgres: HALA_DB_BACKEND=postgresql
        try:
            pids[name] = int((infra_run_dir() / "pids" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


class CpuMeter:
    """CPU seconds used by each process between `start` and `stop` (where the time goes), and
    how busy the whole machine was (`machine`: cores busy, everyone's processes included)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._started_at = 0.0
        self._machine = (0, 0)

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_ticks()

    def stop(self) -> dict[str, float]:
        """Cores used by each process on average over the window."""
        elapsed = max(1e-9, time.monotonic() - self._started_at)
        used = {
            name: round((cpu_seconds(pid) - self._start.get(name, 0.0)) / elapsed, 3)
            for name, pid in self.pids.items()
        }
        busy, total = machine_ticks()
        share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        used["machine"] = round(share * (os.cpu_count() or 1), 2)
        return used


class RssSampler:
    """Peak VmRSS of each process, sampled in a thread while a benchmark runs."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def wait_until_idle(
    pid: int | None, max_cores: float = 0.25, within: float = 30.0
) -> float | None:
    """Wait (bounded) until a process (the database server) uses less than `max_cores` over a
    second: work a previous benchmark left it must not be counted against the next one. Returns
    the last figure (None when there is no such process)."""
    if pid is None:
        return None
    deadline = time.monotonic() + within
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        cores = cpu_seconds(pid) - before
        if cores < max_cores or time.monotonic() > deadline:
            return round(cores, 2)


KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SSL_CA_FILE",
    "HALA_KAFKA_SECRETS_DIR",
)


def infra_env() -> dict[str, str]:
    """Broker and database addresses and credentials; the shared local infrastructure is
    started if needed (idempotent; never stopped here: other sessions use it)."""
    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URL")):
        subprocess.run([str(INFRA), "up"], check=True, capture_output=True, timeout=900)
    out = subprocess.run(
        [str(INFRA), "env"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    env = dict(line.split("=", 1) for line in out.split() if "=" in line)
    env.update({k: os.environ[k] for k in (*KAFKA_ENV, "MONGODB_URL") if os.environ.get(k)})
    return env


class OwnInfra:
    """A broker and database of the benchmark's own (`run_all.py --own-infra`): started by
    deploy/local/infra.sh with a run directory and free loopback ports of their own and the
    broker's JMX on, stopped again (by that run directory's pid files) at the end. The shared
    instance other people use is never touched, and what Kafka and the database cost is the
    run's alone."""

    def __init__(self, db_backend: str | None = None) -> None:
        self.run_dir = LOGS.parent / f"bench-infra-{uuid.uuid4().hex[:8]}"
        ports = {
            "KAFKA_PORT": free_loopback_port(),
            "KAFKA_CONTROLLER_PORT": free_loopback_port(),
            "MONGO_PORT": free_loopback_port(),
            "KAFKA_JMX_PORT": free_loopback_port(),
        }
        # Nothing of the caller's infrastructure: infra.sh would use it instead of starting.
        drop = (
            *KAFKA_ENV,
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SASL_PASSWORD_FILE",
            "MONGODB_URL",
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in drop},
            "HALA_RUN_DIR": str(self.run_dir),
            **{k: str(v) for k, v in ports.items()},
        }
        if db_backend is not None:  # FerretDB's backend (infra.sh's default: sqlite)
            self.env["HALA_DB_BACKEND"] = db_backend

    def start(self) -> dict[str, str]:
        log(
            f"own infrastructure in {self.run_dir} (Kafka localhost:{self.env['KAFKA_PORT']}, "
            f"JMX {self.env['KAFKA_JMX_PORT']}, database {self.env['MONGO_PORT']})"
        )
        try:
            subprocess.run(
                [str(INFRA), "up"], check=True, capture_output=True, timeout=900, env=self.env
            )
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"infra.sh up failed: {exc.stderr.decode()[-2000:]}") from exc
        out = subprocess.run(
            [str(INFRA), "env"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        ).stdout
        env = dict(line.split("=", 1) for line in out.split() if "=" in line)
        os.environ["HALA_RUN_DIR"] = str(self.run_dir)  # infra_pids(), the JMX secrets
        return env

    def stop(self) -> None:
        """Stop what this object started (its own run directory's pid files), then delete the
        run directory."""
        if not self.run_dir.exists():
            return
        subprocess.run([str(INFRA), "down"], capture_output=True, timeout=300, env=self.env)
        shutil.rmtree(self.run_dir, ignore_errors=True)


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p99, max in milliseconds of durations given in seconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "count": len(values_s),
        "p50_ms": ms(percentile(values_s, 50)),
        "p99_ms": ms(percentile(values_s, 99)),
        "mean_ms": ms(statistics.fmean(values_s)) if values_s else None,
        "max_ms": ms(max(values_s)) if values_s else None,
    }


def sustained_rate(times: Sequence[float], skip_s: float = 1.0) -> float | None:
    """Messages per second over a backlog's accepted timestamps, after the first `skip_s`
    seconds (the initial burst Meta's and our buckets allow)."""
    if len(times) < 3:
        return None
    ordered = sorted(times)
    start = ordered[0] + skip_s
    kept = [t for t in ordered if t >= start]
    if len(kept) < 2 or kept[-1] <= kept[0]:
        return None
    return (len(kept) - 1) / (kept[-1] - kept[0])


# --- the benchmark world -------------------------------------------------------------------------

TEMPLATES = [
    {
        "name": "receipt",
        "language": "en_US",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Order {{1}} confirmed."}],
    },
    {
        "name": "promo",
        "language": "en_US",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Hi {{1}}, {{2}} off today."}],
    },
]
SCALING_NUMBERS_PER_PARTITION = 2


_PARTITIONER = DefaultPartitioner()


def partition_of(key: str, partitions: int = PARTITIONS) -> int:
    """The partition a record keyed `key` lands on: Kafka's default partitioner (murmur2),
    which aiokafka and ingest's librdkafka producer (`murmur2_random`) both use."""
    every = list(range(partitions))
    return int(_PARTITIONER(key.encode(), every, every))


def _number_ids_spread(prefix: str, per_partition: int) -> list[str]:
    """Phone number ids whose send-approved records (keyed by phone number) fill every
    partition evenly, so that two senders get the same share of the work."""
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    n = 0
    while any(len(v) < per_partition for v in chosen.values()):
        candidate = f"{prefix}{n:04d}"
        n += 1
        part = partition_of(candidate)
        if len(chosen[part]) < per_partition:
            chosen[part].append(candidate)
    return [pid for p in range(PARTITIONS) for pid in chosen[p]]


def _numbers_on_two_partitions(prefix_a: str, prefix_b: str) -> tuple[str, str]:
    """Two phone number ids whose send-approved records (keyed by phone number) land on
    different partitions: the fairness benchmark's two tenants must not share one."""
    a = f"{prefix_a}0000"
    for n in range(10_000):
        b = f"{prefix_b}{n:04d}"
        if partition_of(b) != partition_of(a):
            return a, b
    raise AssertionError("no second partition")


def world() -> dict[str, Any]:
    """The simulator's world for every benchmark: three TIER_UNLIMITED portfolios (no messaging
    tier in the way), one account each once seeded.

    - Alpha: FAST_A (1000 mps, e2e traffic), PACE_80A and PACE_80B (80 mps, pacing benchmark),
      FLOOD_A (20 mps, coexistence: the fairness benchmark's flooding tenant)
    - Beta: FAST_B (1000 mps, e2e traffic of a second tenant), FAIR_B (80 mps: the fairness
      benchmark's other tenant, on another send-approved partition than FLOOD_A)
    - Gamma: 12 numbers of 1000 mps spread 2 per send-approved partition (scaling benchmark)
    Webhooks: polite, no artificial delays, no `read` (the last status is `delivered`)."""

    def number(pid: str, display: str, mps: int) -> dict[str, Any]:
        return {
            "id": pid,
            "display_phone_number": display,
            "verified_name": "Bench",
            "throughput_mps": mps,
        }

    def templates(base: int) -> list[dict[str, Any]]:
        return [{"id": str(base + i), **t} for i, t in enumerate(TEMPLATES)]

    scaling = _number_ids_spread("30300000000", SCALING_NUMBERS_PER_PARTITION)
    return {
        "seed": 11,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "time_scale": 0.05,
        "throughput_upgrade_seconds": 10,
        "pricing_rules": "pmp-2025-07",
        "access_tokens": [
            {"token": "EAAbench-alpha", "wabas": ["201000000000001"]},
            {"token": "EAAbench-beta", "wabas": ["202000000000001"]},
            {"token": "EAAbench-gamma", "wabas": ["203000000000001"]},
        ],
        "portfolios": [
            {
                "id": "801000000000001",
                "name": "Alpha",
                "messaging_tier": "TIER_UNLIMITED",
                "wabas": [
                    {
                        "id": "201000000000001",
                        "name": "WABA Alpha",
                        "phone_numbers": [
                            number(FAST_A, "15550100001", 1000),
                            number(PACE_80A, "15550100002", 80),
                            number(PACE_80B, "15550100003", 80),
                            number(FLOOD_A, "15550100004", 20),
                        ],
                        "templates": templates(401000000000001),
                    }
                ],
            },
            {
                "id": "802000000000001",
                "name": "Beta",
                "messaging_tier": "TIER_UNLIMITED",
                "wabas": [
                    {
                        "id": "202000000000001",
                        "name": "WABA Beta",
                        "phone_numbers": [
                            number(FAST_B, "15550200001", 1000),
                            number(FAIR_B, "15550200002", 80),
                        ],
                        "templates": templates(402000000000001),
                    }
                ],
            },
            {
                "id": "803000000000001",
                "name": "Gamma",
                "messaging_tier": "TIER_UNLIMITED",
                "wabas": [
                    {
                        "id": "203000000000001",
                        "name": "WABA Gamma",
                        "phone_numbers": [
                            number(pid, f"1555030{i:04d}", 1000) for i, pid in enumerate(scaling)
                        ],
                        "templates": templates(403000000000001),
                    }
                ],
            },
        ],
        "limits": {"enabled": True},
        "webhooks": {
            "enabled": True,
            "callback_url": "http://127.0.0.1:9/unset",
            "graph_version": GRAPH_VERSION,
            "profile": "polite",
            "delays": {"sent": 0.0, "delivered": 0.0, "read": 0.0, "jitter": 0.0},
            "read_probability": 0.0,
            "timeout_seconds": 5,
        },
        "outcomes": {"async_failure_probability": 0.0},
        "records": {"max_sends": 200000, "max_violations": 100000, "max_webhook_log": 20000},
    }


FAST_A, PACE_80A, PACE_80B = "301000000000001", "301000000000002", "301000000000003"
FAST_B = "302000000000001"
FLOOD_A, FAIR_B = _numbers_on_two_partitions("30100000001", "30200000001")
SCALING_NUMBERS = _number_ids_spread("30300000000", SCALING_NUMBERS_PER_PARTITION)


@cache
def recipients(count: int = 200_000) -> tuple[str, ...]:
    """Distinct valid UK mobile numbers (+447400 000000 onwards: the whole block is GB), so the
    per-recipient pair limit (1 message per 6 s) never shapes a benchmark by accident."""
    return tuple(f"+447400{n:06d}" for n in range(count))


# --- services as processes -------------------------------------------------------------------

MODULES = {
    "metasim": "tools.metasim",
    "ingest": "services.ingest",
    "status": "services.status",
    "sender": "services.sender",
    "billing": "services.billing",
    "notify": "services.notify",
}
READY = {
    "metasim": "/healthz",
    "ingest": "/readyz",
    "status": "/readyz",
    "sender": "/readyz",
    "billing": "/readyz",
    "notify": "/readyz",
}


def spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A process of ours with its output in `log_path`."""
    with log_path.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@dataclass
class Proc:
    name: str
    kind: str
    command: list[str]
    port: int  # the client port (sender, billing: their ops port)
    env: dict[str, str]
    log: Path
    ops_port: int | None = None  # /healthz, /readyz, /metrics of ingest and status
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops_port or self.port}"


@dataclass
class Platform:
    """Processes of one benchmark run on free ports. `prefix`/`database` are the defaults of the
    services added; a service may get its own prefix (its own topics and consumer groups)."""

    broker: Broker
    mongodb_url: str
    unique: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, Proc] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)
    databases: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.prefix = f"bench{self.unique}."
        self.database = f"bench_{self.unique}"
        self.token_keys = new_key()
        # billing verifies top-ups with it; seed_accounts and bench_billing sign with it
        self.topup_signing_key = secrets.token_urlsafe(24)
        self.sim_config = world()
        self.logs = LOGS / self.unique
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prefixes.add(self.prefix)
        self.databases.add(self.database)

    @property
    def kafka(self) -> KafkaConfig:
        """The broker as the set-up principal: what the benchmarks' own clients use."""
        return self.broker.setup

    # seed_accounts (tests/e2e/conftest.py) reads these like a Stack's
    def url(self, name: str) -> str:
        return self.procs[name].url

    def new_prefix(self, label: str) -> str:
        prefix = f"bench{self.unique}{label}."
        self.prefixes.add(prefix)
        return prefix

    def add(
        self,
        name: str,
        kind: str,
        *,
        prefix: str | None = None,
        database: str | None = None,
        core: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        port, ops_port = free_loopback_port(), free_loopback_port()
        prefix = prefix or self.prefix
        database = database or self.database
        self.prefixes.add(prefix)
        self.databases.add(database)
        base = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "HALA_ENV": "development",
            **(self.broker.env(kind) if kind != "metasim" else {}),
            "MONGODB_URL": self.mongodb_url,
            "MONGODB_DATABASE": database,
            "HALA_TOPIC_PREFIX": prefix,
            "HALA_TOKEN_KEYS": self.token_keys,
            "HALA_TOPUP_SIGNING_KEY": self.topup_signing_key,
        }
        args: list[str] = ["-m", MODULES[kind]]
        if kind == "metasim":
            config_path = self.logs / f"{name}.yaml"
            config_path.write_text(yaml.safe_dump(self.sim_config))
            args += ["--port", str(port), "--config", str(config_path)]
            specific = {"METASIM_PORT": str(port)}
        elif kind == "ingest":
            # The benchmarks measure capacity, not the request rate limits: every request
            # still takes its account's token, from buckets no load here empties.
            specific = {
                "INGEST_HTTP_PORT": str(port),
                "INGEST_OPS_PORT": str(ops_port),
                "INGEST_RATE_LIMIT_PER_SECOND": "1000000",
                "INGEST_RATE_LIMIT_BURST": "1000000",
            }
        elif kind == "status":
            specific = {
                "STATUS_HTTP_PORT": str(port),
                "STATUS_OPS_PORT": str(ops_port),
                "STATUS_APP_SECRET": APP_SECRET,
                "STATUS_VERIFY_TOKEN": VERIFY_TOKEN,
            }
        elif kind == "sender":
            specific = {
                "SENDER_OPS_PORT": str(port),
                "SENDER_META_BASE_URL": self.procs["metasim"].url,
            }
        elif kind == "billing":
            # Its consumer group starts with `billing`, as its principal's group ACL requires.
            specific = {
                "BILLING_OPS_PORT": str(port),
                "BILLING_FAUST_APP_ID": f"billing-{name}",
                "BILLING_FAUST_DATADIR": str(self.logs / f"{name}-faust"),
            }
        elif kind == "notify":
            # only ops endpoints: probed, like the sender's and billing's, on `port`
            specific = {"NOTIFY_OPS_PORT": str(port)}
        else:
            raise ValueError(kind)
        proc = Proc(
            name,
            kind,
            pinned(core, [sys.executable, *args]),
            port,
            {**base, **specific, **(env or {})},
            self.logs / f"{name}.log",
            ops_port=ops_port if kind in ("ingest", "status") else None,
        )
        self.procs[name] = proc
        return proc

    def start(self, *names: str) -> None:
        for name in names:
            proc = self.procs[name]
            with proc.log.open("ab") as out:
                proc.process = subprocess.Popen(
                    proc.command, cwd=ROOT, env=proc.env, stdout=out, stderr=subprocess.STDOUT
                )

    def stop(self, *names: str, timeout: float = 30) -> None:
        procs = [self.procs[n] for n in names if self.procs[n].process is not None]
        for proc in procs:
            assert proc.process is not None
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.process is not None
            try:
                proc.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait(timeout=10)
            proc.process = None

    def stop_all(self) -> None:
        self.stop(*[n for n, p in self.procs.items() if p.process is not None])

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.procs[name].log
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    async def wait_ready(self, *names: str, within: float = 120) -> None:
        async with aiohttp.ClientSession() as session:
            for name in names:
                proc = self.procs[name]

                async def ready(proc: Proc = proc) -> bool:
                    if proc.process is None or proc.process.poll() is not None:
                        raise RuntimeError(f"{proc.name} exited:\n{self.log_tail(proc.name)}")
                    try:
                        async with session.get(proc.ops_url + READY[proc.kind]) as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await eventually(ready, within=within, every=0.2, what=f"{name} ready")

    async def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url("metasim") + path, **kwargs) as resp,
        ):
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def sim_sends(self, **query: str) -> list[dict[str, Any]]:
        return list((await self.sim("GET", "/_sim/sends", params=query))["sends"])

    async def sim_violations(self) -> dict[str, int]:
        return {
            str(k): int(v)
            for k, v in (await self.sim("GET", "/_sim/violations"))["by_code"].items()
        }

    async def ensure_topics(self, prefix: str) -> None:
        """The prefix's topics and every service's ACLs on them (the set-up's job)."""
        await self.broker.grant(prefix)

    async def fork_database(self, label: str, collections: Sequence[str]) -> str:
        """A new database of this run holding copies of some of the main database's
        collections (e.g. phone_numbers for a sender): a benchmark that writes a lot starts on
        small tables and leaves none behind for the next one."""
        name = f"{self.database}_{label}"
        self.databases.add(name)
        mongo = make_client(self.mongodb_url)
        try:
            for collection in collections:
                docs = await mongo[self.database][collection].find({}).to_list(None)
                if docs:
                    await mongo[name][collection].insert_many(docs)
        finally:
            await mongo.close()
        return name

    async def drop_database(self, name: str) -> None:
        mongo = make_client(self.mongodb_url)
        try:
            await mongo.drop_database(name)
        finally:
            await mongo.close()
        self.databases.discard(name)

    async def cleanup(self) -> None:
        """Stop everything, drop the databases and delete the topics of this run (the broker is
        shared: leaving hundreds of partitions behind after each run would slow it down)."""
        self.stop_all()
        mongo = make_client(self.mongodb_url)
        try:
            for database in self.databases:
                await mongo.drop_database(database)
        finally:
            await mongo.close()
        try:  # topics and ACLs
            await revoke(self.kafka, lambda name: any(name.startswith(p) for p in self.prefixes))
        except Exception as exc:  # a leftover topic is untidy, not a failed benchmark
            log(f"topic clean-up failed: {exc!r}")


# --- Kafka ----------------------------------------------------------------------------------------


async def produce_all(
    kafka: KafkaConfig, prefix: str, items: Iterable[tuple[Topic[Any], Any]]
) -> float:
    """Write events as fast as the producer batches them, in order per key; returns the seconds
    it took until the broker acknowledged all of them."""
    producer: AIOKafkaProducer = make_producer(kafka, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        await publish_all(producer, list(items), prefix)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def record_count(kafka: KafkaConfig, topic: str, partitions: int) -> int:
    """Records written to a topic so far (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**kafka.aiokafka_options())
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def group_members(kafka: KafkaConfig, group: str) -> int:
    """Members of a consumer group once it is stable (0 while it rebalances)."""
    state, members = await group_state(kafka, group)
    return members if state == "Stable" else 0


def topics_of(prefix: str) -> list[str]:
    return [topic_name(t, prefix) for t in ALL_TOPICS]


# --- HTTP helpers ---------------------------------------------------------------------------------


async def scrape(url: str) -> dict[str, float]:
    """A service's /metrics as {"name{label=value,...}": value}."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def metric_sum(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in values.items():
        sample, _, rest = key.partition("{")
        if sample != name:
            continue
        have = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if item)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


# --- wrk -------------------------------------------------------------------------------------


def run_wrk(
    url: str,
    bodies: Sequence[str],
    headers: dict[str, str],
    *,
    seconds: float,
    connections: int,
    core: str | None = CLIENT_CORE,
) -> dict[str, Any]:
    """Closed-loop load with wrk and bench/lua/post.lua; latencies in ms."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (make tools installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        bodies_path, headers_path = Path(tmp) / "bodies", Path(tmp) / "headers"
        bodies_path.write_text("\n".join(bodies) + "\n")
        headers_path.write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        command = pinned(
            core,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(LUA_POST),
                url,
            ],
        )
        env = {**os.environ, "BENCH_BODIES": str(bodies_path), "BENCH_HEADERS": str(headers_path)}
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env=env, timeout=seconds + 60
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["errors_status"],
        "duration_s": round(duration, 3),
        "ok_per_s": round((raw["requests"] - errors) / duration, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "connections": connections,
    }


# --- results --------------------------------------------------------------------------------


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


async def ferretdb_probe(
    mongodb_url: str, database: str, seconds: float = 2.0, concurrency: Sequence[int] = (1, 8)
) -> dict[str, dict[str, float]]:
    """Operations/s of the MongoDB-compatible server alone, by client concurrency: single-document
    inserts (a new `_id` each) and finds by `_id`. If more concurrent clients do not raise the
    figure, the server serialises them, and more service instances cannot help."""
    mongo = make_client(mongodb_url)
    scratch = mongo[database]["bench_probe"]
    found: dict[str, dict[str, float]] = {"insert_one": {}, "find_one": {}}
    try:
        await scratch.update_one({"_id": "probe"}, {"$set": {"n": 0}}, upsert=True)
        for kind in found:
            for clients in concurrency:
                done = 0
                stop = time.monotonic() + seconds

                async def client(
                    k: int, kind: str = kind, clients: int = clients, stop: float = stop
                ) -> None:
                    nonlocal done
                    i = 0
                    while time.monotonic() < stop:
                        if kind == "insert_one":
                            await scratch.insert_one(
                                {"_id": f"{clients}-{k}-{i}", "n": i, "pad": "x" * 200}
                            )
                        else:
                            await scratch.find_one({"_id": "probe"})
                        i += 1
                        done += 1

                await asyncio.gather(*(client(k) for k in range(clients)))
                found[kind][str(clients)] = round(done / seconds, 1)
        await scratch.drop()
    finally:
        await mongo.close()
    return found
