"""FerretDB on SQLite vs FerretDB on PostgreSQL, side by side, under the pipeline's write pattern.

    .venv/bin/python bench/bench_db.py [--quick] [--rounds N]      (also `make bench`, row `db`)

Both servers are started here by `deploy/local/infra.sh up --fresh`, each in a run dir of its own
(`.run/bench-db/<backend>`) on a free loopback port, with HALA_DB_BACKEND=sqlite or postgresql
(PostgreSQL from Debian's package, on a unix socket in that run dir), and wiped again at the end
(`infra.sh reset`). The shared instance (MONGO_PORT, .run/) is never touched.

The load replays what the services write per message, through their own store classes, each
"service" with a client (connection pool) and the concurrency of its own:
  ingest   MongoIdempotencyStore.insert: the keyed request's record (group commit)
  billing  one loop over batches (as its agent): Ledger.add_all (reserve, later charge) and one
           Balances.save (upsert of the whole document) per account touched in the batch
  sender   SenderRepository.start_send (the guard insert, group commit), record_tier_use (upsert),
           record_outcome (group commit)
  status   StatusRepository.create_message (group commit); for `sent` index_wamid (insert,
           unique _id), parked_for (find by a secondary field), save_message ($set upsert); for
           `delivered` and `read` find_by_wamid (find by _id) and save_message
with the collections' real indexes (shared.collections.ensure_indexes) and four accounts.
That is the services' per-message pattern from before issue 13's batching (today each service
writes one insert_many/bulk_write per collection per batch and reads by `_id` in sets): this
bench is kept for comparison with its earlier figures, and the backend is now chosen from the
whole pipeline run on each backend (`run_all.py --own-infra --db-backend ...`,
deploy/local/NOTES.md).

Two phases per backend and round, in alternating order (A B, then B A):
  capacity  a backlog of messages through all four stages: messages/s and database commands/s
            (counted by pymongo's command monitoring: every round trip, a batch counted once)
  paced     an open-loop stream at half the lower capacity of the two (the same rate for both):
            p50/p99 of each store call and of a message's whole path, and CPU
CPU is read from /proc: FerretDB's process, and PostgreSQL's postmaster with its children
(the live ones, and the exited ones through the postmaster's cutime/cstime); reported as cores
used and as CPU ms per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import INFRA, ROOT, log, percentile, write_result
from pymongo import monitoring

from services.billing.balances import Balances
from services.billing.core import Balance, LedgerEntry
from services.billing.ledger import Ledger
from services.ingest.core import idempotency_record
from services.ingest.repository import MongoIdempotencyStore
from services.sender.repository import SenderRepository
from services.status.core import MessageRef, wamid_index_doc
from services.status.repository import StatusRepository
from shared.collections import (
    BALANCES,
    IDEMPOTENCY_KEYS,
    LEDGER,
    MESSAGES,
    PARKED_STATUSES,
    SEND_OUTCOMES,
    SENDS,
    TIER_USAGE,
    WAMID_INDEX,
    ensure_indexes,
)
from shared.ids import new_id
from shared.message_docs import message_document
from shared.messages import SendRequested
from shared.mongo import make_client
from shared.ports import free_loopback_port

BACKENDS = ("sqlite", "postgresql")
ACCOUNTS = [f"acc_bench_db_{i}" for i in range(4)]
DATABASE = "bench_db"
# Concurrency of each service's store calls (ingest: wrk's 32 connections; sender and status:
# their concurrent handlers); billing is one loop over batches, as its agent.
WORKERS = {"ingest": 32, "sender": 32, "status": 32}
BILLING_MAX_BATCH = 500
_CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- servers and their CPU
@dataclass
class Server:
    backend: str
    run_dir: Path
    port: int
    pg_options: str = ""

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "HALA_PG_OPTIONS")}
        # An external broker, so infra.sh starts only the database.
        env.update(
            KAFKA_BOOTSTRAP_SERVERS="external:1",
            HALA_RUN_DIR=str(self.run_dir),
            MONGO_PORT=str(self.port),
            HALA_DB_BACKEND=self.backend,
            HALA_MONGO_IMPL="ferretdb",
        )
        if self.pg_options:
            env["HALA_PG_OPTIONS"] = self.pg_options
        return env

    def infra(self, *args: str) -> None:
        result = subprocess.run(
            [str(INFRA), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"infra.sh {' '.join(args)} ({self.backend}) failed:\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def pids(self) -> dict[str, int]:
        found = {}
        for name in ("ferretdb", "postgres"):
            try:
                found[name] = int((self.run_dir / "pids" / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                continue
        return found


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, its reaped children (cutime + cstime) and its live children."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        child_fields = _stat(int(child.name))
        if child_fields is not None and int(child_fields[1]) == pid:
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / _CLK


def server_cpu(server: Server) -> dict[str, float]:
    return {name: tree_cpu_seconds(pid) for name, pid in server.pids().items()}


# ---------------------------------------------------------------- the pipeline's store calls
class Commands(monitoring.CommandListener):
    """Every command a client sends: the database's round trips."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Msg:
    doc: dict[str, Any]
    wamid: str
    arrived: float
    parts_left: int = 2  # read stored, charge applied


