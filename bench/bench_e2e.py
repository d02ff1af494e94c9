"""Benchmark `e2e` (and `memory`): the whole pipeline — ingest, billing, sender, the simulator,
status — with open-loop load (requests leave on schedule whether or not earlier ones were
answered).

1. Capacity: an open-loop ramp of rising rates (5 s each). A step is sustained when nearly
   every message of it reached the simulator and had its `delivered` status stored within a
   2 s grace after the step, and both times (to Meta, to delivered stored) kept a median under
   0.5 s and did not grow through the step (the lower quartile of its last third at most 0.1 s
   above that of its first third: no backlog building up anywhere in the pipeline; a single
   stall of the shared machine does not count as one); a step that is not gets one more try
   after the pipeline drained, and the ramp stops at the first step that fails twice. The
   capacity is the last sustained rate. Also reported: the rate at which the simulator accepted
   messages during the saturated step and its grace (what the pipeline delivers when
   overloaded).
2. Latency at 25 %, 50 % and 90 % of that capacity: for every message, from the client's receipt
   of ingest's 202 to the simulator's `accepted_at` (/_sim/sends, matched by the callback data =
   our message id), and to the `delivered` status stored in the messages document (its
   `updated_at` once its status is `delivered`: the simulator sends no `read` here, so that write
   is the delivered one). Also from ingest's own `accepted_at` and from the client's send time.
3. Memory: peak VmRSS of every service process over the whole benchmark.
4. Cost per message at 50 % of capacity (`cost.py`): CPU ms of every process (services, the
   simulator, Kafka's JVM, the database server), database round trips and Kafka requests,
   from the level's first request until every message of it is stored as delivered, divided
   by its accepted messages; and the idle rates of the same processes just before it.

Traffic: two tenants (accounts Alpha and Beta), each on its 1,000 mps number, utility template,
a new recipient per message (the per-recipient pair limit never shapes the figures).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import cost
import orjson
from bench_ingest import template_body
from common import (
    FAST_A,
    FAST_B,
    CpuMeter,
    Platform,
    RssSampler,
    infra_pids,
    infra_run_dir,
    log,
    metric_sum,
    percentile,
    recipients,
    scrape,
    summary_ms,
)

from shared.mongo import make_client

NAME = "e2e"
TARGET_P99_TO_META_MS = 50.0
TARGET_P99_TO_DELIVERED_MS = 250.0
TARGET_CAPACITY_PER_S = 500.0
TARGET_RSS_MB = 150.0
SERVICES = ("ingest", "billing", "sender", "status", "notify", "metasim")
COST_SHARE = 0.5  # of capacity: the level the cost per message is measured at
IDLE_S = 5.0
# Steps start low: on a 2-core machine the pipeline's capacity is a few dozen messages/s.
RAMP = [4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]
LEVELS = [0.25, 0.5, 0.9]
SUSTAINED_SHARE = 0.98  # of a step's messages at the simulator within the grace
SUSTAINED_P50_S = 0.5
# A backlog that grows shows as latency rising through the step: last third vs first third
# (their lower quartiles).
SUSTAINED_GROWTH_S = 0.1
GRACE_S = 2.0
MIN_LEVEL_MESSAGES = 150
DELIVERED = ["delivered", "read"]  # for a p99 that means something
MAX_LEVEL_S = 25.0
# `run_all.py --e2e-levels 24,32`: fixed rates (msg/s) instead of shares of a measured capacity,
# so that two revisions are compared at the same load; the ramp is skipped and a warm-up at
# WARMUP_RATE (not measured) takes its place: consumer groups joined, caches filled, and Kafka's
# JVM past its start (after 5 s at 8/s the broker still used 0.16 cores idle and 22 ms of CPU
# per message at the first level against 12 at the second, 2026-12-07).
FIXED_LEVELS: list[float] = []
FIXED_LEVEL_S = 20.0
WARMUP_RATE = 16.0
WARMUP_S = 20.0


def configure(levels: list[float] | None, seconds: float | None = None) -> None:
    """Fixed levels from the command line (None or empty: the ramp and shares, as by default)."""
    global FIXED_LEVEL_S
    FIXED_LEVELS[:] = [float(rate) for rate in levels or []]
    if seconds is not None:
        FIXED_LEVEL_S = float(seconds)


def parse_levels(text: str) -> list[float]:
    """`24,32` -> [24.0, 32.0]; every rate positive."""
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"e2e levels must be positive rates in msg/s, got {text!r}")
    return rates


@dataclass
class Sent:
    index: int
    sent_at: float  # wall clock, client side
    answered_at: float = 0.0  # the 202 arrived
    status: int = 0
    message_id: str = ""
    ingest_accepted_at: float = 0.0  # ingest's own accepted_at (ms resolution)
    meta_at: float = 0.0  # the simulator's accepted_at
    delivered_at: float = 0.0  # the delivered state stored (messages.updated_at)
    reserved_at: float = 0.0  # billing's reservation (its ledger entry's `at`)
    sending_at: float = 0.0  # the sender's `sends` record created (just before the POST)


class Traffic:
    """Open-loop sends over two tenants, with a new recipient each."""

    def __init__(self, url: str, accounts: list[Any]) -> None:
        self.url = url
        self.tenants = [(accounts[0].api_key, FAST_A), (accounts[1].api_key, FAST_B)]
        self.next = 0
        self.pool = recipients()

    async def run(self, session: aiohttp.ClientSession, rate: float, seconds: float) -> list[Sent]:
        count = max(1, round(rate * seconds))
        sent: list[Sent] = []
        tasks = []
        start = time.monotonic()
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key, number = self.tenants[self.next % 2]
            body = orjson.dumps(template_body(number, self.pool[self.next], f"e{self.next}"))
            self.next += 1
            item = Sent(self.next, time.time())
            sent.append(item)
            tasks.append(asyncio.create_task(self._post(session, key, body, item)))
        await asyncio.gather(*tasks)
        return sent

    async def _post(
        self, session: aiohttp.ClientSession, key: str, body: bytes, item: Sent
    ) -> None:
        try:
            async with session.post(
                self.url,
                data=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            ) as resp:
                answer = await resp.json()
                item.answered_at = time.time()
                item.status = resp.status
                if resp.status == 202:
                    item.message_id = answer["id"]
                    item.ingest_accepted_at = datetime.fromisoformat(
                        answer["accepted_at"].replace("Z", "+00:00")
                    ).timestamp()
        except (aiohttp.ClientError, TimeoutError):
            item.answered_at = time.time()


class Observer:
    """What the simulator and the database say happened to our messages."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.offset = 0  # /_sim/sends is append-only: read only what is new
        self.poll_every = 0.5  # seconds between two looks while waiting
        self.meta_at: dict[str, float] = {}
        self.mongo = make_client(platform.mongodb_url)
        self.db = self.mongo[platform.database]

    async def poll_meta(self) -> None:
        answer = await self.platform.sim("GET", "/_sim/sends", params={"offset": str(self.offset)})
        for send in answer["sends"]:
            if send["biz_opaque_callback_data"]:
                self.meta_at[send["biz_opaque_callback_data"]] = float(send["accepted_at"])
        self.offset += int(answer["returned"])

    def fill_meta(self, items: list[Sent]) -> int:
        missing = 0
        for item in items:
            if item.message_id and not item.meta_at:
                at = self.meta_at.get(item.message_id)
                if at is None:
                    missing += 1
                else:
                    item.meta_at = at
        return missing

    async def fill_delivered(self, items: list[Sent]) -> int:
        """One query per look, for every message updated since the oldest one still waiting:
        FerretDB scans the collection for any filter but a lone _id, so asking by `$in` in
        chunks of 500 scanned it once per chunk (200 times per look at 100,000 messages), and
        the observer's own scans were counted in the database's CPU per message."""
        waiting = [i for i in items if i.message_id and not i.delivered_at]
        if not waiting:
            return 0
        by_id = {i.message_id: i for i in waiting}
        since_ms = int(min(i.sent_at for i in waiting) * 1000) - 1000
        docs = (
            await self.db["messages"]
            # A read seen first (its `delivered` stored before we looked) counts from the
            # read's store time: later than the delivery, never earlier.
            .find(
                {"updated_at": {"$gte": since_ms}, "status": {"$in": DELIVERED}}, {"updated_at": 1}
            )
            .to_list(None)
        )
        for doc in docs:
            item = by_id.get(doc["_id"])
            if item is not None:
                item.delivered_at = int(doc["updated_at"]) / 1000
        return sum(1 for i in waiting if not i.delivered_at)

    async def fill_hops(self, items: list[Sent]) -> None:
        """When billing reserved and when the sender started each message (ms, their clocks =
        this machine's)."""
        by_id = {i.message_id: i for i in items if i.message_id}
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for doc in (
                await self.db["ledger"]
                .find({"_id": {"$in": [f"{m}:reserve" for m in chunk]}}, {"at": 1})
                .to_list(None)
            ):
                by_id[doc["_id"].rsplit(":", 1)[0]].reserved_at = int(doc["at"]) / 1000
            for doc in (
                await self.db["sends"]
                .find({"_id": {"$in": chunk}}, {"created_at": 1})
                .to_list(None)
            ):
                by_id[doc["_id"]].sending_at = int(doc["created_at"]) / 1000

    async def wait(self, items: list[Sent], within: float, delivered: bool) -> dict[str, int]:
        """Until every accepted message reached the simulator (and is delivered), bounded."""
        deadline = time.monotonic() + within
        while True:
            await self.poll_meta()
            missing_meta = self.fill_meta(items)
            missing_delivered = await self.fill_delivered(items) if delivered else 0
            if (missing_meta == 0 and missing_delivered == 0) or time.monotonic() > deadline:
                return {"not_at_meta": missing_meta, "not_delivered": missing_delivered}
            await asyncio.sleep(self.poll_every)

    async def close(self) -> None:
        await self.mongo.close()


