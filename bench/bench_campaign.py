"""Benchmark `campaign`: one tenant posts N messages at once, as fast as ingest takes them, over
its twelve 1,000 mps numbers (portfolio Gamma), while another tenant (Beta, on its own number)
keeps sending a trickle, open-loop.

Reported:
- drain time: from the campaign's first request until its last message is stored as
  `delivered` (the messages document's `updated_at`), and until its last reached the simulator;
- drain rate against the pipeline's capacity (`e2e`'s, from this run or the last result file):
  every message completed in the drain (the campaign's and the trickle's) per second of it,
  divided by the capacity; target >= 0.9;
- the other tenant's p50/p99 202 -> Meta while the campaign drains (its `e2e` figure at 50 % of
  capacity next to it);
- the checks: nothing lost (every accepted message at the simulator and stored as delivered),
  nothing sent twice (no callback data twice among the simulator's sends), balances exact
  (each account's available credit fell by the rate card's price of its delivered messages,
  nothing left reserved);
- the cost per message over the drain (`cost.py`), i.e. at saturation.

N: `run_all.py --campaign-messages N`; by default what drains in `--campaign-seconds` (180 s,
45 with --quick) at the measured capacity, at most the issue's 100,000.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import cost
import orjson
from bench_e2e import Observer, Sent, Traffic, realistic_webhooks
from bench_e2e import _hops as hops_of
from bench_ingest import template_body
from common import (
    FAST_B,
    RESULTS,
    Platform,
    log,
    percentile,
    read_result,
    recipients,
    summary_ms,
)
from pymongo.errors import PyMongoError

from shared.mongo import make_client
from shared.pricing import load_rate_card
from tests.e2e.conftest import eventually

NAME = "campaign"
MAX_MESSAGES = 100_000
TARGET_DRAIN_RATIO = 0.9
CONCURRENCY = 64  # requests in flight from the campaign's client
OTHER_SHARE = 0.05  # the other tenant's trickle, of capacity (at least 2/s)
RECIPIENT_OFFSET = 100_000  # the e2e benchmark's recipients come from the start of the pool
SERVICES = ["ingest", "billing", "sender", "status", "notify", "metasim"]
RETRY_FOR_S = 120.0  # a request is tried again until this long after its first try
RETRY_AFTER_S = (0.25, 2.0)  # backoff: first, at most (doubling)
RETRIED = {0, 503}  # connection lost, dependency_unavailable (keyed requests only)
THROTTLED = 429  # the account's request rate limit: nothing was published, always retried

_settings: dict[str, float | None] = {"messages": None, "seconds": None, "keyed": 0}


def configure(messages: int | None, seconds: float | None, keyed: bool = False) -> None:
    """run_all.py's --campaign-messages / --campaign-seconds / --campaign-keyed."""
    if messages is not None and not 1 <= messages <= 1_000_000:
        raise SystemExit("--campaign-messages must be between 1 and 1,000,000")
    _settings["messages"] = messages
    _settings["seconds"] = seconds
    _settings["keyed"] = 1 if keyed else 0


