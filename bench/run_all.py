"""Run the platform's benchmarks, print one table, write bench/results/.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--quick] [--own-infra]
                                      [--db-backend sqlite|postgresql] [--campaign-messages N]
                                      [--campaign-seconds S] [--campaign-keyed]
                                      [--campaign-share-partition]
                                      [--e2e-levels 24,32 [--e2e-level-seconds S]]
    (make bench)

Benchmarks (each writes bench/results/<name>.json; they run in the order e2e, campaign,
ingest, webhooks, pacing, fairness, scaling, billing, notify, db):
  ingest    one ingest process vs a bare aiohttp JSON handler, wrk, same run
  e2e       capacity (open-loop ramp), then latency 202 -> Meta and -> delivered stored at 25, 50
            and 90 % of it; also the peak RSS of every service (`memory`) and the cost per
            message at 50 % of it (CPU ms per process, database round trips, Kafka requests)
  campaign  N messages of one tenant accepted as fast as ingest takes them, over several
            numbers: drain time, drain rate / capacity, the other tenant's p99 202 -> Meta
            meanwhile, nothing lost, nothing sent twice, balances exact
  webhooks  signed webhook POSTs/s the status service accepts durably, vs Meta's sizing rule
  pacing    80 and 1,000 mps numbers with a backlog; a hot recipient next to cold ones
  fairness  tenant B's 80 mps number beside tenant A's flood on a 20 mps number vs alone
  scaling   one vs two sender instances on many paced numbers
  billing   events/s billing applies, balances exact against the rate card
  notify    client events delivered per second to a local receiver vs 5 x the pipeline's
            capacity, and p99 lag source event -> delivery at half of it
  db        FerretDB on SQLite vs on PostgreSQL under the services' store calls, side by side
            (its own two servers; bench_db.py also runs alone)
Also bench/results/summary.json and summary.png. Every load is on 127.0.0.1, bounded in time and
count. Figures are ratios or pairs measured side by side in one run: the machine is shared.
--own-infra: a broker (JMX on) and database of the run's own, on free ports and a run directory
of its own, stopped at the end; otherwise the shared ones (never stopped or restarted here).
--db-backend (with --own-infra): FerretDB's backend in that own infrastructure.
--e2e-levels: e2e at fixed rates (no ramp, no capacity): two revisions compared at one load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform as platform_module
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    RESULTS,
    OwnInfra,
    Platform,
    infra_env,
    infra_pids,
    load_average,
    log,
    wait_for_quiet,
    wait_until_idle,
)

from tests.conftest import broker_from_env  # common put the repository on the path

# e2e first: it gets a fresh database (ingest leaves tens of thousands of messages behind).
ORDER = [
    "e2e",
    "campaign",
    "ingest",
    "webhooks",
    "pacing",
    "fairness",
    "scaling",
    "billing",
    "notify",
    "db",
]
ALIASES = {"memory": "e2e", "cost": "e2e"}
NEEDS_MAIN = {"ingest", "e2e", "campaign", "pacing", "fairness", "scaling"}
TOP_UP = 10**12  # micros: no benchmark runs out of credit


async def lift_in_flight_cap(platform: Platform, account_id: str) -> None:
    """The campaign's tenant takes up to 100,000 messages at once: above billing's default cap
    on messages in flight (50,000), so it is lifted for that account, as an operator would with
    `hala accounts update --max-in-flight 0`, before billing first reads the account."""
    from services.admin import commands
    from shared.mongo import make_client

    mongo = make_client(platform.mongodb_url)
    try:
        await commands.update_account(mongo[platform.database], account_id, max_in_flight=0)
    finally:
        await mongo.close()


async def start_main(platform: Platform) -> list[Any]:
    """The whole platform on the run's prefix and database, with one account per portfolio."""
    from tests.e2e.conftest import seed_accounts

    await platform.ensure_topics(platform.prefix)
    status = platform.add("status", "status")
    platform.sim_config["webhooks"]["callback_url"] = f"{status.url}/webhooks/meta"
    platform.add("metasim", "metasim")
    platform.add("ingest", "ingest")
    platform.add("billing", "billing")
    platform.add("sender", "sender")
    platform.add("notify", "notify")  # the whole pipeline: client events of every message
    names = ["metasim", "status", "ingest", "billing", "sender", "notify"]
    platform.start(*names)
    await platform.wait_ready(*names)
    import bench_campaign

    # --campaign-share-partition: account ids drawn so that the tenants share partitions.
    seeding = (
        bench_campaign.same_partition_ids()
        if bench_campaign.shares_partitions()
        else contextlib.nullcontext()
    )
    with seeding:
        accounts = await seed_accounts(platform, TOP_UP)  # type: ignore[arg-type]
    await lift_in_flight_cap(platform, accounts[2].account_id)
    log(f"main stack ready: {', '.join(names)}; {len(accounts)} accounts seeded")
    return accounts


