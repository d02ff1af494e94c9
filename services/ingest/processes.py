"""N ingest processes on one port (`INGEST_PROCESSES`): a parent that starts and supervises them.

One Python process serves one core at most. With `INGEST_PROCESSES=N` (N > 1), `python -m
services.ingest` starts N children, each a whole ingest (its own producer, database client and
caches) binding the client port with SO_REUSEPORT: the kernel spreads new connections over them.
The parent serves no client request; it:
- gives each child its ops endpoints on a free loopback port of its own (the parent's own
  `INGEST_OPS_PORT` stays the one to probe and scrape, so ports never collide with the other
  services' or with each other);
- answers /healthz (every child running), /readyz (every child's /readyz, listed by index) and
  /metrics: the children's metrics summed by prometheus-client's multiprocess mode
  (`PROMETHEUS_MULTIPROC_DIR`, a directory it makes and removes; gauges carry a `pid` label);
- restarts a child that exits, after `RESTART_DELAY_S`, and passes SIGTERM/SIGINT on to all of
  them, waiting up to `STOP_TIMEOUT_S` for each to finish what it accepted.

What is per process stays per process: the request rate limits' buckets (an account may get up to
N times its limit, as with N replicas: services/ingest/README.md) and the in-memory caches.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from shared.http import json_response, start_site, stop_event_on_signals
from shared.logging import get_logger
from shared.ports import free_loopback_port

log = get_logger("ingest")

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0


@dataclass
class Child:
    index: int
    ops_port: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, processes: int, ops_host: str, ops_port: int) -> None:
        self._ops_host, self._ops_port = ops_host, ops_port
        self._kids = [Child(i, free_loopback_port()) for i in range(processes)]
        self._metrics_dir = tempfile.mkdtemp(prefix="ingest-metrics-")
        self._stopping = False

    def _env(self, child: Child) -> dict[str, str]:
        return {
            **os.environ,
            "INGEST_PROCESSES": "1",
            "INGEST_PROCESS_INDEX": str(child.index),
            "INGEST_REUSE_PORT": "true",
            "INGEST_OPS_HOST": "127.0.0.1",
            "INGEST_OPS_PORT": str(child.ops_port),
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
        }

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ingest", env=self._env(child)
        )
        log.info(
            "ingest_process_started",
            index=child.index,
            pid=child.process.pid,
            ops_port=child.ops_port,
        )

    async def _keep(self, child: Child) -> None:
        """Run the child; start it again whenever it exits, until the supervisor stops."""
        while not self._stopping:
            await self._start(child)
            assert child.process is not None
            if self._stopping:  # the stop began while it was starting
                child.process.send_signal(signal.SIGTERM)
            code = await child.process.wait()
            mark_process_dead(child.process.pid, self._metrics_dir)
            if self._stopping:
                return
            child.restarts += 1
            log.error("ingest_process_exited", index=child.index, code=code, restarting=True)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _stop_children(self) -> None:
        """SIGTERM to every child (each stops serving, then flushes what it accepted), then
        wait for them; one that takes longer than STOP_TIMEOUT_S is killed."""
        self._stopping = True
        running = [
            c.process for c in self._kids if c.process is not None and c.process.returncode is None
        ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                log.error("ingest_process_stop_timed_out", pid=process.pid)
                process.kill()
                await process.wait()

    def ops_app(self) -> web.Application:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)

        async def healthz(_: web.Request) -> web.Response:
            running = [c.process is not None and c.process.returncode is None for c in self._kids]
            return json_response(
                {"status": "ok" if all(running) else "degraded", "service": "ingest"},
                status=200 if all(running) else 503,
            )

        async def readyz(_: web.Request) -> web.Response:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
            ) as session:
                results = await asyncio.gather(*(self._ready(session, c) for c in self._kids))
            ready = all(results)
            return json_response(
                {
                    "ready": ready,
                    "service": "ingest",
                    "processes": {
                        str(c.index): {
                            "status": "ok" if ok else "unavailable",
                            "pid": c.process.pid if c.process is not None else None,
                            "ops_port": c.ops_port,
                            "restarts": c.restarts,
                        }
                        for c, ok in zip(self._kids, results, strict=True)
                    },
                },
                status=200 if ready else 503,
            )

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        return app

    @staticmethod
    async def _ready(session: aiohttp.ClientSession, child: Child) -> bool:
        try:
            async with session.get(f"http://127.0.0.1:{child.ops_port}/readyz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def run(self) -> None:
        stop = stop_event_on_signals()
        runner = await start_site(self.ops_app(), self._ops_host, self._ops_port)
        keepers = [asyncio.create_task(self._keep(c)) for c in self._kids]
        log.info("ingest_supervisor_started", processes=len(self._kids), ops_port=self._ops_port)
        try:
            await stop.wait()
            await self._stop_children()
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await runner.cleanup()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.info("service_stopped")