def _latencies(items: list[Sent]) -> dict[str, Any]:
    ok = [i for i in items if i.status == 202]
    meta = [i for i in ok if i.meta_at]
    delivered = [i for i in ok if i.delivered_at]
    return {
        "sent": len(items),
        "accepted_202": len(ok),
        "refused_or_failed": len(items) - len(ok),
        "client_to_202": summary_ms([i.answered_at - i.sent_at for i in ok]),
        "202_to_meta": summary_ms([i.meta_at - i.answered_at for i in meta]),
        "ingest_accepted_at_to_meta": summary_ms([i.meta_at - i.ingest_accepted_at for i in meta]),
        "client_send_to_meta": summary_ms([i.meta_at - i.sent_at for i in meta]),
        "202_to_delivered_stored": summary_ms([i.delivered_at - i.answered_at for i in delivered]),
        "hops": _hops(meta),
    }


def _hops_text(hops: dict[str, Any]) -> str:
    """The hops for a log line: `hops p50/p99 billing_reserved 12.0/30.0, ...`."""
    return "hops p50/p99 " + ", ".join(
        f"{k.split('_to_')[1]} {v['p50_ms']}/{v['p99_ms']}" for k, v in hops.items()
    )


def _hops(meta: list[Sent]) -> dict[str, Any]:
    """Where the time to Meta goes, hop by hop (ms clocks: +-1 ms each). `billing_reserved` is
    the ledger entry's `at`, taken when billing decides (before its writes and its publish);
    `sender_started` is the `sends` record's `created_at`, before the number token and the POST.
    """
    return {
        "ingest_accepted_to_billing_reserved": summary_ms(
            [i.reserved_at - i.ingest_accepted_at for i in meta if i.reserved_at]
        ),
        "billing_reserved_to_sender_started": summary_ms(
            [i.sending_at - i.reserved_at for i in meta if i.sending_at and i.reserved_at]
        ),
        "sender_started_to_meta_accepted": summary_ms(
            [i.meta_at - i.sending_at for i in meta if i.sending_at]
        ),
    }


