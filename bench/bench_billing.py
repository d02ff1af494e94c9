"""Benchmark `billing`: the events per second billing applies, and balances exact afterwards.

One billing process on its own topic prefix and database. Its input is written straight to Kafka
for a few accounts: first a top-up each (which also proves the consumer is assigned), then
phase 1 — N SendRequested (reserve) — and phase 2 — for each message a `sent` from the sender
and then a webhook's `delivered` (regular pricing: charge) or `failed` (release). Each phase is
timed from the first write until the balances show all of it applied (polled every 0.2 s).
Phases are separate because send-requested and status-changed are different topics: in the
platform a status never precedes its reservation, but two topics written at once in a
benchmark would not keep that order.

Phase 3 — latency when not saturated: SendRequested written one at a time at 50/s (open loop),
each timed from the moment it leaves until its SendApproved can be read (p50/p99): billing's
share of the 202 -> Meta path.

Exactness: every balance must end at top-up − Σ rate-card price of its delivered messages, with
only the trickle's messages reserved, and billing must have approved each message exactly once
(send-approved's record count).

Where time goes: billing applies what is buffered as one batch (one faust agent, concurrency 1),
with a few round trips per batch (balances and reservations read concurrently, one insert_many,
the balances written concurrently while the outputs are published); the figures show the mean
records per batch, and a probe times single round trips alone (FerretDB find_one, insert_one,
replace_one; a Kafka send_and_wait with acks=all) on this machine, afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from common import Platform, eventually, log, metric_sum, produce_all, record_count, scrape

from shared.kafka import make_producer, topic_name
from shared.messages import (
    SEND_APPROVED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    TOPUP_REQUESTED,
    MetaError,
    Pricing,
    SendRequested,
    StatusChanged,
    TopUpRequested,
    sign_top_up,
)
from shared.mongo import make_client
from shared.pricing import load_rate_card

NAME = "billing"
ACCOUNTS = 4
TRICKLE_RATE = 50.0  # SendRequested/s in the latency phase: well below either version's capacity
TOPUP = 10**12
# (category, region, a recipient of that region)
MIX = [
    ("utility", "GB", "+447400000001"),
    ("marketing", "IN", "+919876543210"),
    ("authentication", "BR", "+5511987654321"),
    ("utility", "US", "+14155552671"),
    ("marketing", "AE", "+971501234567"),
]


def _messages(unique: str, accounts: list[str], n: int, now_ms: int) -> list[SendRequested]:
    out = []
    for i in range(n):
        category, region, recipient = MIX[i % len(MIX)]
        message_id = f"msg_bench{unique}{i:07d}"
        out.append(
            SendRequested(
                event_id=message_id,
                message_id=message_id,
                account_id=accounts[i % len(accounts)],
                portfolio_id="801000000000001",
                waba_id="201000000000001",
                phone_number_id="301000000000001",
                recipient=recipient,
                recipient_region=region,
                message_type="template",
                content={"name": "receipt", "language": {"code": "en_US"}, "components": []},
                category=category,
                accepted_at=now_ms,
                expires_at=now_ms + 86_400_000,
            )
        )  # type: ignore[arg-type]
    return out


def _statuses(message: SendRequested, delivered: bool, now_ms: int) -> list[StatusChanged]:
    wamid = f"wamid.{message.message_id}"
    common = {
        "message_id": message.message_id,
        "account_id": message.account_id,
        "phone_number_id": message.phone_number_id,
        "recipient_region": message.recipient_region,
        "wamid": wamid,
    }
    sent = StatusChanged(
        event_id=f"{message.message_id}:sent:sender",
        status="sent",
        occurred_at=now_ms,
        source="sender",
        **common,
    )
    if delivered:
        final = StatusChanged(
            event_id=f"{wamid}:delivered",
            status="delivered",
            occurred_at=now_ms + 1,
            source="webhook",
            pricing=Pricing(
                billable=True, pricing_model="PMP", type="regular", category=message.category
            ),
            **common,
        )
    else:
        final = StatusChanged(
            event_id=f"{wamid}:failed",
            status="failed",
            occurred_at=now_ms + 1,
            source="webhook",
            error=MetaError(131026, "Message undeliverable"),
            **common,
        )
    return [sent, final]


async def _probe(platform: Platform, database: str, prefix: str, count: int) -> dict[str, float]:
    """Mean ms of one sequential round trip of each kind billing makes per event."""
    mongo = make_client(platform.mongodb_url)
    scratch = mongo[database]["bench_probe"]
    producer = make_producer(platform.kafka)
    await producer.start()
    timings: dict[str, list[float]] = {
        "find_one": [],
        "insert_one": [],
        "replace_one": [],
        "kafka_send_and_wait": [],
    }
    doc = {"available": 1, "reserved": 2, "applied": [{"source": "x", "offset": 1}]}
    try:
        await scratch.insert_one({"_id": "probe", **doc})
        for i in range(count):
            started = time.perf_counter()
            await scratch.find_one({"_id": "probe"})
            timings["find_one"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await scratch.insert_one({"_id": f"p{i}", **doc})
            timings["insert_one"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await scratch.replace_one({"_id": "probe"}, doc, upsert=True)
            timings["replace_one"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await producer.send_and_wait(
                topic_name(SEND_APPROVED, prefix) + ".dlq", b"probe", key=b"probe"
            )
            timings["kafka_send_and_wait"].append(time.perf_counter() - started)
    finally:
        await producer.stop()
        await mongo.close()
    return {k: round(statistics.fmean(v) * 1000, 2) for k, v in timings.items()}


async def _trickle(
    platform: Platform, prefix: str, messages: list[SendRequested], rate: float
) -> dict[str, Any]:
    """Write SendRequested one at a time at `rate`/s (open loop) and time each from the moment
    it leaves to the moment its SendApproved can be read: billing's share of the 202 -> Meta
    path when it is not saturated."""
    approved_topic = topic_name(SEND_APPROVED, prefix)
    partitions = [TopicPartition(approved_topic, p) for p in range(SEND_APPROVED.partitions)]
    consumer = AIOKafkaConsumer(
        **platform.kafka.aiokafka_options(), fetch_max_wait_ms=5, isolation_level="read_committed"
    )
    await consumer.start()
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    producer = make_producer(platform.kafka)
    await producer.start()
    left: dict[str, float] = {}
    latencies: list[float] = []
    wanted = {m.message_id for m in messages}

    async def read() -> None:
        while len(latencies) < len(messages):
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = SEND_APPROVED.decode(record.value)
                    if event.message_id in wanted and event.message_id in left:
                        latencies.append(now - left[event.message_id])

    reader = asyncio.create_task(read())
    sends = []
    try:
        start = time.perf_counter()
        for i, message in enumerate(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = SEND_REQUESTED.encode(message)
            left[message.message_id] = time.perf_counter()
            sends.append(
                await producer.send(topic_name(SEND_REQUESTED, prefix), value=value, key=key)
            )
        await asyncio.gather(*sends)
        await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {
        "messages": len(messages),
        "rate_per_s": rate,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def run(platform: Platform, accounts: list[Any], quick: bool) -> dict[str, Any]:
    # Enough events that the phases last seconds, not a few polls of 0.2 s.
    n = 2000 if quick else 5000
    unique = platform.unique
    prefix = platform.new_prefix("billing")
    database = f"{platform.database}_billing"
    await platform.ensure_topics(prefix)
    proc = platform.add("billing-solo", "billing", prefix=prefix, database=database)
    platform.start("billing-solo")
    mongo = make_client(platform.mongodb_url)
    balances = mongo[database]["balances"]
    account_ids = [f"acc_bench{unique}{i}" for i in range(ACCOUNTS)]
    card = load_rate_card()
    try:
        await platform.wait_ready("billing-solo")
        now_ms = int(time.time() * 1000)
        await produce_all(
            platform.kafka,
            prefix,
            [
                (
                    TOPUP_REQUESTED,
                    sign_top_up(
                        TopUpRequested(
                            event_id=f"topup-{a}",
                            account_id=a,
                            amount=TOPUP,
                            requested_at=now_ms,
                            operator="bench",
                        ),
                        platform.topup_signing_key.encode(),
                    ),
                )
                for a in account_ids
            ],
        )

        async def read() -> dict[str, dict[str, Any]]:
            docs = await balances.find({"_id": {"$in": account_ids}}).to_list(None)
            return {d["_id"]: d for d in docs}

        async def topped_up() -> bool | str:
            docs = await read()
            return len(docs) == ACCOUNTS or f"{len(docs)} of {ACCOUNTS} top-ups applied"

        await eventually(topped_up, within=120, every=0.2, what="top-ups applied")
        before = await scrape(proc.ops_url)
        messages = _messages(unique, account_ids, n, now_ms)
        prices = [card.price(m.category, m.recipient_region) for m in messages]
        reserved = {a: 0 for a in account_ids}
        charged = {a: 0 for a in account_ids}
        # One in five is failed, across every category and region.
        delivered = [(i // len(MIX)) % 5 != 4 for i in range(n)]
        for m, price, ok in zip(messages, prices, delivered, strict=True):
            reserved[m.account_id] += price
            if ok:
                charged[m.account_id] += price
        within = 120 if quick else 300

        # Phase 1: reservations.
        t0 = time.monotonic()
        await produce_all(platform.kafka, prefix, [(SEND_REQUESTED, m) for m in messages])

        async def all_reserved() -> bool | str:
            docs = await read()
            seen = {a: (d["available"], d["reserved"]) for a, d in docs.items()}
            want = {a: (TOPUP - reserved[a], reserved[a]) for a in account_ids}
            return seen == want or f"reserved so far {sum(v[1] for v in seen.values())}"

        await eventually(all_reserved, within=within, every=0.2, what="all reserved")
        t1 = time.monotonic()
        log(f"billing: {n} reservations in {t1 - t0:.1f} s")

        # Phase 2: statuses (sent, then delivered or failed).
        statuses = [
            s for m, ok in zip(messages, delivered, strict=True) for s in _statuses(m, ok, now_ms)
        ]
        await produce_all(platform.kafka, prefix, [(STATUS_CHANGED, s) for s in statuses])
        expected = {a: (TOPUP - charged[a], 0) for a in account_ids}

        async def settled() -> bool | str:
            docs = await read()
            seen = {a: (d["available"], d["reserved"]) for a, d in docs.items()}
            return seen == expected or f"reserved left {sum(v[1] for v in seen.values())}"

        exact = True
        try:
            await eventually(settled, within=within, every=0.2, what="all settled")
        except TimeoutError as exc:
            exact = False
            log(f"billing: {exc}")
        t2 = time.monotonic()
        after = await scrape(proc.ops_url)
        # Phase 3: latency when not saturated (these stay reserved; checked below too).
        trickle_n = 200 if quick else 500
        trickle_messages = _messages(unique + "t", account_ids, trickle_n, now_ms)
        trickle = await _trickle(platform, prefix, trickle_messages, TRICKLE_RATE)
        after_trickle = await scrape(proc.ops_url)
        log(
            f"billing: trickle at {TRICKLE_RATE:.0f}/s: p50 {trickle['p50_ms']} ms, "
            f"p99 {trickle['p99_ms']} ms"
        )
        trickle_reserved = {a: 0 for a in account_ids}
        for m in trickle_messages:
            trickle_reserved[m.account_id] += card.price(m.category, m.recipient_region)

        async def trickle_reserved_all() -> bool | str:
            docs = await read()
            seen = {a: (d["available"], d["reserved"]) for a, d in docs.items()}
            want = {
                a: (expected[a][0] - trickle_reserved[a], trickle_reserved[a]) for a in account_ids
            }
            return seen == want or "trickle reservations not exact yet"

        try:
            await eventually(trickle_reserved_all, within=30, every=0.2, what="trickle reserved")
        except TimeoutError as exc:
            exact = False
            log(f"billing: {exc}")
        final = await read()
        approved = await record_count(
            platform.kafka, topic_name(SEND_APPROVED, prefix), SEND_APPROVED.partitions
        )
    finally:
        await mongo.close()
        platform.stop("billing-solo")
    probe = await _probe(platform, database, prefix, 50 if quick else 100)

    events = n + len(statuses)
    count = metric_sum(after, "billing_event_duration_seconds_count") - metric_sum(
        before, "billing_event_duration_seconds_count"
    )
    busy = metric_sum(after, "billing_event_duration_seconds_sum") - metric_sum(
        before, "billing_event_duration_seconds_sum"
    )
    batches = metric_sum(after, "billing_batch_size_records_count") - metric_sum(
        before, "billing_batch_size_records_count"
    )
    batched = metric_sum(after, "billing_batch_size_records_sum") - metric_sum(
        before, "billing_batch_size_records_sum"
    )
    # Database round trips (shared/mongo.py's command listener), per message: saturated
    # (phases 1 and 2: a reservation and two statuses each) and in the trickle (reserve only).
    commands = metric_sum(after, "hala_mongodb_commands_total") - metric_sum(
        before, "hala_mongodb_commands_total"
    )
    trickle_commands = metric_sum(after_trickle, "hala_mongodb_commands_total") - metric_sum(
        after, "hala_mongodb_commands_total"
    )
    per_s = events / (t2 - t0)
    balances_exact = exact and approved == n + trickle_n
    result = {
        "benchmark": NAME,
        "what": f"{n} SendRequested, then {len(statuses)} StatusChanged, {ACCOUNTS} accounts, "
        "written straight to Kafka; one billing process",
        "events": events,
        "events_per_s": round(per_s, 1),
        "reserve_phase": {
            "events": n,
            "seconds": round(t1 - t0, 2),
            "events_per_s": round(n / (t1 - t0), 1),
        },
        "settle_phase": {
            "events": len(statuses),
            "seconds": round(t2 - t1, 2),
            "events_per_s": round(len(statuses) / (t2 - t1), 1),
        },
        # billing_event_duration_seconds times the batch each event was applied in.
        "billing_mean_event_ms": round(busy / count * 1000, 2) if count else None,
        "db_round_trips_per_message": round(commands / n, 2),
        "db_round_trips_per_trickle_message": round(trickle_commands / trickle_n, 2),
        "billing_batches": int(batches),
        "billing_mean_batch_records": round(batched / batches, 1) if batches else None,
        "trickle": trickle,
        "round_trip_probe_ms": probe,
        "balances": {
            a: {
                "available": final[a]["available"],
                "reserved": final[a]["reserved"],
                "expected_available": expected[a][0] - trickle_reserved[a],
            }
            for a in account_ids
        },
        "send_approved_records": approved,
        "balances_exact": balances_exact,
        "met": balances_exact,
    }
    result["rows"] = [
        {
            "benchmark": "4 billing",
            "figures": f"{per_s:.0f} events/s (reserve "
            f"{result['reserve_phase']['events_per_s']:.0f}/s, settle "
            f"{result['settle_phase']['events_per_s']:.0f}/s; "
            f"{result['billing_mean_batch_records']} records/batch, applied in "
            f"{result['billing_mean_event_ms']} ms on average per event's batch; "
            f"{result['db_round_trips_per_message']} database round trips per message, "
            f"{result['db_round_trips_per_trickle_message']} per reservation at "
            f"{TRICKLE_RATE:.0f}/s); at "
            f"{TRICKLE_RATE:.0f}/s write -> approved p50 {trickle['p50_ms']} ms, p99 "
            f"{trickle['p99_ms']} ms; balances "
            f"{'exact' if balances_exact else 'NOT exact'} ({ACCOUNTS} accounts, "
            f"{approved}/{n + trickle_n} approved once)",
            "target": "balances exact (rate card)",
            "met": balances_exact,
        }
    ]
    return result
