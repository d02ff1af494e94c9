"""Benchmark `notify`: client events delivered per second to a local receiver, and the lag from
the source event to its delivery, against the pipeline's capacity (benchmark `e2e`).

One notify process (pinned to core 0, its own topic prefix and database) and an aiohttp
receiver in this process (answering 200 at once). Two accounts, each with one standard endpoint
subscribed to everything. The load is written straight to Kafka, five events per message, as
the pipeline writes them: SendRequested (message.accepted), StatusChanged sent, delivered, read,
and the user's InboundReceived (message.received).

- capacity: a backlog of messages written at once; the rate at which their events reach the
  receiver (sustained, after the first second) must be >= 5 x the pipeline's capacity in
  messages/s;
- lag: messages written open-loop at half the pipeline's capacity; p99 of (receipt at the
  receiver - the source event's time) must be < 1 s.

The pipeline's capacity is this run's e2e figure, else the last bench/results/e2e.json, else
48 msg/s (the top of the range bench/README.md reports), said so in the row.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from common import (
    SERVER_CORE,
    CpuMeter,
    Platform,
    infra_pids,
    log,
    percentile,
    read_result,
    sustained_rate,
)

from shared.kafka import make_producer, publish_all
from shared.messages import (
    INBOUND_RECEIVED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    InboundReceived,
    SendRequested,
    StatusChanged,
    Topic,
)
from shared.mongo import make_client
from shared.secrets import TokenVault

NAME = "notify"
EVENTS_PER_MESSAGE = 5
FALLBACK_CAPACITY = 48.0
ACCOUNTS = ("acc_bench_a", "acc_bench_b")


class Receiver:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}  # webhook-id -> first receipt
        self.lags: dict[str, float] = {}  # webhook-id -> receipt - the event's time
        self.duplicates = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event_id = request.headers.get("webhook-id", "")
        if event_id in self.times:
            self.duplicates += 1
        else:
            self.times[event_id] = now
            # every source event of the load is dated when it was written to Kafka
            self.lags[event_id] = now - _ms_of(orjson.loads(body)["timestamp"]) / 1000
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _ms_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def message_events(n: int, account: str, now_ms: int) -> list[tuple[Topic[Any], Any]]:
    """One message's five source events, each dated `now_ms` (the lag's start)."""
    message_id = f"msg_bench{account[-1]}{n:07d}"
    request = SendRequested(
        event_id=message_id,
        message_id=message_id,
        account_id=account,
        portfolio_id="801000000000001",
        waba_id="201000000000001",
        phone_number_id="301000000000001",
        recipient=f"+447400{n:06d}",
        recipient_region="GB",
        message_type="text",
        content={"body": "hi"},
        category="service",
        accepted_at=now_ms,
        expires_at=now_ms + 86_400_000,
        client_reference=f"ref-{n}",
    )
    statuses = [
        StatusChanged(
            event_id=f"{message_id}:{s}",
            message_id=message_id,
            account_id=account,
            status=s,  # type: ignore[arg-type]
            occurred_at=now_ms,
            source="webhook",
            wamid=f"wamid.{message_id}",
        )
        for s in ("sent", "delivered", "read")
    ]
    inbound = InboundReceived(
        event_id=f"wamid.in{message_id}",
        phone_number_id="301000000000001",
        waba_id="201000000000001",
        sender=f"447400{n:06d}",
        wamid=f"wamid.in{message_id}",
        message_type="text",
        sent_at=now_ms,
        content={"body": "thanks"},
        account_id=account,
    )
    return [
        (SEND_REQUESTED, request),
        *[(STATUS_CHANGED, s) for s in statuses],
        (INBOUND_RECEIVED, inbound),
    ]


async def seed_endpoints(platform: Platform, database: str, url: str) -> None:
    vault = TokenVault(platform.token_keys)
    now = int(time.time() * 1000) - 60_000
    mongo = make_client(platform.mongodb_url)
    try:
        for i, account in enumerate(ACCOUNTS):
            secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
            await mongo[database]["webhook_endpoints"].insert_one(
                {
                    "_id": f"we_bench{i}",
                    "account_id": account,
                    "url": url,
                    "events": ["*"],
                    "format": "standard",
                    "enabled": True,
                    "enabled_at": now,
                    "created_at": now,
                    "deleted_at": None,
                    "secrets": [
                        {
                            "id": "s",
                            "encrypted": vault.encrypt(secret),
                            "created_at": now,
                            "expires_at": None,
                        }
                    ],
                }
            )
    finally:
        await mongo.close()


def _capacity() -> tuple[float, str]:
    e2e = read_result("e2e")
    if e2e and "capacity" in e2e:
        return float(e2e["capacity"]["capacity_per_s"]), "e2e"
    return FALLBACK_CAPACITY, "assumed"


async def _wait_for(receiver: Receiver, count: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while len(receiver.times) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # polling with a deadline
    return len(receiver.times) >= count


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    capacity, capacity_source = _capacity()
    backlog = 300 if quick else 1000  # messages
    lag_seconds = 8 if quick else 20
    prefix = platform.new_prefix("notify")
    database = f"{platform.database}_notify"
    await platform.ensure_topics(prefix)
    receiver = Receiver()
    await receiver.start()
    await seed_endpoints(platform, database, f"http://127.0.0.1:{receiver.port}/hook")
    proc = platform.add("notify-solo", "notify", prefix=prefix, database=database, core=SERVER_CORE)
    platform.start("notify-solo")
    # The benchmark's own producer (the set-up principal) publishes what the other services
    # would; notify reads it as its own principal, hala-notify.
    producer = make_producer(platform.kafka, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        await platform.wait_ready("notify-solo")
        # warm-up: a few messages through every path
        now = int(time.time() * 1000)
        await publish_all(
            producer,
            [e for n in range(5) for a in ACCOUNTS for e in message_events(900_000 + n, a, now)],
            prefix,
        )
        await _wait_for(receiver, 5 * len(ACCOUNTS) * EVENTS_PER_MESSAGE, 60)
        receiver.times.clear()
        receiver.lags.clear()

        # 1. capacity: a backlog
        meter = CpuMeter({"notify": proc.pid, **infra_pids()})
        meter.start()
        now = int(time.time() * 1000)
        items = [
            e for n in range(backlog // 2) for a in ACCOUNTS for e in message_events(n, a, now)
        ]
        await publish_all(producer, items, prefix)
        complete = await _wait_for(receiver, len(items), 180)
        cores = meter.stop()
        events_per_s = sustained_rate(list(receiver.times.values())) or 0.0
        delivered_backlog = len(receiver.times)
        log(
            f"notify: backlog {len(items)} events, {delivered_backlog} delivered, "
            f"{events_per_s:.0f} events/s"
        )

        # 2. lag at half the pipeline's capacity, open loop
        receiver.times.clear()
        receiver.lags.clear()
        rate = capacity / 2  # messages/s
        total = int(rate * lag_seconds)
        started = time.monotonic()
        sent = 0
        for n in range(total):
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            account = ACCOUNTS[n % len(ACCOUNTS)]
            await publish_all(
                producer, message_events(100_000 + n, account, int(time.time() * 1000)), prefix
            )
            sent += EVENTS_PER_MESSAGE
        lag_complete = await _wait_for(receiver, sent, 60)
        lags = list(receiver.lags.values())
        p50, p99 = percentile(lags, 50), percentile(lags, 99)
        log(f"notify: {rate:.0f} msg/s -> {sent} events, p50 {p50} p99 {p99} s")
    finally:
        await producer.stop()
        platform.stop("notify-solo")
        await receiver.stop()
    required = EVENTS_PER_MESSAGE * capacity
    met_capacity = complete and events_per_s >= required
    met_lag = lag_complete and p99 is not None and p99 < 1.0
    result = {
        "benchmark": NAME,
        "what": "one notify process (core 0), events written straight to Kafka (5 per message: "
        "accepted, sent, delivered, read, received), two accounts with one endpoint "
        "each, a local aiohttp receiver answering 200",
        "pipeline_capacity_per_s": capacity,
        "capacity_source": capacity_source,
        "backlog_events": len(items),
        "backlog_delivered": delivered_backlog,
        "events_per_s": round(events_per_s, 1),
        "required_events_per_s": required,
        "events_per_message_at_capacity": round(events_per_s / capacity, 1),
        "lag_rate_msgs_per_s": rate,
        "lag_events": sent,
        "lag_delivered": len(lags),
        "lag_p50_s": p50,
        "lag_p99_s": p99,
        "duplicates": receiver.duplicates,
        "cores_used": cores,
        "met": met_capacity and met_lag,
    }
    source = "" if capacity_source == "e2e" else " (assumed: no e2e result)"
    result["rows"] = [
        {
            "benchmark": "8 client events",
            "figures": f"{events_per_s:.0f} events/s delivered = "
            f"{events_per_s / capacity:.1f} per message at {capacity:.0f} msg/s"
            f"{source}; p99 lag {(p99 or 0) * 1000:.0f} ms (p50 "
            f"{(p50 or 0) * 1000:.0f}) at {rate:.0f} msg/s",
            "target": ">= 5 events/msg at capacity; p99 < 1 s at half",
            "met": met_capacity and met_lag,
        }
    ]
    return result
