"""Running the billing service as a real process against the local broker and database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import ConsumerRecord, TopicPartition

from services.billing.worker import INPUT_TOPICS
from shared.kafka import KafkaConfig, make_admin, make_consumer, topic_name
from shared.messages import Topic, TopUpRequested, sign_top_up
from shared.ports import free_loopback_port
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[3]
# The top-up signing key the billing processes of these tests hold (as the admin tool does).
TOPUP_KEY = "it-billing-topup-signing-key"
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 60.0,
    every: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class BillingProcess:
    """`python -m services.billing` with its own topics, group, database and ops port, as
    billing's own Kafka principal (the test grants its prefix first)."""

    def __init__(
        self,
        *,
        broker: Broker,
        mongodb_url: str,
        prefix: str,
        database: str,
        app_id: str,
        log_dir: Path,
        module: str = "services.billing",
        env: dict[str, str] | None = None,
        **settings: str,
    ) -> None:
        self.module = module  # a test-only entry point may plant a bug in a dependency
        self.port = free_loopback_port()
        self.group = prefix + app_id  # faust's app id, prefixed like the topics
        self.env = {
            **os.environ,
            **broker.env("billing"),
            "MONGODB_URL": mongodb_url,
            "HALA_TOPIC_PREFIX": prefix,
            "MONGODB_DATABASE": database,
            "BILLING_FAUST_APP_ID": app_id,
            "BILLING_OPS_PORT": str(self.port),
            "BILLING_FAUST_DATADIR": str(log_dir / "faust"),
            "HALA_TOPUP_SIGNING_KEY": TOPUP_KEY,
            **{f"BILLING_{k.upper()}": v for k, v in settings.items()},
            **(env or {}),
        }
        self.log_path = log_dir / f"billing-{self.group}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BillingProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    async def readiness(self) -> dict[str, Any] | None:
        self._check_alive()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{self.port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response,
            ):
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metric(self, sample: str) -> float | None:
        """The value of one sample on /metrics (e.g. `billing_charges_total`), if exposed."""
        self._check_alive()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            text = await response.text()
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return None

    async def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        return await eventually(self.readiness, timeout=timeout, what="billing /readyz")

    def kill_9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"billing exited with {self.process.returncode}:\n{self.log_tail()}"
            )


async def drained(kafka: KafkaConfig, group: str, prefix: str) -> bool:
    """True when `group` has committed every record of billing's input topics."""
    admin = make_admin(kafka)
    await admin.start()
    consumer = make_consumer(kafka, f"{group}-probe")
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [
            TopicPartition(topic_name(t, prefix), p)
            for t in INPUT_TOPICS
            for p in range(t.partitions)
        ]
        ends = await consumer.end_offsets(partitions)
        return all(
            (committed[tp].offset if tp in committed else 0) >= end for tp, end in ends.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


async def read_all(
    kafka: KafkaConfig,
    topic: Topic[Any],
    prefix: str,
    *,
    dead_letters: bool = False,
    timeout: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on a topic (or its DLQ), from the beginning to the end offsets at the time
    of the call."""
    name = topic_name(topic.dlq if dead_letters else topic, prefix)
    partitions = [TopicPartition(name, p) for p in range(1 if dead_letters else topic.partitions)]
    consumer = make_consumer(kafka, None)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: read {len(records)} records, not to the end")
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def signed_top_up(account_id: str, amount: int, event_id: str) -> TopUpRequested:
    """A top-up as `hala credits topup` makes it: signed with the key billing holds here."""
    return sign_top_up(
        TopUpRequested(
            event_id=event_id,
            account_id=account_id,
            amount=amount,
            requested_at=1_764_000_000_000,
            operator="it",
        ),
        TOPUP_KEY.encode(),
    )