class CountingObserver(Observer):
    """The e2e observer, also counting each message's sends (duplicates)."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.sends: Counter[str] = Counter()
        # The database is saturated while a campaign drains: the observer waits longer than a
        # service would, and a read that times out is tried again at the next poll.
        self.mongo = make_client(platform.mongodb_url, timeout_ms=60_000)
        self.db = self.mongo[platform.database]
        # Its reads load the same database server (and count in its CPU): look less often.
        # The drain's end comes from the documents' `updated_at`, not from when we looked.
        self.poll_every = 3.0

    async def fill_delivered(self, items: list[Sent]) -> int:
        try:
            return await super().fill_delivered(items)
        except PyMongoError as exc:
            log(f"campaign: delivered not read this time ({exc!r}); again at the next poll")
            return sum(1 for i in items if i.message_id and not i.delivered_at)

    async def poll_meta(self) -> None:
        answer = await self.platform.sim("GET", "/_sim/sends", params={"offset": str(self.offset)})
        for send in answer["sends"]:
            ref = send["biz_opaque_callback_data"]
            if ref:
                self.sends[ref] += 1
                self.meta_at.setdefault(ref, float(send["accepted_at"]))
        self.offset += int(answer["returned"])


async def _campaign(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    numbers: list[str],
    n: int,
    unique: str,
    answers: Counter[str],
    keyed: bool,
) -> list[Sent]:
    """N sends, CONCURRENCY at a time (closed loop: each answer lets the next one go). A 429
    (the account's request rate limit: nothing published) is tried again after its
    Retry-After, keyed or not.
    Keyless by default, like the e2e traffic: a 503 or a lost connection is then final (the
    message may have been published all the same: trying again could send it twice), and
    counted as refused. `keyed`: each request has an Idempotency-Key and is tried again after
    a 503 or a lost connection, as a careful client would, with a doubling backoff, for up to
    RETRY_FOR_S (ingest then writes its idempotency record: one more database write)."""
    pool = recipients(RECIPIENT_OFFSET + n)
    items = [Sent(i, 0.0) for i in range(n)]
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            item = items[i]
            body = orjson.dumps(
                template_body(numbers[i % len(numbers)], pool[RECIPIENT_OFFSET + i], f"c{i}")
            )
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            if keyed:
                headers["Idempotency-Key"] = f"campaign-{unique}-{i}"
            item.sent_at = time.time()
            give_up = time.monotonic() + RETRY_FOR_S
            backoff = RETRY_AFTER_S[0]
            while True:
                retry_after = 1.0
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        answer = await resp.json()
                        item.status = resp.status
                        answers[str(resp.status)] += 1
                        if resp.status == 202:
                            item.message_id = answer["id"]
                        retry_after = float(resp.headers.get("Retry-After", "1") or 1)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    item.status = 0
                    answers[type(exc).__name__] += 1
                if item.status == THROTTLED and time.monotonic() < give_up:
                    await asyncio.sleep(max(0.05, retry_after))
                    continue
                if not keyed or item.status not in RETRIED or time.monotonic() > give_up:
                    break
                await asyncio.sleep(backoff)
                backoff = min(RETRY_AFTER_S[1], backoff * 2)
            item.answered_at = time.time()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return items


async def _balances(platform: Platform, account_ids: list[str]) -> dict[str, tuple[int, int]]:
    mongo = make_client(platform.mongodb_url)
    try:
        docs = (
            await mongo[platform.database]["balances"]
            .find({"_id": {"$in": account_ids}})
            .to_list(None)
        )
    finally:
        await mongo.close()
    return {d["_id"]: (int(d["available"]), int(d["reserved"])) for d in docs}


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    e2e = read_result("e2e")
    capacity = float((e2e or {}).get("capacity", {}).get("capacity_per_s") or 0)
    if capacity <= 0:
        raise RuntimeError("no e2e capacity to compare with: run the e2e benchmark first")
    seconds = _settings["seconds"] or (45.0 if quick else 180.0)
    n = int(_settings["messages"] or max(100, min(MAX_MESSAGES, round(capacity * seconds))))
    campaign_account, other_account = accounts[2], accounts[1]
    other_rate = max(2.0, OTHER_SHARE * capacity)
    log(
        f"campaign: {n:,} messages over {len(campaign_account.numbers)} numbers (capacity "
        f"{capacity:g}/s: ~{n / capacity:.0f} s to drain), other tenant at {other_rate:g}/s"
    )
    await platform.sim("POST", "/_sim/reset", json={})
    await platform.sim(
        "POST",
        "/_sim/webhooks/config",
        # Reads a while after: the drain's end is the last `delivered` stored, looked for
        # every few seconds.
        json=realistic_webhooks(f"{platform.url('status')}/webhooks/meta", read_after_s=30.0),
    )
    ids = [campaign_account.account_id, other_account.account_id]

    async def settled() -> bool | str:  # what earlier benchmarks reserved is settled
        found = await _balances(platform, ids)
        return all(found.get(a, (0, 1))[1] == 0 for a in ids) or f"reserved: {found}"

    await eventually(settled, within=120, every=1.0, what="earlier reservations settled")
    before = await _balances(platform, ids)

    url = platform.url("ingest") + "/v1/messages"
    observer = CountingObserver(platform)
    other = Traffic(url, accounts)
    other.tenants = [(other_account.api_key, FAST_B)] * 2  # it alternates between two
    other.next = RECIPIENT_OFFSET // 2  # recipients of their own
    other_items: list[Sent] = []
    meter = cost.CostMeter.for_platform(platform, SERVICES)
    stop_other = asyncio.Event()
    bound = 60 + 3 * n / capacity
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 64)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:

            async def trickle() -> None:
                # Traffic.run spaces its sends over the second but returns after the last:
                # wait for the second's end, or the rate would be higher than asked.
                while not stop_other.is_set():
                    second = time.monotonic() + 1.0
                    other_items.extend(await other.run(session, other_rate, 1.0))
                    await asyncio.sleep(max(0.0, second - time.monotonic()))

            cost_before = await meter.snapshot()
            started = time.time()
            other_task = asyncio.create_task(trickle())
            answers: Counter[str] = Counter()
            items = await _campaign(
                session,
                url,
                campaign_account.api_key,
                campaign_account.numbers,
                n,
                platform.unique,
                answers,
                bool(_settings["keyed"]),
            )
            accepted_s = time.time() - started
            accepted = [i for i in items if i.status == 202]
            log(
                f"campaign: {len(accepted):,}/{n:,} accepted in {accepted_s:.1f} s "
                f"({len(accepted) / accepted_s:.0f}/s)"
            )
            deadline = time.monotonic() + bound
            while time.monotonic() < deadline:  # until all reached Meta (cheap to ask)
                await observer.poll_meta()
                missing = observer.fill_meta(accepted)
                if missing == 0:
                    break
                await asyncio.sleep(1.0)
            # The other tenant keeps sending until the campaign is drained (delivered stored).
            await observer.wait(
                accepted, within=max(30.0, deadline - time.monotonic()), delivered=True
            )
            stop_other.set()
            await other_task
            everything = accepted + [i for i in other_items if i.status == 202]
            left = await observer.wait(everything, within=60.0, delivered=True)
            cost_after = await meter.snapshot()
    finally:
        await observer.close()
        meter.close()

    # Drain: first campaign request -> last campaign message stored as delivered.
    delivered_at = [i.delivered_at for i in accepted if i.delivered_at]
    meta_at = [i.meta_at for i in accepted if i.meta_at]
    drain_s = (max(delivered_at) - started) if delivered_at else None
    drain_meta_s = (max(meta_at) - started) if meta_at else None
    end = started + (drain_s or 0)
    other_in_drain = [
        i for i in other_items if i.status == 202 and i.delivered_at and i.sent_at <= end
    ]
    completed = len(delivered_at) + len(other_in_drain)
    drain_rate = completed / drain_s if drain_s else 0.0
    ratio = drain_rate / capacity
    other_during = [i for i in other_items if i.status == 202 and i.meta_at and i.sent_at <= end]
    other_latency = summary_ms([i.meta_at - i.answered_at for i in other_during])
    other_latency_delivered = summary_ms(
        [i.delivered_at - i.answered_at for i in other_during if i.delivered_at]
    )
    # Where the other tenant's messages wait, hop by hop (ingest -> billing -> sender -> Meta).
    hop_reader = Observer(platform)
    try:
        await hop_reader.fill_hops(other_during)
    finally:
        await hop_reader.close()
    other_hops = hops_of(other_during)

    # Checks.
    all_accepted = accepted + [i for i in other_items if i.status == 202]
    lost = [i.message_id for i in all_accepted if not (i.meta_at and i.delivered_at)]
    twice = {ref: c for ref, c in observer.sends.items() if c > 1}
    price = load_rate_card().price("utility", "GB")
    expected = {
        campaign_account.account_id: (
            before[campaign_account.account_id][0]
            - price * sum(1 for i in accepted if i.delivered_at),
            0,
        ),
        other_account.account_id: (
            before[other_account.account_id][0]
            - price * sum(1 for i in other_items if i.status == 202 and i.delivered_at),
            0,
        ),
    }

    async def exact() -> bool | str:
        found = await _balances(platform, ids)
        return found == expected or f"balances {found}, expected {expected}"

    try:
        await eventually(exact, within=60, every=1.0, what="balances settled")
        balances_exact = True
    except TimeoutError as exc:
        log(f"campaign: {exc}")
        balances_exact = False
    checks_ok = not lost and not twice and balances_exact and len(accepted) == n
    drain_cost = cost.per_message(cost_before, cost_after, len(all_accepted))
    e2e_half = next(
        (lv for lv in (e2e or {}).get("levels", []) if lv.get("share_of_capacity") == 0.5), None
    )
    e2e_p99 = e2e_half["202_to_meta"]["p99_ms"] if e2e_half else None

    result = {
        "benchmark": NAME,
        "messages": n,
        "capacity_per_s": capacity,
        "keyed_and_retried": bool(_settings["keyed"]),
        "capacity_from": "bench/results/e2e.json of "
        + time.ctime(RESULTS.joinpath("e2e.json").stat().st_mtime),
        "accepted_202": len(accepted),
        "refused_or_failed": n - len(accepted),
        "answers": dict(answers),  # every attempt's status (or exception), retries included
        "accept_seconds": round(accepted_s, 1),
        "accept_rate_per_s": round(len(accepted) / accepted_s, 1),
        "drain_seconds_to_delivered": None if drain_s is None else round(drain_s, 1),
        "drain_seconds_to_meta": None if drain_meta_s is None else round(drain_meta_s, 1),
        "completed_in_drain": completed,
        "drain_rate_per_s": round(drain_rate, 1),
        "drain_rate_over_capacity": round(ratio, 3),
        "target_ratio": TARGET_DRAIN_RATIO,
        "other_tenant": {
            "rate_per_s": other_rate,
            "sent": len(other_items),
            "during_drain": len(other_during),
            "202_to_meta": other_latency,
            "202_to_delivered_stored": other_latency_delivered,
            "hops": other_hops,
            "e2e_p99_202_to_meta_at_50pct_ms": e2e_p99,
        },
        "campaign_202_to_meta_p50_ms": (
            None
            if not meta_at
            else round(
                1000
                * (percentile([i.meta_at - i.answered_at for i in accepted if i.meta_at], 50) or 0),
                1,
            )
        ),
        "checks": {
            "lost": len(lost),
            "lost_examples": lost[:5],
            "sent_twice": len(twice),
            "balances_exact": balances_exact,
            "left_after_wait": left,
            "all_accepted": len(accepted) == n,
        },
        "cost_per_message_in_drain": drain_cost,
        "met": ratio >= TARGET_DRAIN_RATIO and checks_ok,
    }
    log(
        f"campaign: drained in {result['drain_seconds_to_delivered']} s, "
        f"{drain_rate:.1f}/s = {ratio:.2f} x capacity; other tenant p99 202->Meta "
        f"{other_latency['p99_ms']} ms; lost {len(lost)}, twice {len(twice)}, "
        f"balances {'exact' if balances_exact else 'NOT exact'}"
    )
    result["rows"] = [
        {
            "benchmark": "2 campaign drain",
            "figures": f"{n:,} msgs ({len(accepted):,} accepted in {accepted_s:.0f} s) drained in "
            f"{result['drain_seconds_to_delivered']} s: {drain_rate:.1f}/s = "
            f"{ratio:.2f} x capacity {capacity:g}/s",
            "target": f">= {TARGET_DRAIN_RATIO} x capacity",
            "met": ratio >= TARGET_DRAIN_RATIO,
        },
        {
            "benchmark": "2 campaign other tenant",
            "figures": f"202->Meta p50/p99 {other_latency['p50_ms']}/{other_latency['p99_ms']} ms, "
            f"->delivered p99 {other_latency_delivered['p99_ms']} ms ({len(other_during)} "
            f"msgs in the drain; e2e at 50%: p99 {e2e_p99} ms to Meta); hops p50/p99 "
            + ", ".join(
                f"{k.split('_to_')[1]} {v['p50_ms']}/{v['p99_ms']}" for k, v in other_hops.items()
            ),
            "target": "(reported)",
            "met": "-",
        },
        {
            "benchmark": "2 campaign checks",
            "figures": f"lost {len(lost)}, sent twice {len(twice)}, balances "
            f"{'exact' if balances_exact else 'NOT exact'}, refused {n - len(accepted)}"
            f" ({'keyed, 503s retried' if _settings['keyed'] else 'keyless, 503s'}: "
            f"{answers.get('503', 0)})",
            "target": "0, 0, exact, 0",
            "met": checks_ok,
        },
        {
            "benchmark": "2 campaign cost/msg",
            "figures": f"CPU {drain_cost['cpu_ms']['total']} ms, DB {drain_cost['db_ops']}, "
            f"Kafka {drain_cost['kafka_requests']} (in the drain, saturated)",
            "target": "(reported)",
            "met": "-",
        },
    ]
    return result
