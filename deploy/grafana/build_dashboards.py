"""Build Hala's Grafana dashboards (deploy/grafana/dashboards/*.json) from the panels below.

    python deploy/grafana/build_dashboards.py

Edit this file, not the JSON: tests/unit/test_observability.py fails when the committed JSON
differs from what this script writes, or when a query names a metric the code does not register.
Every query goes to the Prometheus data source provisioned in provisioning/datasources/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DATASOURCE_UID = "hala-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
TAG = "hala"

RATE = "$__rate_interval"
# Prometheus' scrapes and probes would otherwise dominate a quiet local stack's traffic.
NOT_OPS = 'route!~"/metrics|/healthz|/readyz"'
HTTP = f'service=~"$service", {NOT_OPS}'

GREEN = "green"
RED = "red"
ORANGE = "orange"
ANY = 1e-9  # a threshold step: any value above zero

Json = dict[str, Any]


# --- panels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def rate(metric: str, by: str = "", selector: str = "") -> str:
    """Per-second rate of a counter, summed (by the given labels)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{_braces(selector)}[{RATE}]))"


def increase(metric: str, by: str = "", selector: str = "") -> str:
    """How much a counter grew per rate window, summed (by the given labels): for bar charts
    of rare events, where a per-second rate reads as zero."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}{_braces(selector)}[{RATE}]))"


def in_range(metric: str, selector: str = "") -> str:
    """How much a counter grew over the dashboard's time range (0 when it has no series yet)."""
    return f"sum(increase({metric}{_braces(selector)}[$__range])) or vector(0)"


def _braces(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


def quantiles(
    histogram: str, by: str = "", selector: str = "", qs: tuple[float, ...] = (0.5, 0.99)
) -> list[Query]:
    """p50/p99 of a histogram (the `_bucket` series), one line per quantile and group."""
    grouping = f"{by}, le" if by else "le"
    label = f"{{{{{by}}}}} " if by else ""
    return [
        Query(
            f"histogram_quantile({q}, sum by ({grouping}) "
            f"(rate({histogram}_bucket{_braces(selector)}[{RATE}])))",
            f"{label}p{round(q * 100)}",
        )
        for q in qs
    ]


@dataclass
class Panel:
    title: str
    queries: list[Query]
    description: str = ""
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 8
    height: int = 8
    stacked: bool = False
    bars: bool = False
    thresholds: list[tuple[str, float | None]] = field(default_factory=list)
    mappings: list[Json] = field(default_factory=list)
    decimals: int | None = None

    def render(self, panel_id: int, x: int, y: int) -> Json:
        targets = [
            {
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend or "__auto",
                "range": True,
                "refId": chr(ord("A") + i),
            }
            for i, q in enumerate(self.queries)
        ]
        defaults: Json = {"unit": self.unit}
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        steps = self.thresholds or [(GREEN, None)]
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in steps],
        }
        defaults["mappings"] = self.mappings
        if self.kind == "stat":
            defaults["color"] = {"mode": "thresholds"}
            options: Json = {
                "colorMode": "background",
                "graphMode": "none",
                "justifyMode": "auto",
                "orientation": "auto",
                "textMode": "value_and_name",
                "wideLayout": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            }
        else:
            defaults["color"] = {"mode": "palette-classic"}
            defaults["min"] = 0
            defaults["custom"] = {
                "drawStyle": "bars" if self.bars else "line",
                "fillOpacity": 60 if self.bars else 10,
                "lineWidth": 1,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"group": "A", "mode": "normal" if self.stacked else "none"},
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
            options = {
                "legend": {
                    "calcs": [],
                    "displayMode": "list",
                    "placement": "bottom",
                    "showLegend": True,
                },
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
            "targets": targets,
        }


def graph(title: str, *queries: Query | list[Query], **kwargs: Any) -> Panel:
    flat: list[Query] = []
    for q in queries:
        flat.extend(q if isinstance(q, list) else [q])
    return Panel(title, flat, **kwargs)


def must_be_zero(title: str, expr: str, description: str, unit: str = "short") -> Panel:
    """A stat that is green at 0 and red at anything else."""
    return Panel(
        title,
        [Query(expr)],
        description=description,
        unit=unit,
        kind="stat",
        width=6,
        height=4,
        thresholds=[(GREEN, None), (RED, ANY)],
        decimals=0,
    )


