"""Benchmark `webhooks`: signed webhook POSTs per second that the status service accepts durably
(answered 200 only after Kafka acknowledged the raw bytes, acks=all), against Meta's sizing rule
for a webhook receiver: 3 x outbound messages/s + 1 x inbound messages/s.

One status process (pinned to core 0, its own topic prefix and database; its processor and state
writer run as in production and consume what it publishes) and wrk on core 1 POSTing a fixed
`delivered` status webhook with a valid X-Hub-Signature-256. The accepted count is read back
from the broker (records on webhooks.received), not trusted from the load generator.

The outbound rate is the pipeline's capacity measured by benchmark `e2e` (this run's, else the
last bench/results/e2e.json); inbound is assumed equal to it (every message answered), so the
requirement is 4 x capacity.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

from common import (
    APP_SECRET,
    FAST_A,
    SERVER_CORE,
    CpuMeter,
    Platform,
    infra_pids,
    log,
    read_result,
    record_count,
    run_wrk,
)

from shared.kafka import topic_name
from shared.messages import WEBHOOK_RECEIVED

NAME = "webhooks"
CONNECTIONS = 32
OUTBOUND_FACTOR, INBOUND_FACTOR = 3, 1


def status_webhook() -> bytes:
    """One `delivered` status in Meta's shape, serialised compactly on one line."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "201000000000001",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550100001",
                                "phone_number_id": FAST_A,
                            },
                            "statuses": [
                                {
                                    "id": "wamid.HBgMNDQ3NDAwMDAwMDAxFQIAERgSQkVOQ0hNQVJLAA==",
                                    "status": "delivered",
                                    "timestamp": str(int(time.time())),
                                    "recipient_id": "447400000001",
                                    "pricing": {
                                        "billable": True,
                                        "pricing_model": "PMP",
                                        "type": "regular",
                                        "category": "utility",
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _capacity(results: dict[str, Any] | None) -> float | None:
    if not results or "capacity" not in results:
        return None
    return float(results["capacity"]["capacity_per_s"])


async def run(
    platform: Platform, accounts: list[Any], quick: bool, capacity: float | None = None
) -> dict[str, Any]:
    seconds = 4 if quick else 8
    prefix = platform.new_prefix("webhooks")
    await platform.ensure_topics(prefix)
    proc = platform.add(
        "status-solo",
        "status",
        prefix=prefix,
        database=f"{platform.database}_webhooks",
        core=SERVER_CORE,
    )
    platform.start("status-solo")
    body = status_webhook()
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature}
    url = proc.url + "/webhooks/meta"
    topic = topic_name(WEBHOOK_RECEIVED, prefix)
    try:
        await platform.wait_ready("status-solo")
        await asyncio.to_thread(
            run_wrk, url, [body.decode()], headers, seconds=2, connections=CONNECTIONS
        )  # warm-up
        before = await record_count(platform.kafka, topic, WEBHOOK_RECEIVED.partitions)
        meter = CpuMeter({"status": proc.pid, **infra_pids()})
        meter.start()
        load = await asyncio.to_thread(
            run_wrk, url, [body.decode()], headers, seconds=seconds, connections=CONNECTIONS
        )
        cores = meter.stop()
        after = await record_count(platform.kafka, topic, WEBHOOK_RECEIVED.partitions)
    finally:
        platform.stop("status-solo")
    # Every 2xx was answered after Kafka acknowledged its record (that is the handler's
    # contract, checked here: records >= 2xx answers). Records can exceed the answers wrk counted
    # by the requests still in flight when wrk stopped (at most one per connection).
    durable = after - before
    answered_ok = load["requests"] - load["errors"]
    durable_per_s = min(durable, answered_ok) / load["duration_s"]
    if capacity is None:
        capacity = _capacity(read_result("e2e"))
    required = None if capacity is None else (OUTBOUND_FACTOR + INBOUND_FACTOR) * capacity
    met = (
        required is not None
        and durable_per_s >= required
        and load["non_2xx"] == 0
        and durable >= answered_ok
    )
    log(
        f"webhooks: {durable_per_s:.0f}/s durable ({load['ok_per_s']:.0f}/s answered 2xx), "
        f"p50 {load['p50_ms']:.1f} p99 {load['p99_ms']:.1f} ms; required {required}"
    )
    result = {
        "benchmark": NAME,
        "what": f"POST /webhooks/meta, fixed signed status body, wrk 1 thread {CONNECTIONS} "
        f"connections {seconds} s, status pinned to core {SERVER_CORE}",
        "load": load,
        "durable_records": durable,
        "answered_2xx": answered_ok,
        "every_2xx_durable": durable >= answered_ok,
        "durable_per_s": round(durable_per_s, 1),
        "pipeline_capacity_per_s": capacity,
        "required_per_s": required,
        "rule": f"{OUTBOUND_FACTOR} x outbound + {INBOUND_FACTOR} x inbound, inbound assumed = "
        "outbound = the pipeline's measured capacity",
        "headroom": round(durable_per_s / required, 1) if required else None,
        "cores_used": cores,
        "met": met,
    }
    required_text = "n/a (no e2e capacity)" if required is None else f"{required:.0f}/s"
    result["rows"] = [
        {
            "benchmark": "5 webhook intake",
            "figures": f"{durable_per_s:.0f} POST/s durable (p50 {load['p50_ms']:.1f} / p99 "
            f"{load['p99_ms']:.1f} ms, {load['non_2xx']} non-2xx) vs need "
            f"{required_text}",
            "target": ">= 3 x out + 1 x in mps",
            "met": met,
        }
    ]
    return result
