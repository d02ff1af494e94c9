"""A real Prometheus server (Debian's package, installed by `make test`) scrapes the running
platform, and a query returns the pipeline's traffic after messages flow."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import yaml

from shared.ports import free_loopback_port
from tests.e2e.conftest import Stack, eventually, seed_accounts
from tests.e2e.test_pipeline import TOP_UP, open_windows, plan_workload, submit


def _prometheus_config(stack: Stack) -> dict:
    # The ops ports: the client ports serve no /metrics.
    targets = [
        {"targets": [stack.ops_url(name).removeprefix("http://")], "labels": {"service": name}}
        for name in ("ingest", "status", "sender", "billing", "notify", "guard")
    ]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "hala", "static_configs": targets}],
    }


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> float | None:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_every_service_and_sees_the_pipeline_traffic(
    stack: Stack, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing: run `make tools`"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_prometheus_config(stack)))
    port = free_loopback_port()
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        accounts = await seed_accounts(stack, TOP_UP, customer_service_window_check=False)
        plan = plan_workload(accounts, 60)
        await open_windows(stack, plan)
        async with aiohttp.ClientSession() as session:

            async def every_target_up() -> bool | float | None:
                try:
                    up = await _query(session, base, 'sum(up{job="hala"})')
                except aiohttp.ClientError:
                    return None
                return True if up == 6 else up

            await eventually(every_target_up, within=60, what="6 scrape targets up")

            async def seen(promql: str, at_least: float) -> bool | float | None:
                value = await _query(session, base, promql)
                return True if value is not None and value >= at_least else value

            # In two halves, each seen by a scrape: a rate needs an increase between samples
            # (the pipeline can finish a small batch within one scrape interval).
            await submit(stack, plan[:30])
            await eventually(
                lambda: seen("sum(sender_accept_to_meta_seconds_count)", 1),
                within=120,
                every=1,
                what="the first half sent, in Prometheus",
            )
            await submit(stack, plan[30:])

            async def traffic_seen() -> bool | dict:
                accepted = await _query(session, base, "sum(ingest_messages_accepted_total)")
                sent = await _query(session, base, 'sum(sender_outcomes_total{status="sent"})')
                delivered = await _query(
                    session, base, "sum(status_accept_to_delivered_seconds_count)"
                )
                seen = {"accepted": accepted, "sent": sent, "delivered": delivered}
                return True if accepted == 60 and sent and delivered else seen

            await eventually(
                traffic_seen, within=120, every=1, what="the pipeline's traffic in Prometheus"
            )
            # Latency is queryable as the dashboards query it.
            p99 = await _query(
                session,
                base,
                "histogram_quantile(0.99, sum by (le) "
                "(rate(sender_accept_to_meta_seconds_bucket[1m])))",
            )
            assert p99 is not None and p99 > 0
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        await asyncio.sleep(0)
