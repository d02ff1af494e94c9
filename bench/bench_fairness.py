"""Benchmark `fairness`: one tenant's flood on a slow number does not slow another tenant's
number down.

One sender process with its default settings, on its own topic prefix, against the simulator
with webhooks off; SendApproved records are written straight to send-approved (like `pacing`).
Tenant A (Alpha) sends from FLOOD_A, a 20 mps number; tenant B (Beta) from FAIR_B, an 80 mps
number on another partition.

  Phase 1 (B alone): B writes a backlog of N messages       -> B's sustained rate alone
  Phase 2: A writes a flood of 25,000 messages (more than the sender holds in memory,
           SENDER_MAX_QUEUED = 20,000), then, once the sender has had it for 3 s, B writes
           the same N messages again                          -> B's sustained rate next to it
Compared: B's rate next to the flood / B's rate alone (target >= 0.95), side by side in one
run. Also A's own rate during phase 2 (its number stays busy), B's rate / its limit, and the
simulator's count of 130429/131056 answers (target 0). Before the sender paused only the
partitions that are behind, the flood filled the sender's memory, every partition was paused
until half of it had drained at 20 mps (about 8 minutes), and B starved.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench_pacing import PACING_CODES, approved, start_sender
from common import (
    FAIR_B,
    FLOOD_A,
    Platform,
    eventually,
    log,
    metric_sum,
    produce_all,
    recipients,
    scrape,
    sustained_rate,
)

from shared.messages import SEND_APPROVED

NAME = "fairness"
TARGET_RATIO = 0.95
FLOOD = 25_000
FAIR_MPS, FLOOD_MPS = 80, 20
SETTLE_S = 3.0


async def _sent(platform: Platform, number: str, ids: set[str]) -> list[float]:
    """The simulator's acceptance times of these messages."""
    return [
        s["accepted_at"]
        for s in await platform.sim_sends(phone_number_id=number)
        if s["biz_opaque_callback_data"] in ids
    ]


async def _backlog_of_b(
    platform: Platform, prefix: str, beta: Any, pool: Any, n: int, tag: str
) -> tuple[list[float], float]:
    """Write B's backlog and wait (bounded) until it is sent; its acceptance times, and the
    seconds it was given."""
    now_ms = int(time.time() * 1000)
    backlog = [approved(beta, FAIR_B, next(pool), tag, now_ms) for _ in range(n)]
    ids = {m.message_id for m in backlog}
    await produce_all(platform.kafka, prefix, [(SEND_APPROVED, m) for m in backlog])
    within = n / FAIR_MPS * 1.5 + 10

    async def done() -> bool | str:
        sent = len(await _sent(platform, FAIR_B, ids))
        return sent >= n or f"{sent}/{n} of B sent"

    try:
        await eventually(done, within=within, every=1, what=f"B's backlog ({tag}) sent")
    except TimeoutError as exc:
        log(f"fairness: {exc}")  # measured over what went out in the time given
    return await _sent(platform, FAIR_B, ids), within


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    n = 800 if quick else 2400  # 10 s / 30 s of B's number
    alpha, beta = accounts[0], accounts[1]
    await platform.sim("POST", "/_sim/reset", json={})
    await platform.sim("POST", "/_sim/webhooks/config", json={"enabled": False})
    prefix = platform.new_prefix("fair")
    await platform.ensure_topics(prefix)
    database = await platform.fork_database("fairness", ["phone_numbers"])
    names = await start_sender(platform, "sender-fairness", prefix, database)
    sender_url = platform.procs[names[0]].ops_url
    pool = iter(recipients()[150_000:])
    try:
        alone, _ = await _backlog_of_b(platform, prefix, beta, pool, n, "fb1")

        now_ms = int(time.time() * 1000)
        flood = [approved(alpha, FLOOD_A, next(pool), "fa", now_ms) for _ in range(FLOOD)]
        flood_ids = {m.message_id for m in flood}
        produce_s = await produce_all(platform.kafka, prefix, [(SEND_APPROVED, m) for m in flood])
        await asyncio.sleep(SETTLE_S)  # the sender takes the flood in before B's next burst
        flood_started = time.time()
        beside, _ = await _backlog_of_b(platform, prefix, beta, pool, n, "fb2")
        flood_ended = time.time()
        metrics = await scrape(sender_url)
        flood_sent = [
            t
            for t in await _sent(platform, FLOOD_A, flood_ids)
            if flood_started <= t <= flood_ended
        ]
        violations = await platform.sim_violations()
    finally:
        platform.stop(*names)
        await platform.drop_database(database)

    rate_alone = sustained_rate(alone) or 0.0
    rate_beside = sustained_rate(beside) or 0.0
    ratio = rate_beside / rate_alone if rate_alone else 0.0
    rate_flood = sustained_rate(flood_sent) or 0.0
    tripped = {code: violations.get(code, 0) for code in PACING_CODES}
    result: dict[str, Any] = {
        "benchmark": NAME,
        "fair_number": {
            "mps_limit": FAIR_MPS,
            "backlog": n,
            "alone": {"sent": len(alone), "sustained_per_s": round(rate_alone, 2)},
            "beside_flood": {"sent": len(beside), "sustained_per_s": round(rate_beside, 2)},
            "ratio": round(ratio, 3),
            "share_of_limit": round(rate_beside / FAIR_MPS, 3),
        },
        "flood_number": {
            "mps_limit": FLOOD_MPS,
            "flood": FLOOD,
            "produced_in_s": round(produce_s, 2),
            "sent_during_b": len(flood_sent),
            "sustained_per_s": round(rate_flood, 2),
        },
        "sender": {
            "partitions_paused_at_end": metric_sum(metrics, "sender_partitions_paused"),
            "queued_at_end": metric_sum(metrics, "sender_messages_queued"),
        },
        "violations": violations,
        "pacing_violations": tripped,
        "met": ratio >= TARGET_RATIO and sum(tripped.values()) == 0,
    }
    log(
        f"fairness: B alone {rate_alone:.1f}/s, beside A's flood {rate_beside:.1f}/s "
        f"(x{ratio:.3f}); A {rate_flood:.1f}/s; violations {violations}"
    )
    result["rows"] = [
        {
            "benchmark": "3 fairness: B beside A's flood",
            "figures": f"B {rate_beside:.1f} msg/s beside A's flood vs {rate_alone:.1f} alone = "
            f"{ratio:.3f}x ({len(beside)}/{n} sent; A's 20 mps number "
            f"{rate_flood:.1f}/s meanwhile; 130429/131056: "
            f"{sum(tripped.values())})",
            "target": f">= {TARGET_RATIO} x alone, 0 refusals",
            "met": result["met"],
        },
    ]
    return result