def stat(
    title: str,
    expr: str,
    description: str,
    unit: str = "short",
    thresholds: list[tuple[str, float | None]] | None = None,
    legend: str = "",
    width: int = 6,
    mappings: list[Json] | None = None,
) -> Panel:
    return Panel(
        title,
        [Query(expr, legend)],
        description=description,
        unit=unit,
        kind="stat",
        width=width,
        height=4,
        thresholds=thresholds or [(GREEN, None)],
        mappings=mappings or [],
        decimals=0 if unit == "short" else None,
    )


@dataclass
class Row:
    title: str
    panels: list[Panel]
    collapsed: bool = False


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": RED, "index": 0},
            "1": {"text": "up", "color": GREEN, "index": 1},
        },
    }
]


# --- dashboards -----------------------------------------------------------------------------


def overview() -> list[Row]:
    return [
        Row(
            "Health",
            [
                stat(
                    "Scrape targets down",
                    'count(up{job=~"hala|metasim"} == 0) or vector(0)',
                    "Targets Prometheus could not scrape (ServiceDown alert).",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
                stat(
                    "Alerts firing",
                    'count(ALERTS{alertstate="firing"}) or vector(0)',
                    "Rules of deploy/prometheus/alerts.yml firing now.",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Dead letters (range)",
                    in_range("hala_dead_letters_total"),
                    "Records sent to a dead-letter topic during the dashboard's time range.",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
                stat(
                    "Consumer lag (records)",
                    "sum(hala_consumer_lag_records) or vector(0)",
                    "Records between every group's committed offset and the partitions' ends.",
                    thresholds=[(GREEN, None), (ORANGE, 100), (RED, 1000)],
                ),
                Panel(
                    "Dependency up",
                    [
                        Query(
                            "min by (service, dependency) (hala_dependency_up)",
                            "{{service}} → {{dependency}}",
                        )
                    ],
                    description="Last readiness probe (/readyz) per dependency: the gauge is "
                    "only as fresh as the last probe.",
                    kind="stat",
                    width=12,
                    height=5,
                    mappings=UP_DOWN,
                    thresholds=[(RED, None), (GREEN, 1)],
                ),
                Panel(
                    "Scrape up",
                    [Query('up{job=~"hala|metasim"}', "{{job}} {{service}}")],
                    description="Whether Prometheus reached each target's /metrics.",
                    kind="stat",
                    width=12,
                    height=5,
                    mappings=UP_DOWN,
                    thresholds=[(RED, None), (GREEN, 1)],
                ),
            ],
        ),
        Row(
            "HTTP traffic and latency",
            [
                graph(
                    "Requests/s by service",
                    Query(rate("hala_http_requests_total", "service", HTTP), "{{service}}"),
                    unit="reqps",
                    description="Excludes /metrics, /healthz and /readyz.",
                ),
                graph(
                    "Responses/s by status class",
                    Query(
                        rate("hala_http_requests_total", "service, status_class", HTTP),
                        "{{service}} {{status_class}}",
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                graph(
                    "5xx/s by route",
                    Query(
                        rate(
                            "hala_http_requests_total",
                            "service, route",
                            f'{HTTP}, status_class="5xx"',
                        ),
                        "{{service}} {{route}}",
                    ),
                    unit="reqps",
                ),
                graph(
                    "Latency p50 by service",
                    quantiles("hala_http_request_duration_seconds", "service", HTTP, (0.5,)),
                    unit="s",
                    width=12,
                ),
                graph(
                    "Latency p99 by service",
                    quantiles("hala_http_request_duration_seconds", "service", HTTP, (0.99,)),
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Kafka consumers",
            [
                graph(
                    "Records/s by service and outcome",
                    Query(
                        rate(
                            "hala_consumer_records_total", "service, outcome", 'service=~"$service"'
                        ),
                        "{{service}} {{outcome}}",
                    ),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Dead letters by service",
                    Query(
                        increase("hala_dead_letters_total", "service", 'service=~"$service"'),
                        "{{service}}",
                    ),
                    description="Records dead-lettered per interval (DeadLettersReceived alert).",
                    bars=True,
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
                graph(
                    "Consumer lag by group",
                    Query(
                        'sum by (group) (hala_consumer_lag_records{service=~"$service"})',
                        "{{group}}",
                    ),
                    description="ConsumerLagGrowing fires above 1000 records and rising.",
                    thresholds=[(GREEN, None), (RED, 1000)],
                ),
                graph(
                    "Consumer lag by group and partition",
                    Query(
                        "sum by (group, topic, partition) "
                        '(hala_consumer_lag_records{service=~"$service"})',
                        "{{group}} {{topic}}/{{partition}}",
                    ),
                    width=24,
                    height=9,
                ),
            ],
        ),
        Row(
            "Processes",
            [
                graph(
                    "Resident memory by job and instance",
                    Query(
                        "sum by (job, instance) (process_resident_memory_bytes)",
                        "{{job}} {{instance}}",
                    ),
                    description="The services' default registry exports process metrics; the "
                    "simulator's own registry does not.",
                    unit="bytes",
                    width=24,
                ),
            ],
        ),
    ]


def pipeline() -> list[Row]:
    return [
        Row(
            "At a glance",
            [
                must_be_zero(
                    "Meta throttle errors",
                    "sum(sender_throttle_errors_total) or vector(0)",
                    "Throttling errors Meta answered since the sender started: pacing "
                    "exists so that there are none (MetaThrottleErrors alert).",
                ),
                stat(
                    "Numbers held",
                    "sum(sender_numbers_held) or vector(0)",
                    "Phone numbers on which sending is held (token expired, account restricted, "
                    "maintenance).",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Parked statuses",
                    "sum(status_parked_statuses) or vector(0)",
                    "Statuses waiting for a wamid we do not know yet (measured by the sweeper).",
                    thresholds=[(GREEN, None), (ORANGE, 100)],
                ),
                stat(
                    "Webhook signature failures (range)",
                    in_range("status_webhooks_rejected_total", 'reason="bad_signature"'),
                    "Wrong app secret or forged traffic (WebhookSignatureFailuresSpike alert).",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
            ],
        ),
        Row(
            "End to end",
            [
                graph(
                    "202 to Meta accepting the message",
                    quantiles("sender_accept_to_meta_seconds"),
                    description="From ingest's 202 to the Graph API's 200 (pacing included).",
                    unit="s",
                    width=12,
                ),
                graph(
                    "202 to the delivery being stored",
                    quantiles("status_accept_to_delivered_seconds"),
                    description="From ingest's 202 to the delivered (or read) status stored.",
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Ingest",
            [
                graph(
                    "Accepted/s by type",
                    Query(rate("ingest_messages_accepted_total", "type"), "{{type}}"),
                    unit="rps",
                    stacked=True,
                    width=6,
                ),
                graph(
                    "Rejected/s by code",
                    Query(rate("ingest_rejections_total", "code"), "{{code}}"),
                    unit="rps",
                    stacked=True,
                    width=6,
                ),
                graph(
                    "Idempotent replays/s",
                    Query(rate("ingest_idempotent_replays_total"), "replays"),
                    unit="rps",
                    width=6,
                ),
                graph(
                    "Publish latency (to broker ack)",
                    quantiles("ingest_publish_duration_seconds"),
                    unit="s",
                    width=6,
                ),
            ],
        ),
        Row(
            "Sender",
            [
                graph(
                    "Meta calls/s by outcome and error class",
                    Query(
                        rate("sender_meta_requests_total", "outcome, error_class"),
                        "{{outcome}} {{error_class}}",
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                graph(
                    "Meta call latency", quantiles("sender_meta_request_duration_seconds"), unit="s"
                ),
                graph(
                    "Pacing wait",
                    quantiles("sender_pacing_wait_seconds"),
                    description="From eligible (recipient and tier permitting) to sent.",
                    unit="s",
                ),
                graph(
                    "Outcomes/s by status",
                    Query(
                        rate("sender_outcomes_total", "status, replayed"),
                        "{{status}} replayed={{replayed}}",
                    ),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Throttle errors by code",
                    Query(
                        increase("sender_throttle_errors_total", "code"),
                        "{{code}}",
                    ),
                    description="Must stay zero.",
                    bars=True,
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
                graph(
                    "Pair-rate parked and expired /s",
                    Query(rate("sender_pair_rate_parked_total"), "pair-rate parked"),
                    Query(rate("sender_messages_expired_total"), "expired"),
                    unit="rps",
                ),
                graph(
                    "In flight and queued",
                    Query("sum(sender_messages_in_flight)", "in flight"),
                    Query("sum(sender_messages_queued)", "queued"),
                ),
                graph("Numbers held", Query("sum(sender_numbers_held)", "held")),
                graph(
                    "Operator alerts by kind",
                    Query(increase("sender_alerts_total", "kind"), "{{kind}}"),
                    bars=True,
                ),
            ],
        ),
        Row(
            "Status (webhooks)",
            [
                graph(
                    "Webhooks/s",
                    Query(rate("status_webhooks_received_total"), "received"),
                    Query(rate("status_webhooks_published_total"), "published"),
                    Query(rate("status_webhooks_rejected_total", "reason"), "rejected {{reason}}"),
                    unit="reqps",
                ),
                graph(
                    "Webhook publish latency (to broker ack)",
                    quantiles("status_webhook_publish_duration_seconds"),
                    unit="s",
                ),
                graph(
                    "Processing lag",
                    quantiles("status_processing_lag_seconds"),
                    description="From receiving a webhook to processing it.",
                    unit="s",
                ),
                graph(
                    "Statuses/s by kind",
                    Query(rate("status_statuses_total", "status"), "{{status}}"),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Parked statuses",
                    Query("sum(status_parked_statuses)", "parked now"),
                    Query(
                        increase("status_statuses_parked_total"),
                        "parked per interval",
                    ),
                ),
                graph(
                    "Inbound messages/s",
                    Query(rate("status_inbound_messages_total"), "inbound"),
                    unit="rps",
                ),
                graph(
                    "Template updates, ignored changes, malformed items",
                    Query(
                        increase("status_template_updates_total", "event"),
                        "template {{event}}",
                    ),
                    Query(
                        increase("status_changes_ignored_total", "field"),
                        "ignored {{field}}",
                    ),
                    Query(increase("status_items_malformed_total"), "malformed"),
                    bars=True,
                    width=12,
                ),
                graph(
                    "Sweeper",
                    Query(
                        increase("status_unknown_outcomes_failed_total"),
                        "unknown → failed",
                    ),
                    Query(increase("status_messages_anonymised_total"), "anonymised"),
                    bars=True,
                    width=12,
                ),
            ],
        ),
        Row(
            "Meta simulator (local runs)",
            collapsed=True,
            panels=[
                graph(
                    "Simulator sends/s by outcome",
                    Query(rate("metasim_sends_total", "outcome"), "{{outcome}}"),
                    unit="rps",
                    width=6,
                ),
                graph(
                    "Simulator Graph errors by code",
                    Query(increase("metasim_graph_errors_total", "code"), "{{code}}"),
                    bars=True,
                    width=6,
                ),
                graph(
                    "Simulator webhook attempts/s by result",
                    Query(rate("metasim_webhook_attempts_total", "result"), "{{result}}"),
                    unit="reqps",
                    width=6,
                ),
                graph(
                    "Simulator webhook items pending",
                    Query("sum(metasim_webhook_pending)", "pending"),
                    width=6,
                ),
            ],
        ),
    ]


def billing() -> list[Row]:
    return [
        Row(
            "At a glance",
            [
                must_be_zero(
                    "Ledger drift",
                    "max(billing_ledger_drift_micros) or vector(0)",
                    "Ledger vs balances at the last reconciliation (LedgerDrift alert).",
                    unit="none",
                ),
                stat(
                    "Low-balance alerts (range)",
                    in_range("billing_low_balance_alerts_total"),
                    "Accounts whose available credit fell below their threshold.",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Dead letters (range)",
                    in_range("hala_dead_letters_total", 'service="billing"'),
                    "Billing events sent to a dead-letter topic.",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
                stat(
                    "Consumer lag (records)",
                    'sum(hala_consumer_lag_records{service="billing"}) or vector(0)',
                    "Billing's records not committed yet.",
                    thresholds=[(GREEN, None), (ORANGE, 100), (RED, 1000)],
                ),
            ],
        ),
        Row(
            "Money",
            [
                graph(
                    "Reservations, charges, refunds /s",
                    Query(rate("billing_reservations_total"), "reservations"),
                    Query(rate("billing_charges_total"), "charges"),
                    Query(rate("billing_refunds_total"), "refunds"),
                    unit="rps",
                ),
                graph(
                    "Rejections/s by reason",
                    Query(rate("billing_rejections_total", "reason"), "{{reason}}"),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Charged micros/s",
                    Query(rate("billing_charged_micros_total"), "charged"),
                    description="Micros of account currency charged for delivered messages, "
                    "all currencies added up.",
                ),
                graph(
                    "Low-balance alerts",
                    Query(increase("billing_low_balance_alerts_total"), "alerts"),
                    bars=True,
                ),
                graph(
                    "Ledger drift (micros)",
                    Query("max(billing_ledger_drift_micros)", "drift"),
                    description="Must stay zero.",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
            ],
        ),
        Row(
            "Events",
            [
                graph(
                    "Events/s by topic and outcome",
                    Query(rate("billing_events_total", "topic, outcome"), "{{topic}} {{outcome}}"),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Event duration",
                    quantiles("billing_event_duration_seconds"),
                    description="Per input event, retries included.",
                    unit="s",
                ),
                graph(
                    "Consumer lag by partition",
                    Query(
                        'sum by (topic, partition) (hala_consumer_lag_records{service="billing"})',
                        "{{topic}}/{{partition}}",
                    ),
                ),
            ],
        ),
    ]


def notify() -> list[Row]:
    return [
        Row(
            "At a glance",
            [
                stat(
                    "Delivered (range)",
                    in_range("notify_deliveries_total", 'outcome="delivered"'),
                    "Webhook deliveries that reached their endpoint.",
                ),
                stat(
                    "Failed deliveries (range)",
                    in_range("notify_deliveries_total", 'outcome="failed"'),
                    "Deliveries given up: retries exhausted, or 410 Gone.",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Endpoints disabled (range)",
                    in_range("notify_endpoints_disabled_total"),
                    "Client endpoints notify disabled (410, or 3 days without a success); their "
                    "owners were emailed (NotifyEndpointsDisabled alert).",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Alert emails failed (range)",
                    in_range("notify_emails_total", 'outcome=~"failed|no_recipient"'),
                    "Emails given up (NotifyEmailsFailing alert).",
                    thresholds=[(GREEN, None), (RED, ANY)],
                ),
            ],
        ),
        Row(
            "Webhook deliveries",
            [
                graph(
                    "Attempts/s by outcome",
                    Query(rate("notify_attempts_total", "outcome"), "{{outcome}}"),
                    unit="reqps",
                    stacked=True,
                    description="delivered, http_error, throttled (429/503), gone (410), "
                    "timeout, connection_error, blocked (SSRF guard).",
                ),
                graph(
                    "Deliveries finished/s by outcome",
                    Query(rate("notify_deliveries_total", "outcome"), "{{outcome}}"),
                    unit="rps",
                    stacked=True,
                ),
                graph(
                    "Event lag: platform event to first attempt",
                    quantiles("notify_event_lag_seconds"),
                    unit="s",
                    description="From the source record in Kafka to the first attempt "
                    "starting (NotifyEventLagHigh alert above 5 s).",
                    thresholds=[(GREEN, None), (RED, 5)],
                ),
                graph(
                    "Attempt latency",
                    quantiles("notify_attempt_duration_seconds"),
                    unit="s",
                    description="Attempts that got an answer; timeouts end at 10 s.",
                ),
                graph(
                    "In flight and queued",
                    Query("sum(notify_attempts_in_flight)", "in flight"),
                    Query("sum(notify_deliveries_queued)", "queued in memory"),
                ),
                graph(
                    "Client events/s by type and outcome",
                    Query(rate("notify_events_total", "type, outcome"), "{{type}} {{outcome}}"),
                    unit="rps",
                    stacked=True,
                ),
            ],
        ),
        Row(
            "Requests and email",
            [
                graph(
                    "Tests and replays",
                    Query(
                        increase("notify_requests_total", "kind, outcome"),
                        "{{kind}} {{outcome}}",
                    ),
                    bars=True,
                ),
                graph(
                    "Alert emails by kind and outcome",
                    Query(
                        increase("notify_emails_total", "kind, outcome"),
                        "{{kind}} {{outcome}}",
                    ),
                    bars=True,
                ),
                graph(
                    "Endpoints disabled by reason",
                    Query(
                        increase("notify_endpoints_disabled_total", "reason"),
                        "{{reason}}",
                    ),
                    bars=True,
                ),
            ],
        ),
    ]


def trust() -> list[Row]:
    return [
        Row(
            "At a glance",
            [
                stat(
                    "Accounts held (range)",
                    in_range("guard_holds_total"),
                    "Holds guard's fraud and spam rules put on accounts' sending; each waits for "
                    "an operator (AccountsHeld alert; `hala accounts release`).",
                    thresholds=[(GREEN, None), (ORANGE, ANY)],
                ),
                stat(
                    "Releases (range)",
                    in_range("guard_releases_total"),
                    "Holds operators released.",
                ),
                stat(
                    "Marketing refused to opted-out contacts (range)",
                    in_range("ingest_rejections_total", 'code="recipient_opted_out"'),
                    "422 recipient_opted_out: a marketing template to a contact "
                    "who opted out (Meta would have failed it with 131050).",
                ),
                stat(
                    "Opt-outs (range)",
                    in_range("status_suppressions_total", 'outcome="suppressed"'),
                    "Contacts suppressed for marketing (keyword, Meta's "
                    "user_preferences, the API, an operator).",
                ),
            ],
        ),
        Row(
            "Rules and lists",
            [
                graph(
                    "Holds by rule",
                    Query(increase("guard_holds_total", "rule"), "{{rule}}"),
                    bars=True,
                ),
                graph(
                    "Suppression changes by source and outcome",
                    Query(
                        increase("status_suppressions_total", "source, outcome"),
                        "{{source}} {{outcome}}",
                    ),
                    bars=True,
                ),
                graph(
                    "Sends refused by the account's rules",
                    Query(
                        rate(
                            "ingest_rejections_total",
                            "code",
                            'code=~"account_held|recipient_blocked|recipient_opted_out"',
                        ),
                        "{{code}}",
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                graph(
                    "guard records/s by kind and outcome",
                    Query(rate("guard_records_total", "kind, outcome"), "{{kind}} {{outcome}}"),
                    unit="rps",
                    stacked=True,
                ),
                graph("guard batch duration", quantiles("guard_batch_duration_seconds"), unit="s"),
                graph(
                    "guard consumer lag",
                    Query('sum(hala_consumer_lag_records{service="guard"})', "records"),
                ),
            ],
        ),
    ]


DASHBOARDS = {
    "overview.json": ("hala-overview", "Hala — Overview", overview),
    "pipeline.json": ("hala-pipeline", "Hala — Pipeline", pipeline),
    "billing.json": ("hala-billing", "Hala — Billing", billing),
    "notify.json": ("hala-notify", "Hala — Client events", notify),
    "trust.json": ("hala-trust", "Hala — Opt-out and fraud holds", trust),
}


# --- layout and the dashboard envelope ------------------------------------------------------


def lay_out(rows: list[Row]) -> list[Json]:
    """Rows full width; panels left to right, wrapping at 24 columns."""
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in rows:
        row_json: Json = {
            "id": next_id,
            "type": "row",
            "title": row.title,
            "collapsed": row.collapsed,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
        next_id += 1
        panels.append(row_json)
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            rendered = panel.render(next_id, x, y)
            next_id += 1
            (row_json["panels"] if row.collapsed else panels).append(rendered)
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def dashboard(uid: str, title: str, rows: list[Row]) -> Json:
    templating: list[Json] = []
    if any("$service" in q.expr for row in rows for p in row.panels for q in p.queries):
        templating.append(
            {
                "name": "service",
                "label": "Service",
                "type": "query",
                "datasource": DATASOURCE,
                "definition": 'label_values(up{job="hala"}, service)',
                "query": 'label_values(up{job="hala"}, service)',
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "options": [],
                "regex": "",
                "sort": 1,
                "hide": 0,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "Hala dashboards",
            }
        ],
        "templating": {"list": templating},
        "panels": lay_out(rows),
    }


def build() -> dict[str, str]:
    """File name -> the JSON text to commit."""
    return {
        name: json.dumps(dashboard(uid, title, rows()), indent=2, ensure_ascii=False) + "\n"
        for name, (uid, title, rows) in DASHBOARDS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {(OUT / name).relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