def billing_load(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Billing's events and mean time per event over a level (its agent handles one event
    at a time: events x mean duration is how busy it was)."""
    count = metric_sum(after, "billing_event_duration_seconds_count") - metric_sum(
        before, "billing_event_duration_seconds_count"
    )
    total = metric_sum(after, "billing_event_duration_seconds_sum") - metric_sum(
        before, "billing_event_duration_seconds_sum"
    )
    batches = metric_sum(after, "billing_batch_size_records_count") - metric_sum(
        before, "billing_batch_size_records_count"
    )
    records = metric_sum(after, "billing_batch_size_records_sum") - metric_sum(
        before, "billing_batch_size_records_sum"
    )
    return {
        "events": int(count),
        "mean_event_ms": round(total / count * 1000, 2) if count else None,
        "busy_seconds": round(total, 2),
        # How billing batched them: a linger trades each batch's wait for fewer batches.
        "batches": int(batches),
        "mean_batch_records": round(records / batches, 2) if batches else None,
    }


def _growth(latencies: list[float]) -> float | None:
    """How much a step's latency rose from its first third to its last. A backlog lifts every
    quantile of the later messages; an isolated stall of the shared machine lifts only a few:
    compare the lower quartiles."""
    if not latencies:
        return None
    third = max(1, len(latencies) // 3)
    return (percentile(latencies[-third:], 25) or 0) - (percentile(latencies[:third], 25) or 0)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


async def measure_capacity(
    traffic: Traffic, observer: Observer, session: aiohttp.ClientSession, step_s: float
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    sustained_rate = 0.0
    saturated_output: float | None = None
    all_items: list[Sent] = []
    for rate in RAMP:
        for attempt in (1, 2):
            if attempt == 2:
                # One stall of the shared machine can fail a step: let the pipeline drain, then
                # try the same rate once more before calling it saturated.
                await observer.wait(all_items, within=30, delivered=True)
            step, items = await _ramp_step(traffic, observer, session, rate, step_s, attempt)
            steps.append(step)
            all_items += items
            if step["sustained"]:
                break
        if not steps[-1]["sustained"]:
            saturated_output = steps[-1]["meta_accepts_per_s_during_step"]
            break
        sustained_rate = float(rate)
    # No step sustained at all: the overloaded output is the best estimate there is.
    capacity = sustained_rate or (saturated_output or 0.0)
    return {
        "steps": steps,
        "last_sustained_per_s": sustained_rate,
        "saturated_meta_accepts_per_s": saturated_output,
        "capacity_per_s": round(capacity, 1),
        "lower_bound_only": saturated_output is None,
        "items": all_items,
    }


async def _ramp_step(
    traffic: Traffic,
    observer: Observer,
    session: aiohttp.ClientSession,
    rate: int,
    step_s: float,
    attempt: int,
) -> tuple[dict[str, Any], list[Sent]]:
    """One step of the ramp: `rate` messages/s for `step_s`, judged after the grace."""
    step_start = time.time()
    items = await traffic.run(session, rate, step_s)
    await asyncio.sleep(GRACE_S)
    grace_end = time.time()
    await observer.poll_meta()
    missing = observer.fill_meta(items)
    not_delivered = await observer.fill_delivered(items)
    accepted = [i for i in items if i.status == 202]
    reached = len(accepted) - missing
    delivered = len(accepted) - not_delivered
    to_meta = [i.meta_at - i.answered_at for i in accepted if i.meta_at]
    to_delivered = [i.delivered_at - i.answered_at for i in accepted if i.delivered_at]
    p50 = percentile(to_meta, 50)
    growth = _growth(to_meta)
    # The rest of the pipeline must keep up too: a status backlog competes for the same CPU
    # and would make every later level's latency a measure of that backlog.
    p50_delivered = percentile(to_delivered, 50)
    growth_delivered = _growth(to_delivered)
    # What the simulator accepted during the step (after its first second) and the grace:
    # when the pipeline is saturated, a backlog keeps it at full output all along.
    window_start = step_start + 1.0
    in_window = sum(1 for at in observer.meta_at.values() if window_start <= at <= grace_end)
    output = in_window / max(1e-9, grace_end - window_start)
    await observer.fill_hops(items)
    hops = _hops([i for i in accepted if i.meta_at])
    ok = (
        len(accepted) >= SUSTAINED_SHARE * len(items)
        and reached >= SUSTAINED_SHARE * len(items)
        and delivered >= SUSTAINED_SHARE * len(items)
        and p50 is not None
        and p50 <= SUSTAINED_P50_S
        and growth is not None
        and growth <= SUSTAINED_GROWTH_S
        and p50_delivered is not None
        and p50_delivered <= SUSTAINED_P50_S
        and growth_delivered is not None
        and growth_delivered <= SUSTAINED_GROWTH_S
    )
    step = {
        "offered_per_s": rate,
        "attempt": attempt,
        "sent": len(items),
        "accepted_202": len(accepted),
        "at_meta_after_grace": reached,
        "p50_202_to_meta_ms": _ms(p50),
        "p25_growth_through_step_ms": _ms(growth),
        "delivered_stored_after_grace": delivered,
        "p50_202_to_delivered_ms": _ms(p50_delivered),
        "p25_growth_to_delivered_ms": _ms(growth_delivered),
        "meta_accepts_per_s_during_step": round(output, 1),
        "sustained": ok,
        "hops": hops,
    }
    verdict = "ok" if ok else "SATURATED (2nd try)" if attempt == 2 else "not sustained, once more"
    log(
        f"e2e ramp: {rate}/s -> 202 {len(accepted)}/{len(items)}, at Meta {reached}, "
        f"p50 {step['p50_202_to_meta_ms']} ms (growth {step['p25_growth_through_step_ms']} ms), "
        f"delivered {delivered} p50 {step['p50_202_to_delivered_ms']} ms (growth "
        f"{step['p25_growth_to_delivered_ms']} ms), Meta accepted {output:.0f}/s {verdict}; "
        + _hops_text(hops)
    )
    return step, items


async def _measure_level(
    platform: Platform,
    traffic: Traffic,
    observer: Observer,
    session: aiohttp.ClientSession,
    meter_cost: cost.CostMeter,
    pids: dict[str, int],
    rate: float,
    seconds: float,
    with_cost: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One latency level: `rate` msg/s for `seconds`, waited for until delivered (bounded);
    with its cost per message (and the idle rates just before) when `with_cost`."""
    cost_result: dict[str, Any] = {}
    if with_cost:
        idle = await meter_cost.idle(IDLE_S)
        cost_before = await meter_cost.snapshot()
    meter = CpuMeter({**pids, **infra_pids()})
    billing_before = await scrape(platform.procs["billing"].ops_url)
    meter.start()
    items = await traffic.run(session, rate, seconds)
    cores = meter.stop()
    left = await observer.wait(items, within=30 + seconds, delivered=True)
    if with_cost:
        cost_after = await meter_cost.snapshot()
        accepted = sum(1 for i in items if i.status == 202)
        cost_result = {
            **cost.per_message(cost_before, cost_after, accepted, idle),
            "offered_per_s": round(rate, 1),
            "idle": idle,
            "left_after_wait": left,
        }
        log(
            f"e2e cost per message at {rate:.0f}/s: CPU {cost_result['cpu_ms']} ms, "
            f"database {cost_result['db_ops']}, Kafka {cost_result['kafka_requests']}"
        )
    await observer.fill_hops(items)
    billing = billing_load(billing_before, await scrape(platform.procs["billing"].ops_url))
    level = {
        "share_of_capacity": None,
        "offered_per_s": round(rate, 1),
        "seconds": round(seconds, 1),
        **_latencies(items),
        "left_after_wait": left,
        "cores_used": cores,
        "billing": billing,
    }
    hops = level["hops"]
    log(
        f"e2e {rate:.0f}/s: 202->Meta p50 {level['202_to_meta']['p50_ms']} p99 "
        f"{level['202_to_meta']['p99_ms']} ms; ->delivered p50 "
        f"{level['202_to_delivered_stored']['p50_ms']} p99 "
        f"{level['202_to_delivered_stored']['p99_ms']} ms; left {left}; " + _hops_text(hops)
    )
    return level, cost_result


