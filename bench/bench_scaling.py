"""Benchmark `scaling`: one vs two sender instances on the partitioned send-approved topic.

The work is the sender's own limited part: twelve 1,000 mps numbers (two per partition, so two
instances get equal shares), a new recipient per message, so that pacing never binds and the
sender's CPU and its database writes are the limit. For each configuration: a fresh topic prefix
(and consumer group), the sender instance(s) started and the group stable, then a backlog of
SendApproved written straight to Kafka; the throughput is the simulator's accepted sends per
second over a bounded window (after the first 2 s). The configurations run in the order 1, 2,
2, 1 (ABBA: a drift of the shared machine's load hits both equally), with the simulator's records
reset between runs; each figure is the mean of its two runs.

Where the limit is: the CPU each process used, and a probe of the MongoDB-compatible server alone
(single-document inserts and finds per second with 1 and 8 concurrent clients, same run).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench_pacing import approved, shared_infra_pids, start_sender
from common import (
    SCALING_NUMBERS,
    CpuMeter,
    Platform,
    eventually,
    ferretdb_probe,
    log,
    produce_all,
    recipients,
    sustained_rate,
    wait_until_idle,
)

from shared.messages import SEND_APPROVED

NAME = "scaling"
TARGET = 1.8


async def _one(platform: Platform, account: Any, run: int, instances: int, backlog: int,
               window_s: float, pool: Any) -> dict[str, Any]:
    """One configuration on its own topics, consumer group and database (a fresh `sends`)."""
    await platform.sim("POST", "/_sim/reset", json={})
    await platform.sim("POST", "/_sim/webhooks/config", json={"enabled": False})
    prefix = platform.new_prefix(f"scale{run}")
    await platform.ensure_topics(prefix)
    database = await platform.fork_database(f"scale{run}", ["phone_numbers"])
    db_idle = await wait_until_idle(shared_infra_pids(platform).get("ferretdb"))
    names = await start_sender(platform, f"sender-r{run}x{instances}", prefix, database,
                               instances)
    try:
        now_ms = int(time.time() * 1000)
        events = [approved(account, SCALING_NUMBERS[i % len(SCALING_NUMBERS)], next(pool),
                           f"s{instances}", now_ms) for i in range(backlog)]
        meter = CpuMeter({**{n: platform.procs[n].pid for n in names},
                          "metasim": platform.procs["metasim"].pid, **shared_infra_pids(platform)})
        meter.start()
        started = time.time()
        produce_s = await produce_all(platform.bootstrap, prefix,
                                      [(SEND_APPROVED, e) for e in events])

        async def done() -> bool | str:
            count = (await platform.sim("GET", "/_sim/stats"))["sends_accepted"]
            return count >= backlog or f"{count} sent"

        try:
            await eventually(done, within=window_s, every=1, what="backlog sent")
        except TimeoutError:
            pass  # bounded: measured over what went in the window
        cores = meter.stop()
        sends = await platform.sim_sends()
    finally:
        platform.stop(*names)
        await platform.drop_database(database)
    times = [s["accepted_at"] for s in sends if s["accepted_at"] >= started]
    rate = sustained_rate(times, skip_s=2.0) or 0.0
    per_number = {}
    for s in sends:
        per_number[s["phone_number_id"]] = per_number.get(s["phone_number_id"], 0) + 1
    log(f"scaling: {instances} sender(s): {rate:.0f} sends/s ({len(times)} sent; "
        f"cores {cores})")
    sender_cores = sum(v for k, v in cores.items() if k.startswith("sender"))
    return {"instances": instances, "backlog": backlog, "sent": len(times),
            "sender_cpu_ms_per_send": round(sender_cores * 1000 / rate, 2) if rate else None,
            "window_s": window_s, "produce_s": round(produce_s, 2),
            "database_cores_before": db_idle,
            "sends_per_s": round(rate, 1), "cores_used": cores,
            "sent_per_number": per_number}


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    # More than two senders can send in the window: a backlog drained early would cap the
    # two-sender figure (5,000 did once one sender reached ~1,000/s).
    backlog = 9000 if quick else 15000
    window_s = 6.0 if quick else 10.0
    gamma = accounts[2]
    # Four runs of fresh recipients, after the range the other benchmarks use.
    pool = iter(recipients(150_000 + 4 * backlog)[150_000:])
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for run, instances in enumerate((1, 2, 2, 1), start=1):
        runs[instances].append(await _one(platform, gamma, run, instances, backlog, window_s,
                                          pool))
    # A run in which nothing was sent measured a stalled database, not a sender: left out.
    stalled = sum(1 for n in (1, 2) for r in runs[n] if not r["sent"])
    one, two = (statistics.fmean([r["sends_per_s"] for r in runs[n] if r["sent"]] or [0.0])
                for n in (1, 2))
    machine = {n: round(statistics.fmean(r["cores_used"]["machine"] for r in runs[n]), 2)
               for n in (1, 2)}
    ratio = two / one if one else 0.0
    probe = await ferretdb_probe(platform.mongodb_url, platform.database,
                                 seconds=1.5 if quick else 2.0)
    result = {
        "benchmark": NAME,
        "what": f"backlog of {backlog} SendApproved over {len(SCALING_NUMBERS)} numbers of "
                "1,000 mps (2 per partition), one vs two sender processes, ABBA",
        "one": {"sends_per_s": round(one, 1), "runs": runs[1]},
        "two": {"sends_per_s": round(two, 1), "runs": runs[2]},
        "ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET,
        "machine_cores_busy": machine, "stalled_runs_left_out": stalled,
        "database_ops_per_s_by_clients": probe,
    }
    result["rows"] = [{
        "benchmark": "6 sender scaling",
        "figures": f"1 sender {one:.0f}/s, 2 senders {two:.0f}/s = {ratio:.2f}x (machine "
                   f"busy {machine[1]:.2f} / {machine[2]:.2f} of {os.cpu_count()} cores; DB "
                   f"inserts/s with 1 / 8 clients {probe['insert_one']['1']:.0f} / "
                   f"{probe['insert_one']['8']:.0f})"
                   + (f"; {stalled} of 4 runs stalled, left out" if stalled else ""),
        "target": f">= {TARGET}x", "met": result["met"],
    }]
    return result