class Pipeline:
    """One run's four services, their store objects and queues, and what was measured."""

    def __init__(self, url: str) -> None:
        self.commands = Commands()
        self.clients = {
            name: make_client(url, event_listeners=[self.commands])
            for name in ("ingest", "billing", "sender", "status")
        }
        db = {name: client[DATABASE] for name, client in self.clients.items()}
        self.idempotency = MongoIdempotencyStore(db["ingest"])
        self.ledger = Ledger(db["billing"])
        self.balances = Balances(db["billing"])
        self.sender = SenderRepository(db["sender"], vault=None)  # type: ignore[arg-type]
        self.status = StatusRepository(db["status"])
        self.admin_db = db["ingest"]
        self.queues: dict[str, asyncio.Queue[Any]] = {
            name: asyncio.Queue() for name in ("ingest", "billing", "sender", "status")
        }
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.message_latencies: list[float] = []
        self.done = 0
        self.all_done = asyncio.Event()
        self.expected = 0
        self.balance: dict[str, Balance] = {
            a: Balance(account_id=a, currency="USD", available=10**12) for a in ACCOUNTS
        }
        self.offset = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def prepare(self) -> None:
        await self.clients["ingest"].drop_database(DATABASE)
        await ensure_indexes(
            self.admin_db,
            MESSAGES,
            WAMID_INDEX,
            PARKED_STATUSES,
            SENDS,
            TIER_USAGE,
            LEDGER,
            IDEMPOTENCY_KEYS,
        )
        for name in (BALANCES, SEND_OUTCOMES):  # no index of their own: create the tables
            await self.admin_db[name].insert_one({"_id": "bench-db-create"})
            await self.admin_db[name].delete_one({"_id": "bench-db-create"})

    def start(self) -> None:
        for name, count in WORKERS.items():
            stage = getattr(self, f"_{name}")
            self.tasks += [asyncio.create_task(self._worker(name, stage)) for _ in range(count)]
        self.tasks.append(asyncio.create_task(self._billing()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients.values():
            await client.close()

    def expect(self, count: int) -> None:
        self.expected, self.done = count, 0
        self.all_done.clear()
        self.message_latencies.clear()
        self.latencies.clear()

    def submit(self, index: int, tag: str) -> None:
        now_ms = int(time.time() * 1000)
        account = ACCOUNTS[index % len(ACCOUNTS)]
        event = SendRequested(
            event_id=new_id("evt"),
            message_id=new_id("msg"),
            account_id=account,
            portfolio_id=f"pf_{account}",
            waba_id=f"waba_{account}",
            phone_number_id=f"10{index % 8:013d}",
            recipient=f"+4917{index:09d}",
            recipient_region="DE",
            message_type="template",
            content={
                "name": "order_update",
                "language": {"code": "en"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": f"order {tag}-{index}"}],
                    }
                ],
            },
            category="utility",
            accepted_at=now_ms,
            expires_at=now_ms + 86_400_000,
        )
        doc = message_document(event)
        self.queues["ingest"].put_nowait(Msg(doc, f"wamid.{event.message_id}", time.monotonic()))

    async def _timed(self, op: str, call: Any) -> Any:
        started = time.perf_counter()
        result = await call
        self.latencies[op].append(time.perf_counter() - started)
        return result

    async def _worker(self, name: str, stage: Any) -> None:
        queue = self.queues[name]
        while True:
            item = await queue.get()
            await stage(item)

    def _part_done(self, msg: Msg) -> None:
        msg.parts_left -= 1
        if msg.parts_left == 0:
            self.message_latencies.append(time.monotonic() - msg.arrived)
            self.done += 1
            if self.done >= self.expected:
                self.all_done.set()

    async def _ingest(self, msg: Msg) -> None:
        now_ms = int(time.time() * 1000)
        record = idempotency_record(msg.doc, msg.doc["_id"], "0" * 64, now_ms)
        record["created_at"] = datetime.now(UTC)
        await self._timed("ingest.idempotency_insert", self.idempotency.insert(record))
        self.queues["billing"].put_nowait(("reserve", msg))

    async def _billing(self) -> None:
        queue = self.queues["billing"]
        while True:
            batch = [await queue.get()]
            while len(batch) < BILLING_MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            now_ms = int(time.time() * 1000)
            entries = []
            for kind, msg in batch:
                self.offset += 1
                account = msg.doc["account_id"]
                entries.append(
                    LedgerEntry(
                        key=f"{msg.doc['_id']}:{kind}",
                        account_id=account,
                        kind=kind,
                        amount=-1000 if kind == "reserve" else 0,
                        reserved_amount=1000,
                        at=now_ms,
                        source="messages.send-requested.v1:0",
                        source_offset=self.offset,
                        source_event_id=new_id("evt"),
                        message_id=msg.doc["_id"],
                        category="utility",
                        region="DE",
                        rate_card_version="2026-12",
                    )
                )
                old = self.balance[account]
                self.balance[account] = Balance(
                    account_id=account,
                    currency="USD",
                    available=old.available - 1000,
                    reserved=old.reserved + 1000,
                    applied={**old.applied, "messages.send-requested.v1:0": self.offset},
                )
            await self._timed("billing.ledger_add_all", self.ledger.add_all(entries))
            for account in {msg.doc["account_id"] for _, msg in batch}:
                await self._timed(
                    "billing.balance_save", self.balances.save(self.balance[account], now_ms)
                )
            for kind, msg in batch:
                if kind == "reserve":
                    self.queues["sender"].put_nowait(msg)
                else:
                    self._part_done(msg)

    async def _sender(self, msg: Msg) -> None:
        doc, now_ms = msg.doc, int(time.time() * 1000)
        ids = {"phone_number_id": doc["phone_number_id"], "account_id": doc["account_id"]}
        existing = await self._timed(
            "sender.start_send", self.sender.start_send(doc["_id"], now_ms=now_ms, **ids)
        )
        assert existing is None, f"{doc['_id']} was attempted before"
        await self._timed(
            "sender.record_tier_use",
            self.sender.record_tier_use(doc["portfolio_id"], doc["recipient"][-9:], now_ms),
        )
        await self._timed(
            "sender.record_outcome",
            self.sender.record_outcome(
                doc["_id"], "sent", attempts=1, now_ms=now_ms, wamid=msg.wamid, **ids
            ),
        )
        self.queues["status"].put_nowait(msg)

    async def _status(self, msg: Msg) -> None:
        doc, message_id = msg.doc, msg.doc["_id"]
        await self._timed("status.create_message", self.status.create_message(dict(doc)))
        ref = MessageRef(message_id, doc["account_id"], doc["recipient_region"])
        await self._timed(
            "status.index_wamid", self.status.index_wamid(wamid_index_doc(msg.wamid, ref))
        )
        await self._timed("status.parked_for", self.status.parked_for(msg.wamid))
        history = list(doc["history"])
        for step in ("sent", "delivered", "read"):
            if step != "sent":
                found = await self._timed(
                    "status.find_by_wamid", self.status.find_by_wamid(msg.wamid)
                )
                assert found is not None and found.message_id == message_id
            now_ms = int(time.time() * 1000)
            history.append({"status": step, "at": now_ms, "source": "webhook"})
            fields = {
                "status": step,
                "status_at": now_ms,
                "status_reason": None,
                "history": history,
                "wamid": msg.wamid,
                "error": None,
                "pricing": {"billable": True, "category": "utility"},
                "updated_at": now_ms,
            }
            await self._timed(
                "status.save_message", self.status.save_message(message_id, fields, {})
            )
            if step == "delivered":
                self.queues["billing"].put_nowait(("charge", msg))
        self._part_done(msg)


# ---------------------------------------------------------------- phases
def _ms(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) in ms of durations in seconds."""
    found = percentile(values, q)
    return None if found is None else round(found * 1000, 2)


async def _measure(
    server: Server, pipeline: Pipeline, count: int, rate: float | None, tag: str, within_s: float
) -> dict[str, Any]:
    pipeline.expect(count)
    commands_before = sum(pipeline.commands.counts.values())
    cpu_before, client_before = server_cpu(server), time.process_time()
    started = time.monotonic()
    if rate is None:
        for i in range(count):
            pipeline.submit(i, tag)
    else:
        for i in range(count):  # open loop: each message leaves on schedule
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pipeline.submit(i, tag)
    await asyncio.wait_for(pipeline.all_done.wait(), within_s)
    elapsed = time.monotonic() - started
    cpu_after = server_cpu(server)
    commands = sum(pipeline.commands.counts.values()) - commands_before
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    database_cpu = sum(cpu.values())
    return {
        "messages": count,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(count / elapsed, 1),
        "commands_per_s": round(commands / elapsed, 1),
        "commands_per_message": round(commands / count, 2),
        "database_cores": round(database_cpu / elapsed, 3),
        "database_cpu_ms_per_message": round(database_cpu * 1000 / count, 2),
        "cpu_ms_per_message_by_process": {k: round(v * 1000 / count, 2) for k, v in cpu.items()},
        "client_cpu_ms_per_message": round((time.process_time() - client_before) * 1000 / count, 2),
        "message_p50_ms": _ms(pipeline.message_latencies, 50),
        "message_p99_ms": _ms(pipeline.message_latencies, 99),
        "calls": {
            op: {"count": len(v), "p50_ms": _ms(v, 50), "p99_ms": _ms(v, 99)}
            for op, v in sorted(pipeline.latencies.items())
        },
    }


async def _phase(
    server: Server, kind: str, count: int, rate: float | None, tag: str
) -> dict[str, Any]:
    pipeline = Pipeline(server.url)
    try:
        await pipeline.prepare()
        pipeline.start()
        await _measure(server, pipeline, 100, None, f"{tag}-warm", 120)  # tables, caches, pools
        # Let our FerretDB program's _id indexer (SQLite only, one pass a second) see the new
        # tables, as it has long since in a running service.
        await asyncio.sleep(1.5)
        return await _measure(server, pipeline, count, rate, tag, 600)
    finally:
        await pipeline.close()


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over rounds of each figure, and of each call's p50 and p99."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)):
            out[key] = _median([r.get(key) for r in runs])
    out["cpu_ms_per_message_by_process"] = {
        name: _median([r["cpu_ms_per_message_by_process"].get(name) for r in runs])
        for name in runs[0]["cpu_ms_per_message_by_process"]
    }
    out["calls"] = {
        op: {
            k: _median([r["calls"].get(op, {}).get(k) for r in runs])
            for k in ("count", "p50_ms", "p99_ms")
        }
        for op in runs[0]["calls"]
    }
    out["rounds"] = runs
    return out


async def compare(quick: bool, rounds: int, pg_options: str = "") -> dict[str, Any]:
    backlog = 600 if quick else 2000
    paced_seconds = 6 if quick else 12
    base = ROOT / ".run" / "bench-db"
    servers = {b: Server(b, base / b, free_loopback_port(), pg_options) for b in BACKENDS}
    started = time.monotonic()
    for server in servers.values():
        log(f"db: starting FerretDB on {server.backend} (127.0.0.1:{server.port})")
        await asyncio.to_thread(server.infra, "up", "--fresh")
    capacity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    paced: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        for r in range(rounds):
            order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                result = await _phase(servers[backend], "capacity", backlog, None, f"c{r}")
                capacity[backend].append(result)
                log(
                    f"db: {backend} capacity {result['messages_per_s']} msg/s, "
                    f"{result['commands_per_s']} commands/s, database "
                    f"{result['database_cpu_ms_per_message']} ms CPU per message"
                )
            rate = round(0.5 * min(capacity[b][-1]["messages_per_s"] for b in BACKENDS), 1)
            for backend in order:
                result = await _phase(
                    servers[backend], "paced", max(1, int(rate * paced_seconds)), rate, f"p{r}"
                )
                result["rate"] = rate
                paced[backend].append(result)
                log(
                    f"db: {backend} at {rate} msg/s: message p50/p99 "
                    f"{result['message_p50_ms']}/{result['message_p99_ms']} ms, database "
                    f"{result['database_cpu_ms_per_message']} ms CPU per message"
                )
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.infra, "reset")
    results = {
        b: {"capacity": _combine(capacity[b]), "paced": _combine(paced[b])} for b in BACKENDS
    }
    return {
        "benchmark": "db",
        "quick": quick,
        "rounds": rounds,
        "backlog": backlog,
        "workers": WORKERS,
        "accounts": len(ACCOUNTS),
        "pg_options": pg_options,
        "results": results,
        "seconds_total": round(time.monotonic() - started, 1),
        "rows": _rows(results),
    }


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    s, p = results["sqlite"], results["postgresql"]
    cap = (
        p["capacity"]["messages_per_s"] / s["capacity"]["messages_per_s"]
        if s["capacity"]["messages_per_s"]
        else 0.0
    )
    figures = (
        f"capacity sqlite {s['capacity']['messages_per_s']} vs postgresql "
        f"{p['capacity']['messages_per_s']} msg/s ({cap:.2f}x); commands/s "
        f"{s['capacity']['commands_per_s']} vs {p['capacity']['commands_per_s']}; at "
        f"{s['paced']['rate']} msg/s p50/p99 {s['paced']['message_p50_ms']}/"
        f"{s['paced']['message_p99_ms']} vs {p['paced']['message_p50_ms']}/"
        f"{p['paced']['message_p99_ms']} ms; database CPU/message "
        f"{s['paced']['database_cpu_ms_per_message']} vs "
        f"{p['paced']['database_cpu_ms_per_message']} ms"
    )
    default = _default_backend()
    faster = "postgresql" if cap > 1.0 else "sqlite"
    return [
        {
            "benchmark": "db FerretDB backend",
            "figures": figures,
            "target": f"infra.sh's default ({default}) is the faster ({faster})",
            "met": default == faster,
        }
    ]


def _default_backend() -> str:
    for line in INFRA.read_text().splitlines():
        if line.startswith("DB_BACKEND=${HALA_DB_BACKEND:-"):
            return line.split(":-", 1)[1].rstrip("}")
    return "unknown"


def print_side_by_side(result: dict[str, Any]) -> None:
    res = result["results"]
    rows = [
        ("capacity msg/s", "capacity", "messages_per_s"),
        ("capacity commands/s", "capacity", "commands_per_s"),
        ("commands per message", "capacity", "commands_per_message"),
        ("capacity: database cores", "capacity", "database_cores"),
        ("capacity: database CPU ms/msg", "capacity", "database_cpu_ms_per_message"),
        ("paced rate msg/s", "paced", "rate"),
        ("paced: message p50 ms", "paced", "message_p50_ms"),
        ("paced: message p99 ms", "paced", "message_p99_ms"),
        ("paced: database cores", "paced", "database_cores"),
        ("paced: database CPU ms/msg", "paced", "database_cpu_ms_per_message"),
        ("paced: client CPU ms/msg", "paced", "client_cpu_ms_per_message"),
    ]
    print(f"{'':34} {'sqlite':>12} {'postgresql':>12}")
    for label, phase, key in rows:
        print(f"{label:34} {res['sqlite'][phase][key]!s:>12} {res['postgresql'][phase][key]!s:>12}")
    for backend in BACKENDS:
        print(
            f"  {backend} CPU ms/msg by process (paced): "
            f"{res[backend]['paced']['cpu_ms_per_message_by_process']}"
        )
    print(f"{'paced: p50 / p99 ms of each call':34} {'sqlite':>16} {'postgresql':>16}")
    calls = res["sqlite"]["paced"]["calls"]
    for op in calls:
        a, b = calls[op], res["postgresql"]["paced"]["calls"].get(op, {})
        print(
            f"  {op:32} {a['p50_ms']!s:>7} / {a['p99_ms']!s:<7} "
            f"{b.get('p50_ms')!s:>7} / {b.get('p99_ms')!s:<7}"
        )


async def run(platform: Any, accounts: Any, quick: bool) -> dict[str, Any]:
    """run_all.py's entry: the platform is not used (this starts its own two servers)."""
    result = await compare(quick, 1 if quick else 2)
    print_side_by_side(result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller backlog, shorter paced run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (A B, B A, ...)")
    parser.add_argument(
        "--pg-options",
        default="",
        help='more PostgreSQL settings, e.g. "-c fsync=off" (HALA_PG_OPTIONS)',
    )
    parser.add_argument("--name", default="db", help="result file bench/results/<name>.json")
    args = parser.parse_args()
    result = asyncio.run(compare(args.quick, max(1, args.rounds), args.pg_options))
    print_side_by_side(result)
    path = write_result(args.name, result)
    print(json.dumps(result["rows"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
