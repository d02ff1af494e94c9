"""bench/results/summary.png: throughput and latency of one run, each next to its reference
(the bare handler, the limit, the requirement) measured or derived in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _throughput(results: dict[str, Any]) -> list[tuple[str, float, float | None, str]]:
    """(label, measured, reference, reference name)."""
    bars: list[tuple[str, float, float | None, str]] = []
    r = results.get("ingest", {})
    if "ingest" in r:
        bars.append(
            (
                "ingest req/s",
                r["ingest"]["requests_per_s"],
                r["bare"]["requests_per_s"],
                "bare aiohttp",
            )
        )
    r = results.get("e2e", {})
    if "capacity" in r:
        bars.append(("e2e capacity msg/s", r["capacity"]["capacity_per_s"], None, ""))
    r = results.get("webhooks", {})
    if "durable_per_s" in r:
        bars.append(
            (
                "webhooks POST/s",
                r["durable_per_s"],
                r.get("required_per_s"),
                "needed (3 out + 1 in)",
            )
        )
    r = results.get("pacing", {})
    if "number_80" in r:
        bars.append(("80 mps number", r["number_80"]["sustained_per_s"], 80.0, "limit"))
        bars.append(("1,000 mps number", r["number_1000"]["sustained_per_s"], 1000.0, "limit"))
    r = results.get("scaling", {})
    if "one" in r:
        bars.append(
            ("sender x2 sends/s", r["two"]["sends_per_s"], r["one"]["sends_per_s"], "x1 sender")
        )
    r = results.get("billing", {})
    if "events_per_s" in r:
        bars.append(("billing events/s", r["events_per_s"], None, ""))
    return bars


def draw(results: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    bars = _throughput(results)
    if bars:
        ys = range(len(bars))
        left.barh(
            [y + 0.2 for y in ys],
            [b[1] for b in bars],
            height=0.4,
            label="measured",
            color="tab:blue",
        )
        left.barh(
            [y - 0.2 for y in ys],
            [b[2] or 0 for b in bars],
            height=0.4,
            label="reference (same run)",
            color="tab:gray",
        )
        for y, (_, value, ref, ref_name) in zip(ys, bars, strict=True):
            left.text(value, y + 0.2, f" {value:,.0f}", va="center", fontsize=8)
            if ref:
                left.text(
                    ref,
                    y - 0.2,
                    f" {ref:,.0f} {ref_name}",
                    va="center",
                    fontsize=8,
                    color="dimgray",
                )
        left.set_yticks(list(ys), [b[0] for b in bars])
        left.set_xscale("log")
        top = max(max(b[1] for b in bars), max((b[2] or 0) for b in bars))
        left.set_xlim(right=top * 12)  # room for the labels
        left.set_xlabel("per second (log scale)")
        left.set_title("Throughput")
        left.legend(loc="upper right", fontsize=8)

    e2e = results.get("e2e", {})
    levels = e2e.get("levels", [])
    if levels:
        labels = [
            f"{lv['share_of_capacity']:.0%}\n({lv['offered_per_s']:.0f}/s)"
            if lv.get("share_of_capacity") is not None
            else f"{lv['offered_per_s']:.0f}/s (fixed)"  # run_all --e2e-levels
            for lv in levels
        ]
        x = range(len(levels))
        series = [
            ("202 -> Meta p50", "202_to_meta", "p50_ms", "tab:blue", "-"),
            ("202 -> Meta p99", "202_to_meta", "p99_ms", "tab:blue", "--"),
            ("202 -> delivered stored p50", "202_to_delivered_stored", "p50_ms", "tab:orange", "-"),
            (
                "202 -> delivered stored p99",
                "202_to_delivered_stored",
                "p99_ms",
                "tab:orange",
                "--",
            ),
            ("client -> 202 p99", "client_to_202", "p99_ms", "tab:green", "--"),
        ]
        for label, key, q, color, style in series:
            right.plot(
                list(x),
                [lv[key][q] or 0 for lv in levels],
                marker="o",
                color=color,
                linestyle=style,
                label=label,
            )
        target = e2e.get("target_p99_202_to_meta_ms_at_50pct")
        if target:
            right.axhline(
                target,
                color="red",
                linewidth=0.8,
                linestyle=":",
                label=f"target p99 to Meta at 50% ({target:.0f} ms)",
            )
        right.set_xticks(list(x), labels)
        right.set_xlabel("share of measured capacity (offered rate)")
        right.set_ylabel("ms (log scale)")
        right.set_yscale("log")
        right.set_title("End-to-end latency (open loop)")
        right.legend(fontsize=8)
    ingest = results.get("ingest", {})
    if "ingest" in ingest:
        right.text(
            0.01,
            0.01,
            f"ingest at saturation p50/p99: "
            f"{ingest['ingest']['p50_ms']:.1f}/{ingest['ingest']['p99_ms']:.1f} ms; bare "
            f"{ingest['bare']['p50_ms']:.1f}/{ingest['bare']['p99_ms']:.1f} ms",
            transform=right.transAxes,
            fontsize=8,
            color="dimgray",
        )
    fig.suptitle("Hala Whatsup benchmarks (2 shared cores; Kafka and FerretDB on the same machine)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
