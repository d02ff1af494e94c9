"""A service as deployed, in its own process: ingest with a certificate serves its client API
over HTTPS only, and its ops endpoints (/healthz, /readyz, /metrics) on their own loopback
port only; it connects to Kafka as its own principal and reports both dependencies ready."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from shared.messages import ALL_TOPICS
from shared.ports import free_loopback_port
from tests.conftest import Broker
from tests.e2e.conftest import eventually
from tools import pki

REPO = Path(__file__).resolve().parents[2]


async def test_ingest_serves_its_api_over_https_and_ops_on_their_own_port(
    broker: Broker, mongodb_url: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"t{unique}."
    # every topic ingest writes or reads: it waits for all of them before it is ready
    await broker.grant(
        prefix, [t for t in ALL_TOPICS if "ingest" in t.producers or "ingest" in t.consumers]
    )
    tls = pki.issue(tmp_path / "tls", "ingest")
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
        "INGEST_TLS_CERT_FILE": str(tls.cert),
        "INGEST_TLS_KEY_FILE": str(tls.key),
    }
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client_tls = ssl.create_default_context(cafile=str(tls.ca))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:

            async def ready() -> bool | str:
                assert process.poll() is None, log.read_text()[-3000:]
                try:
                    async with session.get(f"http://127.0.0.1:{ops}/readyz") as resp:
                        return resp.status == 200 or await resp.text()
                except aiohttp.ClientError as exc:
                    return repr(exc)

            await eventually(ready, within=60, what="ingest ready on its ops port")
            async with session.get(f"http://127.0.0.1:{ops}/readyz") as resp:
                assert (await resp.json())["dependencies"] == {"kafka": "ok", "mongodb": "ok"}
            async with session.get(f"http://127.0.0.1:{ops}/metrics") as resp:
                assert resp.status == 200 and "ingest_" in await resp.text()

            async with session.get(f"https://localhost:{port}/openapi.json") as resp:
                assert resp.status == 200
                assert "/v1/messages" in (await resp.json())["paths"]
            for ops_path in ("/metrics", "/readyz", "/healthz"):  # not on the client port
                async with session.get(f"https://localhost:{port}{ops_path}") as resp:
                    assert resp.status == 404, ops_path
            async with session.get(f"http://127.0.0.1:{ops}/openapi.json") as resp:
                assert resp.status == 404  # and no client route on the ops port
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{port}/openapi.json")  # plain HTTP
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