async def _fixed_levels(
    platform: Platform,
    traffic: Traffic,
    observer: Observer,
    session: aiohttp.ClientSession,
    meter_cost: cost.CostMeter,
    pids: dict[str, int],
) -> dict[str, Any]:
    """`--e2e-levels`: a warm-up, then each fixed rate for FIXED_LEVEL_S with its cost per
    message; no ramp, no capacity (the levels do not depend on one)."""
    warm = await traffic.run(session, WARMUP_RATE, WARMUP_S)
    left_warm = await observer.wait(warm, within=60, delivered=True)
    log(f"e2e warm-up {WARMUP_RATE:.0f}/s for {WARMUP_S:.0f} s: left {left_warm}")
    levels = []
    for rate in FIXED_LEVELS:
        level, level_cost = await _measure_level(
            platform,
            traffic,
            observer,
            session,
            meter_cost,
            pids,
            rate,
            FIXED_LEVEL_S,
            with_cost=True,
        )
        levels.append({**level, "cost_per_message": level_cost})

    def fig(level: dict[str, Any], key: str) -> str:
        return f"{level[key]['p50_ms']}/{level[key]['p99_ms']}"

    rows = [
        {
            "benchmark": f"2 e2e at {lv['offered_per_s']:.0f}/s (fixed)",
            "figures": f"202->Meta {fig(lv, '202_to_meta')}, ->delivered "
            f"{fig(lv, '202_to_delivered_stored')} ms p50/p99; CPU "
            f"{(lv['cost_per_message'].get('cpu_ms') or {}).get('total')} ms/msg",
            "target": f"p99 < {TARGET_P99_TO_META_MS:.0f} / {TARGET_P99_TO_DELIVERED_MS:.0f} ms "
            "(targets are at 50 % of capacity)",
            "met": None,
        }
        for lv in levels
    ]
    return {
        "benchmark": NAME,
        "what": "open-loop sends at fixed rates (--e2e-levels), no capacity ramp",
        "fixed_levels_per_s": list(FIXED_LEVELS),
        "warm_up_left": left_warm,
        "levels": levels,
        "simulator_violations": await platform.sim_violations(),
        "rows": rows,
    }


