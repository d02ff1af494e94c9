"""The composition root: `python -m tools.metasim` starts, reads METASIM_* settings, serves."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from shared.ports import free_loopback_port

ROOT = Path(__file__).resolve().parents[2]


async def test_module_entry_point_serves_health_on_the_env_port() -> None:
    port = free_loopback_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.metasim",
        cwd=ROOT,
        env={"METASIM_PORT": str(port), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def first_health(session: aiohttp.ClientSession) -> dict:
        while True:
            assert process.returncode is None, "simulator exited"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return await response.json()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as session:
            assert await asyncio.wait_for(first_health(session), 20) == {"status": "ok"}
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
