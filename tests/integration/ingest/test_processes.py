"""INGEST_PROCESSES=2: two ingest processes answer on one client port (SO_REUSEPORT), the
parent's ops port reports both, and a child that dies is started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from shared.messages import ALL_TOPICS
from shared.ports import free_loopback_port
from tests.conftest import Broker
from tests.e2e.conftest import eventually

REPO = Path(__file__).resolve().parents[3]


def _served(metrics: str, route: str) -> float:
    """hala_http_requests_total of one route, from a /metrics page."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("hala_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_ingest_processes_answer_on_one_port_and_a_dead_one_is_restarted(
    broker: Broker, mongodb_url: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"t{unique}."
    await broker.grant(
        prefix, [t for t in ALL_TOPICS if "ingest" in t.producers or "ingest" in t.consumers]
    )
    port, ops = free_loopback_port(), free_loopback_port()
    env = {
        **os.environ,
        **broker.env("ingest"),
        "HALA_ENV": "development",
        "MONGODB_URL": mongodb_url,
        "MONGODB_DATABASE": f"it_{unique}",
        "HALA_TOPIC_PREFIX": prefix,
        "INGEST_HTTP_PORT": str(port),
        "INGEST_OPS_PORT": str(ops),
        "INGEST_PROCESSES": "2",
    }
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as session:

            async def readiness() -> dict[str, Any]:
                assert parent.poll() is None, log.read_text()[-3000:]
                try:
                    async with session.get(f"http://127.0.0.1:{ops}/readyz") as resp:
                        return dict(await resp.json())
                except aiohttp.ClientError:
                    return {}

            async def ready() -> bool:
                return bool((await readiness()).get("ready"))

            await eventually(ready, within=90, what="both ingest processes ready")
            children = (await readiness())["processes"]
            assert sorted(children) == ["0", "1"]
            pids = {c["pid"] for c in children.values()}
            assert len(pids) == 2 and parent.pid not in pids

            # Each request on a new connection: the kernel spreads connections over the two.
            for _ in range(40):
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.get(f"http://127.0.0.1:{port}/openapi.json") as resp,
                ):
                    assert resp.status == 200
            served = []
            for child in children.values():
                async with session.get(f"http://127.0.0.1:{child['ops_port']}/metrics") as resp:
                    served.append(_served(await resp.text(), "/openapi.json"))
            assert all(n > 0 for n in served), served
            assert sum(served) == 40
            # The parent's /metrics sums the children's.
            async with session.get(f"http://127.0.0.1:{ops}/metrics") as resp:
                assert _served(await resp.text(), "/openapi.json") == 40

            # A child killed is started again; the port keeps answering meanwhile.
            os.kill(children["0"]["pid"], signal.SIGKILL)

            async def restarted() -> bool:
                now = await readiness()
                child = now.get("processes", {}).get("0", {})
                return bool(now.get("ready")) and child.get("pid") not in pids

            await eventually(restarted, within=90, what="the killed process restarted")
            async with session.get(f"http://127.0.0.1:{port}/openapi.json") as resp:
                assert resp.status == 200
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0, log.read_text()[-3000:]