def realistic_webhooks(callback_url: str, read_after_s: float) -> dict[str, Any]:
    """The simulator's realistic profile (batches, duplicates, out-of-order, Meta's retries,
    statuses of messages we never sent), sent + delivered, and read for 70 % of messages
    `read_after_s` after delivery. Two habits are tuned: a batch waits at most 50 ms (not 1 s:
    a batch is full at once under load, and a 1 s wait alone would be 4x the 250 ms target),
    and `delivered` is never skipped, so every message has the delivery being timed."""
    return {
        "enabled": True,
        "callback_url": callback_url,
        "profile": "realistic",
        "habits": {"batch_window_seconds": 0.05, "skip_delivered": False},
        "delays": {"sent": 0.0, "delivered": 0.0, "read": read_after_s, "jitter": 0.0},
        "read_probability": 0.7,
    }


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    step_s = 3.0 if quick else 5.0
    level_s = 6.0 if quick else 12.0
    await platform.sim("POST", "/_sim/reset", json={})
    await platform.sim(
        "POST",
        "/_sim/webhooks/config",
        json=realistic_webhooks(f"{platform.url('status')}/webhooks/meta", read_after_s=3.0),
    )
    pids = {name: platform.procs[name].pid for name in SERVICES if name in platform.procs}
    meter_cost = cost.CostMeter.for_platform(platform, list(SERVICES))
    cost_result: dict[str, Any] = {}
    traffic = Traffic(platform.url("ingest") + "/v1/messages", accounts)
    observer = Observer(platform)
    levels = []
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        with RssSampler(pids) as rss:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                if FIXED_LEVELS:
                    fixed = await _fixed_levels(
                        platform, traffic, observer, session, meter_cost, pids
                    )
                    peak = {name: round(mb, 1) for name, mb in rss.peak.items()}
                    return {**fixed, "memory": {"peak_rss_mb": peak, "target_mb": TARGET_RSS_MB}}
                capacity = await measure_capacity(traffic, observer, session, step_s)
                drained = await observer.wait(capacity.pop("items"), within=60, delivered=True)
                capacity["left_after_drain"] = drained
                cap = capacity["capacity_per_s"]
                for share in LEVELS:
                    rate = max(1.0, share * cap)
                    seconds = (
                        level_s
                        if quick
                        else min(MAX_LEVEL_S, max(level_s, MIN_LEVEL_MESSAGES / rate))
                    )
                    level, level_cost = await _measure_level(
                        platform,
                        traffic,
                        observer,
                        session,
                        meter_cost,
                        pids,
                        rate,
                        seconds,
                        with_cost=share == COST_SHARE,
                    )
                    level["share_of_capacity"] = share
                    levels.append(level)
                    if level_cost:
                        cost_result = {**level_cost, "share_of_capacity": share}
    finally:
        await observer.close()
        meter_cost.close()
    peak = {name: round(mb, 1) for name, mb in rss.peak.items()}
    half = next(level for level in levels if level["share_of_capacity"] == 0.5)
    p99_half = half["202_to_meta"]["p99_ms"]
    met = p99_half is not None and p99_half < TARGET_P99_TO_META_MS
    delivered_p99_half = half["202_to_delivered_stored"]["p99_ms"]
    delivered_met = (
        delivered_p99_half is not None and delivered_p99_half < TARGET_P99_TO_DELIVERED_MS
    )
    capacity_met = capacity["capacity_per_s"] >= TARGET_CAPACITY_PER_S
    memory_met = all(mb < TARGET_RSS_MB for mb in peak.values())
    violations = await platform.sim_violations()
    result = {
        "benchmark": NAME,
        "what": "open-loop sends through ingest -> billing -> sender -> simulator -> status",
        "capacity": capacity,
        "levels": levels,
        "target_p99_202_to_meta_ms_at_50pct": TARGET_P99_TO_META_MS,
        "met": met,
        "target_p99_202_to_delivered_ms_at_50pct": TARGET_P99_TO_DELIVERED_MS,
        "delivered_met": delivered_met,
        "target_capacity_per_s": TARGET_CAPACITY_PER_S,
        "capacity_met": capacity_met,
        "simulator_violations": violations,
        "memory": {"peak_rss_mb": peak, "target_mb": TARGET_RSS_MB, "met": memory_met},
        "cost_per_message": cost_result,
    }

    def fig(level: dict[str, Any], key: str) -> str:
        return f"{level[key]['p50_ms']}/{level[key]['p99_ms']}"

    cap_text = f"{'>=' if capacity['lower_bound_only'] else ''}{capacity['capacity_per_s']:.0f}"
    result["rows"] = [
        {
            "benchmark": "2 e2e capacity",
            "figures": f"{cap_text} msg/s (last sustained step "
            f"{capacity['last_sustained_per_s']:.0f}/s, Meta accepts when saturated "
            f"{capacity['saturated_meta_accepts_per_s'] or 0:.0f}/s)",
            "target": f">= {TARGET_CAPACITY_PER_S:.0f} msg/s (sets the levels)",
            "met": capacity_met,
        },
        {
            "benchmark": "2 e2e 202->Meta p50/p99 ms",
            "figures": "  ".join(
                f"{lv['share_of_capacity']:.0%}: {fig(lv, '202_to_meta')}" for lv in levels
            ),
            "target": f"p99 < {TARGET_P99_TO_META_MS:.0f} ms at 50%",
            "met": met,
        },
        {
            "benchmark": "2 e2e 202->delivered p50/p99 ms",
            "figures": "  ".join(
                f"{lv['share_of_capacity']:.0%}: {fig(lv, '202_to_delivered_stored')}"
                for lv in levels
            ),
            "target": f"p99 < {TARGET_P99_TO_DELIVERED_MS:.0f} ms at 50%",
            "met": delivered_met,
        },
        {
            "benchmark": "7 memory peak RSS MB",
            "figures": " ".join(f"{n} {mb:.0f}" for n, mb in peak.items()),
            "target": f"< {TARGET_RSS_MB:.0f} MB each",
            "met": memory_met,
        },
        *cost.rows(f"2 cost/msg at {COST_SHARE:.0%}", cost_result, shared_infra(platform)),
    ]
    return result


def shared_infra(platform: Platform) -> bool:
    """Whether Kafka and the database serve others too (not `run_all.py --own-infra`)."""
    return "bench-infra-" not in str(infra_run_dir())
