"""notify as its own process (`python -m services.notify`), killed -9 in the middle of a retry
storm and started again: no event is lost, every one arrives verifiable under its first id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from standardwebhooks import Webhook

from shared.messages import SEND_REQUESTED
from shared.ports import free_loopback_port
from tests.integration.notify.conftest import Flaky, NotifyWorld, eventually
from tests.integration.notify.test_delivery import request

REPO = Path(__file__).resolve().parents[3]


def start(world: NotifyWorld, port: int, log: Path, database: str) -> subprocess.Popen[bytes]:
    """notify as deployed: its own Kafka principal, its ops endpoints on `port`."""
    env = {
        **os.environ,
        **world.broker.env("notify"),
        "PYTHONUNBUFFERED": "1",
        "MONGODB_URL": world.mongodb_url,
        "MONGODB_DATABASE": database,
        "HALA_TOPIC_PREFIX": world.prefix,
        "HALA_TOKEN_KEYS": world.token_keys,
        "HALA_ENV": "development",
        "NOTIFY_OPS_PORT": str(port),
        "NOTIFY_RETRY_SCHEDULE_SECONDS": "0.3,0.6,1,1,1,1,1,1,1,1",
        "NOTIFY_POLL_INTERVAL_SECONDS": "0.2",
        "NOTIFY_SMTP_PORT": str(world.mailbox.port),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.notify"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as session:

        async def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"notify exited:\n{log.read_text()[-3000:]}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(answers, within=60, what="notify ready")


async def test_kill_9_in_a_retry_storm_loses_no_event(
    world: NotifyWorld, tmp_path: Path, unique: str
) -> None:
    [secret] = await world.add_endpoint("we_a", "a")
    flaky = Flaky()  # 503 until told otherwise
    world.receivers.behaviours["a"] = flaky
    port, log = free_loopback_port(), tmp_path / "notify.log"
    process = start(world, port, log, f"it_{unique}")
    try:
        await ready(port, process, log)
        for i in range(20):
            await world.publish(SEND_REQUESTED, request(f"msg_{i}"))

        async def storming() -> bool:
            retries = {"attempt": {"$gte": 2}}
            return await world.db["delivery_attempts"].count_documents(retries) >= 5

        await eventually(storming, within=60, what="retries under way")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for i in range(20, 30):  # published while notify is dead
            await world.publish(SEND_REQUESTED, request(f"msg_{i}"))
        flaky.up = True
        process = start(world, port, log, f"it_{unique}")
        await ready(port, process, log)

        def delivered_ids() -> set[str]:
            return {
                r.headers["webhook-id"] for r in world.receivers.at("a") if r.at >= flaky.up_since
            }

        await eventually(
            lambda: _true(len(delivered_ids()) == 30),
            within=90,
            what="all 30 events after the restart",
        )
        oks = [r for r in world.receivers.at("a") if r.at >= flaky.up_since]
        verified = {Webhook(secret).verify(r.body, r.headers)["data"]["message_id"] for r in oks}
        assert verified == {f"msg_{i}" for i in range(30)}

        async def settled() -> bool:
            return await world.db["deliveries"].count_documents({"state": "delivered"}) == 30

        await eventually(settled, within=30, what="every delivery settled")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


async def _true(value: bool) -> bool:
    return value
