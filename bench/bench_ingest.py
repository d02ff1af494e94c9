"""Benchmark `ingest`: requests/s and p50/p99 of one ingest process at saturation, next to a bare
aiohttp handler that only parses the same JSON (the upper bound), with the same load generator in
the same run.

Also measured, for information: the framework floor (bench/bare_ingest.py --floor), the bare
handler behind ingest's middleware and answering only after another thread's acknowledgement, as
ingest answers after librdkafka's delivery report; it shows how much of the gap to bare no work in
the handler can close.

The servers are pinned to core 0 and wrk (bench/lua/post.lua, 1 thread) to core 1; Kafka and
FerretDB float over both cores, as they must. Runs go bare, floor, ingest, ingest, floor, bare, so
that a drift of the machine's load hits every side equally; each side's figure is the mean of
its two runs. The ingest process has its own topic prefix: nothing consumes what it publishes, so
the downstream services use no CPU meanwhile (status, which makes each message's document from the
published event, is one of them: e2e measures the whole pipeline). Where the time goes: ingest's
own histograms (request duration, publish-until-acknowledged) and the CPU each process used.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson
from common import (
    CLIENT_CORE,
    FAST_A,
    ROOT,
    SERVER_CORE,
    CpuMeter,
    Platform,
    eventually,
    free_loopback_port,
    infra_pids,
    log,
    metric_sum,
    pinned,
    recipients,
    run_wrk,
    scrape,
    spawn,
)

NAME = "ingest"
TARGET_RATIO = 0.6
TARGET_CPU_US = 100  # CPU of the ingest process per accepted request (issue 13)
CONNECTIONS = 32
ROUTE = "/v1/messages"


def template_body(number: str, to: str, ref: str) -> dict[str, Any]:
    return {
        "from": number,
        "to": to,
        "type": "template",
        "template": {
            "name": "receipt",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": ref}]}],
        },
        "client_reference": ref,
    }


async def _wait_http(url: str, within: float = 30) -> None:
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            try:
                async with session.get(url) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, within=within, every=0.1, what=url)


def _server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Mean time ingest spent per accepted request, and the part of it spent waiting for the
    broker's acknowledgement (acks=all) — from ingest's own histograms. (The bench's requests
    carry no Idempotency-Key, so they write nothing to the database.)"""

    def delta(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    requests = delta("hala_http_request_duration_seconds_count", route=ROUTE)
    server_s = delta("hala_http_request_duration_seconds_sum", route=ROUTE)
    publishes = delta("ingest_publish_duration_seconds_count")
    publish_s = delta("ingest_publish_duration_seconds_sum")
    records = delta("ingest_idempotency_insert_duration_seconds_count")
    accepted = delta("ingest_messages_accepted_total")
    mean_server = server_s / requests * 1000 if requests else None
    mean_publish = publish_s / publishes * 1000 if publishes else None
    rest = (
        mean_server - mean_publish if mean_server is not None and mean_publish is not None else None
    )
    return {
        "requests_seen": int(requests),
        "accepted": int(accepted),
        "idempotency_records_written": int(records),
        "mean_server_ms": round(mean_server, 2) if mean_server else None,
        "mean_publish_ack_ms": round(mean_publish, 2) if mean_publish else None,
        "mean_rest_ms (lookups, validation, response)": round(rest, 2) if rest else None,
    }


def _spawn_reference(platform: Platform, side: str) -> tuple[Any, int]:
    """bare_ingest.py as the bare handler or the framework floor, on ingest's core."""
    port = free_loopback_port()
    command = [sys.executable, str(ROOT / "bench" / "bare_ingest.py"), "--port", str(port)]
    if side == "floor":
        command.append("--floor")
    return spawn(pinned(SERVER_CORE, command), platform.logs / f"{side}-ingest.log"), port


async def _children(ops_url: str) -> dict[str, int]:
    """The pids of an INGEST_PROCESSES parent's children, from its /readyz."""
    async with aiohttp.ClientSession() as session, session.get(ops_url + "/readyz") as resp:
        body = await resp.json()
    return {f"ingest-{index}": int(child["pid"]) for index, child in body["processes"].items()}


def _cpu_us(cores: dict[str, float], names: list[str], ok_per_s: float) -> float | None:
    """CPU µs per answered request: the named processes' cores (every thread: librdkafka's
    included) over the requests answered per second."""
    if not ok_per_s:
        return None
    return round(sum(cores[name] for name in names) * 1e6 / ok_per_s, 1)


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    seconds = 3 if quick else 5
    account = accounts[0]
    prefix = platform.new_prefix("ingest")
    await platform.ensure_topics(prefix)
    ingest = platform.add("ingest-solo", "ingest", prefix=prefix, core=SERVER_CORE)
    # Two processes on the one port (SO_REUSEPORT) under a parent: free on both cores (two on
    # core 0 would only share it), so the second shares core 1 with wrk.
    duo = platform.add("ingest-duo", "ingest", prefix=prefix, env={"INGEST_PROCESSES": "2"})
    platform.start("ingest-solo", "ingest-duo")
    references = {side: _spawn_reference(platform, side) for side in ("bare", "floor")}
    try:
        await platform.wait_ready("ingest-solo", "ingest-duo")
        for _, port in references.values():
            await _wait_http(f"http://127.0.0.1:{port}/healthz")
        pool = recipients()[:2000]
        bodies = [
            orjson.dumps(template_body(FAST_A, to, f"i{i}")).decode() for i, to in enumerate(pool)
        ]
        headers = {"Authorization": f"Bearer {account.api_key}"}
        urls = {side: f"http://127.0.0.1:{port}{ROUTE}" for side, (_, port) in references.items()}
        urls["ingest"] = ingest.url + ROUTE
        urls["duo"] = duo.url + ROUTE
        # Warm-up: ingest's lookup caches, connection pools, the producer's metadata.
        for side in urls:
            await asyncio.to_thread(
                run_wrk, urls[side], bodies, headers, seconds=2, connections=CONNECTIONS
            )
        pids = {"ingest": ingest.pid, **infra_pids()}
        duo_pids = {"parent": duo.pid, **(await _children(duo.ops_url))}
        side_pids = {
            "ingest": pids,
            "duo": duo_pids,
            **{side: {side: proc.pid} for side, (proc, _) in references.items()},
        }
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in urls}
        cpu: list[dict[str, float]] = []
        before = await scrape(ingest.ops_url)
        order = ("bare", "floor", "ingest", "duo", "duo", "ingest", "floor", "bare")
        for side in order:
            meter = CpuMeter(side_pids[side])
            meter.start()
            result = await asyncio.to_thread(
                run_wrk, urls[side], bodies, headers, seconds=seconds, connections=CONNECTIONS
            )
            result["cores_used"] = cores = meter.stop()
            own = list(duo_pids) if side == "duo" else [side]  # not Kafka's, FerretDB's
            result["cpu_us_per_request"] = _cpu_us(cores, own, result["ok_per_s"])
            if side == "ingest":
                cpu.append(result["cores_used"])
            runs[side].append(result)
            log(
                f"ingest: {side} {result['ok_per_s']:.0f} req/s p50 {result['p50_ms']:.1f} ms "
                f"p99 {result['p99_ms']:.1f} ms errors {result['errors']} "
                f"CPU {result['cpu_us_per_request']} us/request"
            )
        after = await scrape(ingest.ops_url)
    finally:
        for proc, _ in references.values():
            proc.terminate()
            proc.wait(timeout=10)
        platform.stop("ingest-solo", "ingest-duo")

    def mean(side: str, key: str) -> float:
        return round(statistics.fmean(r[key] for r in runs[side]), 2)

    bare_rps, ingest_rps = mean("bare", "ok_per_s"), mean("ingest", "ok_per_s")
    floor_rps = mean("floor", "ok_per_s")
    ratio = round(ingest_rps / bare_rps, 3) if bare_rps else 0.0
    floor_ratio = round(floor_rps / bare_rps, 3) if bare_rps else 0.0
    cores = {name: round(statistics.fmean(c[name] for c in cpu), 2) for name in cpu[0]}
    cpu_ms_per_request = {
        name: round(core * 1000 / ingest_rps, 2) if ingest_rps else None
        for name, core in cores.items()
    }
    errors = sum(r["errors"] for r in runs["ingest"])
    duo_errors = sum(r["errors"] for r in runs["duo"])
    cpu_us = {side: mean(side, "cpu_us_per_request") for side in runs}
    duo_rps = mean("duo", "ok_per_s")
    result = {
        "benchmark": NAME,
        "what": "POST /v1/messages (valid template send, API key) at saturation, wrk 1 thread "
        f"{CONNECTIONS} connections, {seconds} s per run, ABBA order",
        "bare": {
            "requests_per_s": bare_rps,
            "p50_ms": mean("bare", "p50_ms"),
            "p99_ms": mean("bare", "p99_ms"),
            "runs": runs["bare"],
        },
        "ingest": {
            "requests_per_s": ingest_rps,
            "p50_ms": mean("ingest", "p50_ms"),
            "p99_ms": mean("ingest", "p99_ms"),
            "errors": errors,
            "runs": runs["ingest"],
        },
        "floor": {
            "what": "bare handler behind ingest's middleware, answering after an "
            "acknowledgement from another thread (no broker): the most a handler "
            "that waits for a durable publish can reach here",
            "requests_per_s": floor_rps,
            "p50_ms": mean("floor", "p50_ms"),
            "p99_ms": mean("floor", "p99_ms"),
            "ratio_to_bare": floor_ratio,
            "runs": runs["floor"],
        },
        "duo": {
            "what": "INGEST_PROCESSES=2: two processes on the one port (SO_REUSEPORT), free on "
            "both cores; CPU of the parent and both children",
            "requests_per_s": duo_rps,
            "p50_ms": mean("duo", "p50_ms"),
            "p99_ms": mean("duo", "p99_ms"),
            "errors": duo_errors,
            "runs": runs["duo"],
        },
        "cpu_us_per_request": cpu_us,
        "target_cpu_us": TARGET_CPU_US,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO and errors == 0,
        "where_time_goes": {
            "ingest_histograms": _server_side(before, after),
            "cores_used_during_ingest_runs": cores,
            "cpu_ms_per_request": cpu_ms_per_request,
        },
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    result["rows"] = [
        {
            "benchmark": "1 ingest",
            "figures": f"{ingest_rps:.0f} req/s (p50 {result['ingest']['p50_ms']:.1f} / p99 "
            f"{result['ingest']['p99_ms']:.1f} ms) vs bare {bare_rps:.0f} req/s "
            f"(p50 {result['bare']['p50_ms']:.1f} / p99 {result['bare']['p99_ms']:.1f}"
            f" ms) = {ratio:.2f}x"
            + (f", {errors} errors" if errors else "")
            + f"; floor (middleware + an ack, no work) {floor_rps:.0f} req/s = "
            f"{floor_ratio:.2f}x",
            "target": f">= {TARGET_RATIO} x bare",
            "met": result["met"],
        },
        {
            "benchmark": "1 ingest CPU us/request",
            "figures": f"{cpu_us['ingest']} us of CPU per accepted request (every thread of the "
            f"process, librdkafka's included) at {ingest_rps:.0f} req/s; bare handler "
            f"{cpu_us['bare']}, floor {cpu_us['floor']}",
            "target": f"<= {TARGET_CPU_US}",
            "met": cpu_us["ingest"] is not None and cpu_us["ingest"] <= TARGET_CPU_US,
        },
        {
            "benchmark": "1 ingest 1 vs 2 processes",
            "figures": f"1: {ingest_rps:.0f} req/s, p99 {result['ingest']['p99_ms']:.1f} ms, "
            f"{cpu_us['ingest']} us/req; 2 (SO_REUSEPORT): {duo_rps:.0f} req/s, p99 "
            f"{result['duo']['p99_ms']:.1f} ms, {cpu_us['duo']} us/req = "
            f"{duo_rps / ingest_rps if ingest_rps else 0:.2f}x"
            + (f", {duo_errors} errors" if duo_errors else ""),
            "target": "side by side (2 cores, wrk on one)",
            "met": "-",
        },
    ]
    return result