async def run(
    selected: list[str], quick: bool, own_infra: OwnInfra | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    modules = {name: importlib.import_module(f"bench_{name}") for name in selected}
    if own_infra is not None:
        env = own_infra.start()
        # Every client of this process (seeding, observers) and every service it starts.
        os.environ.update(
            {k: v for k, v in env.items() if k.startswith(("KAFKA_", "HALA_", "MONGODB_"))}
        )
    else:
        env = infra_env()
    load_before = wait_for_quiet()
    platform = Platform(broker_from_env(env), env["MONGODB_URL"])
    log(
        f"run {platform.unique}: {', '.join(selected)}{' (quick)' if quick else ''}; "
        f"load average {load_before}; logs in {platform.logs}"
    )
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    try:
        accounts: list[Any] = []
        if NEEDS_MAIN & set(selected):
            accounts = await start_main(platform)
        for name in selected:
            started = time.monotonic()
            load = await asyncio.to_thread(wait_for_quiet, 2.0, 15.0)
            db_cores = await wait_until_idle(infra_pids().get("ferretdb"))
            log(f"--- {name} (load average {load:.2f}, database server {db_cores} cores)")
            try:
                result = await modules[name].run(platform, accounts, quick)
            except Exception as exc:
                traceback.print_exc()
                result = {
                    "benchmark": name,
                    "error": repr(exc),
                    "rows": [
                        {
                            "benchmark": name,
                            "figures": f"FAILED: {exc!r}"[:200],
                            "target": "",
                            "met": False,
                        }
                    ],
                }
            result["seconds"] = round(time.monotonic() - started, 1)
            result["load_average_before"] = load
            result["database_cores_before"] = db_cores
            result["load_average_after"] = round(load_average(), 2)
            common.write_result(name, result)
            results[name] = result
            rows.extend(result["rows"])
    finally:
        await platform.cleanup()
    meta = {
        "run": platform.unique,
        "quick": quick,
        "load_average_before": load_before,
        "own_infra": own_infra is not None,
        "cpu_count": os.cpu_count(),
        "python": platform_module.python_version(),
    }
    return rows, {"results": results, **meta}


def print_table(rows: list[dict[str, Any]]) -> str:
    headers = ("benchmark", "figure(s)", "target", "met")
    cells = [
        (
            r["benchmark"],
            r["figures"],
            r["target"],
            "yes" if r["met"] is True else "no" if r["met"] is False else str(r["met"]),
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    text = "\n".join(out)
    print(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[*ORDER, *ALIASES],
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller backlogs")
    parser.add_argument(
        "--own-infra",
        action="store_true",
        help="a broker (with JMX: Kafka requests per message) and database of "
        "the run's own, stopped at the end",
    )
    parser.add_argument(
        "--db-backend",
        choices=["sqlite", "postgresql"],
        default=None,
        help="with --own-infra: FerretDB's backend (HALA_DB_BACKEND; default: infra.sh's, sqlite)",
    )
    parser.add_argument(
        "--campaign-messages",
        type=int,
        default=None,
        help="campaign size (default: what drains in --campaign-seconds at the "
        "measured capacity, at most 100,000)",
    )
    parser.add_argument(
        "--campaign-seconds",
        type=float,
        default=None,
        help="drain time the default campaign size aims at (180; 45 --quick)",
    )
    parser.add_argument(
        "--campaign-keyed",
        action="store_true",
        help="campaign requests with an Idempotency-Key, retried after a 503",
    )
    parser.add_argument(
        "--campaign-share-partition",
        action="store_true",
        help="seed the accounts so that the campaign's other tenant shares the campaign "
        "tenant's partitions of send-requested and status-changed (by chance 1 run in 6)",
    )
    parser.add_argument(
        "--e2e-levels",
        default=None,
        metavar="RATES",
        help="e2e at these fixed rates in msg/s (e.g. 24,32) instead of the ramp and the "
        "shares of its capacity: to compare revisions at the same load",
    )
    parser.add_argument(
        "--e2e-level-seconds",
        type=float,
        default=None,
        help="with --e2e-levels: seconds at each rate (default 20)",
    )
    args = parser.parse_args()
    import bench_campaign
    import bench_e2e

    if args.e2e_levels is not None:
        try:
            bench_e2e.configure(bench_e2e.parse_levels(args.e2e_levels), args.e2e_level_seconds)
        except ValueError as exc:
            parser.error(str(exc))
    elif args.e2e_level_seconds is not None:
        parser.error("--e2e-level-seconds needs --e2e-levels")

    bench_campaign.configure(
        args.campaign_messages,
        args.campaign_seconds,
        args.campaign_keyed,
        args.campaign_share_partition,
    )
    wanted = {ALIASES.get(n, n) for n in args.only} if args.only else set(ORDER)
    selected = [n for n in ORDER if n in wanted]
    started = time.monotonic()
    if args.db_backend and not args.own_infra:
        parser.error("--db-backend needs --own-infra (the shared database is not restarted)")
    own = OwnInfra(args.db_backend) if args.own_infra else None
    try:
        rows, summary = asyncio.run(run(selected, args.quick, own))
    finally:
        if own is not None:
            own.stop()
    summary["seconds"] = round(time.monotonic() - started, 1)
    # In the numbering (rows are labelled "<n> ..."), whatever order they ran in.
    rows.sort(key=lambda row: row["benchmark"].split()[0])
    summary["rows"] = rows
    table = print_table(rows)
    loads = ", ".join(
        f"{name} {r.get('load_average_after')}" for name, r in summary["results"].items()
    )
    print(
        f"load average at start {summary['load_average_before']}; after each: {loads} "
        f"({os.cpu_count()} cores, shared)"
    )
    summary["table"] = table
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    try:
        import chart

        chart.draw(summary["results"], RESULTS / "summary.png")
        print(
            f"wrote {RESULTS.relative_to(common.ROOT)}/summary.json, summary.png "
            f"({summary['seconds']:.0f} s)"
        )
    except Exception as exc:  # the figures matter more than the picture
        print(f"chart not drawn: {exc!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
