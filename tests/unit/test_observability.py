"""Metrics are part of the interface: the dashboards and alert rules name only metrics the code
registers, the committed dashboards are the generator's output, and every metric declared in the
code has a conventional name and labels from a closed set.

Regenerate the dashboards with `python deploy/grafana/build_dashboards.py`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
CODE_ROOTS = ("services", "shared", "tools")

# Series Prometheus itself writes, not any exporter.
PROMETHEUS_SERIES = {
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}

# Label names whose values come from closed sets. A new label goes here only once its values are
# known to be bounded (an enum, a table, a route template) — never an id.
ALLOWED_LABELS = {
    "service",
    "route",
    "status_class",
    "outcome",
    "dependency",
    "group",
    "topic",
    "partition",
    "reason",
    "code",
    "type",
    "error_class",
    "status",
    "replayed",
    "kind",
    "event",
    "field",
    "result",
    "command",
    # guard's rules (shared.messages.HOLD_RULES), a suppression's source (keyword,
    # user_preferences, api, operator), ingest's contact lists and their actions
    "rule",
    "source",
    "list",
    "action",
}
# Unbounded or personal: each value would be a new time series, and some are personal data.
FORBIDDEN_LABELS = {
    "account",
    "account_id",
    "tenant",
    "tenant_id",
    "customer",
    "customer_id",
    "user",
    "user_id",
    "phone",
    "phone_number",
    "phone_number_id",
    "msisdn",
    "recipient",
    "to",
    "from",
    "wa_id",
    "waba_id",
    "message_id",
    "wamid",
    "event_id",
    "idempotency_key",
    "api_key",
    "key",
    "token",
    "email",
    "template",
    "template_name",
    "url",
    "path",
}

METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
TIME_WORDS = re.compile(r"duration|latency|\blag\b|_lag_|wait|time|delay|\bage\b|_age_", re.I)
NON_BASE_UNITS = ("_ms", "_milliseconds", "_microseconds", "_minutes", "_hours", "_days")
HISTOGRAM_UNITS = ("_seconds", "_bytes", "_records")

# The series names each metric type exposes, from the family name prometheus-client reports.
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


# --- the generator and its output ------------------------------------------------------------


def _load_builder() -> ModuleType:
    path = GRAFANA / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("hala_build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


BUILDER = _load_builder()


def _dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable of every dashboard."""
    for file, board in _dashboards().items():
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                yield f"{file}: {panel['title']}", target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
                wrapped = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
                yield f"{file}: ${var['name']}", wrapped.group(1) if wrapped else query


def _alert_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yml: {rule.get('alert') or rule.get('record')}", rule["expr"]


def _recorded_series() -> set[str]:
    return {
        rule["record"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    expected = BUILDER.build()
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(DASHBOARDS.glob("*.json"))}
    assert set(committed) == set(expected), "run python deploy/grafana/build_dashboards.py"
    for name, text in expected.items():
        assert committed[name] == text, (
            f"{name} differs from the generator's output: "
            "run python deploy/grafana/build_dashboards.py and commit the result"
        )


def test_dashboards_query_the_provisioned_prometheus_by_uid() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["uid"] == BUILDER.DATASOURCE_UID
    uids = set()
    for file, board in _dashboards().items():
        assert 36 <= board["schemaVersion"] <= 41, file
        uids.add(board["uid"])
        ids = [panel["id"] for panel in _panels(board["panels"])]
        assert len(ids) == len(set(ids)), f"{file}: panel ids repeat"
        for panel in _panels(board["panels"]):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{file}: {panel['title']} overflows the grid"
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == source["uid"], f"{file}: {panel['title']}"
            assert panel["targets"], f"{file}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"], f"{file}: {panel['title']}"
    assert len(uids) == len(_dashboards()), "dashboard uids repeat"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (Grafana's variables replaced by plain values)."""
    substitutions = {
        "$__rate_interval": "1m",
        "$__range": "1h",
        "$__interval": "1m",
        "$service": ".*",
    }
    rules = []
    for i, (_, expr) in enumerate(_dashboard_queries()):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard_query_{i}", "expr": expr})
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_serves_the_provisioned_grafana_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana-oss:")
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro", volume
        assert (REPO / source).is_dir(), volume
        mounts[(REPO / source).resolve()] = target
    assert mounts[(GRAFANA / "provisioning").resolve()] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hala.yml").read_text())[
        "providers"
    ]
    assert [p["options"]["path"] for p in providers] == [mounts[DASHBOARDS.resolve()]]


# --- what the code registers -----------------------------------------------------------------


def _metric_modules() -> list[ModuleType]:
    names = ["shared.metrics", "tools.metasim.metrics"]
    names += [
        f"services.{p.parent.name}.metrics"
        for p in sorted((REPO / "services").glob("*/metrics.py"))
    ]
    return [importlib.import_module(name) for name in names]


def _registries() -> list[CollectorRegistry]:
    """The default registry every service serves on /metrics, and the simulator's own one."""
    _metric_modules()
    from tools.metasim.metrics import Metrics

    return [REGISTRY, Metrics().registry]


def _library_families() -> set[str]:
    """Families prometheus-client's default collectors export (process, platform, gc)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return {family.name for family in registry.collect()}


def _registered_series() -> set[str]:
    """Every series name the code's registries can expose, children created yet or not."""
    names: set[str] = set()
    for registry in _registries():
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
            names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(expr) if name.lower() not in _KEYWORDS}


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (service, le) (rate(a_seconds_bucket{route!~"/x|y"}'
        "[$__rate_interval]))) / on(service) group_left b_total offset 5m"
        ' and sum without (code) (c{x="a{b}"}) > 1e3 or vector(0)'
    ) == {"a_seconds_bucket", "b_total", "c"}


def test_dashboards_and_alerts_name_only_metrics_the_code_registers() -> None:
    known = _registered_series() | PROMETHEUS_SERIES | _recorded_series()
    referenced = list(_dashboard_queries()) + list(_alert_queries())
    assert referenced
    missing = sorted(
        {
            (name, where)
            for where, expr in referenced
            for name in metric_names(expr)
            if name not in known
        }
    )
    assert not missing, "metrics referenced but registered by no code:\n" + "\n".join(
        f"  {name}  ({where})" for name, where in missing
    )


# --- how the code declares its metrics -------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    kind: str  # Counter, Gauge, Histogram, ...
    name: str
    documentation: str
    labels: tuple[str, ...]
    where: str  # path:line
    owner: str  # the prefix its names must carry


def _owner(path: Path) -> str:
    parts = path.relative_to(REPO).parts
    return "hala" if parts[0] == "shared" else parts[1]


def _declarations() -> tuple[list[Declared], list[str]]:
    """Every call to a prometheus-client metric class under services/, shared/ and tools/, read
    from the source (so a metric on any registry counts), and the calls that can't be read."""
    found: list[Declared] = []
    unreadable: list[str] = []
    for root in CODE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            classes: dict[str, str] = {}
            modules: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "prometheus_client"
                ):
                    for alias in node.names:
                        if alias.name in METRIC_CLASSES:
                            classes[alias.asname or alias.name] = alias.name
                elif isinstance(node, ast.Import):
                    modules.update(
                        a.asname or a.name for a in node.names if a.name == "prometheus_client"
                    )
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if isinstance(func, ast.Name) and func.id in classes:
                    kind = classes[func.id]
                elif (
                    isinstance(func, ast.Attribute)
                    and func.attr in METRIC_CLASSES
                    and isinstance(func.value, ast.Name)
                    and func.value.id in modules
                ):
                    kind = func.attr
                else:
                    continue
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                arguments = dict(
                    zip(("name", "documentation", "labelnames"), node.args, strict=False)
                )
                arguments.update({k.arg: k.value for k in node.keywords if k.arg})
                if {"namespace", "subsystem", "unit"} & arguments.keys():
                    unreadable.append(f"{where}: spell the full name, not namespace/subsystem/unit")
                    continue
                try:
                    name = ast.literal_eval(arguments["name"])
                    documentation = ast.literal_eval(
                        arguments.get("documentation", ast.Constant(""))
                    )
                    labels = tuple(ast.literal_eval(arguments.get("labelnames", ast.Tuple([]))))
                except (KeyError, ValueError):
                    unreadable.append(f"{where}: name and labels must be literals")
                    continue
                found.append(Declared(kind, name, documentation, labels, where, _owner(path)))
    return found, unreadable


DECLARED, UNREADABLE = _declarations()


def test_every_metric_declaration_is_readable_and_covers_what_is_registered() -> None:
    assert not UNREADABLE, "\n".join(UNREADABLE)
    declared = {d.name.removesuffix("_total") if d.kind == "Counter" else d.name for d in DECLARED}
    library = _library_families()
    registered = {family.name for registry in _registries() for family in registry.collect()}
    assert not registered - declared - library, (
        "registered but not declared literally under services/, shared/ or tools/: "
        f"{sorted(registered - declared - library)}"
    )
    assert {"hala_http_requests_total", "billing_ledger_drift_micros", "metasim_sends_total"} <= {
        d.name for d in DECLARED
    }


@pytest.mark.parametrize("metric", DECLARED, ids=lambda d: d.name)
def test_metric_labels_come_from_a_closed_set(metric: Declared) -> None:
    forbidden = sorted(set(metric.labels) & FORBIDDEN_LABELS)
    assert not forbidden, (
        f"{metric.where}: {metric.name} is labelled by {forbidden}: unbounded or personal values "
        "(one series per account, number or message) — never a label"
    )
    unknown = sorted(set(metric.labels) - ALLOWED_LABELS)
    assert not unknown, (
        f"{metric.where}: {metric.name} uses labels outside the closed set: {unknown}. If their "
        "values are bounded, add them to ALLOWED_LABELS in this test"
    )


@pytest.mark.parametrize("metric", DECLARED, ids=lambda d: d.name)
def test_metric_names_follow_prometheus_conventions(metric: Declared) -> None:
    name, where = metric.name, metric.where
    assert SNAKE_CASE.fullmatch(name), f"{where}: {name} is not snake_case"
    assert name.startswith(f"{metric.owner}_"), f"{where}: {name} lacks the {metric.owner}_ prefix"
    assert not name.endswith(NON_BASE_UNITS), f"{where}: {name}: use base units (seconds)"
    assert metric.documentation.strip(), f"{where}: {name} has no help text"
    if metric.kind == "Counter":
        assert name.endswith("_total"), f"{where}: counter {name} must end with _total"
    else:
        assert not name.endswith("_total"), f"{where}: only counters end with _total ({name})"
    if metric.kind in {"Histogram", "Summary"}:
        assert name.endswith(HISTOGRAM_UNITS), f"{where}: {name} must end with its unit"
        if TIME_WORDS.search(f"{name} {metric.documentation}"):
            assert name.endswith("_seconds"), f"{where}: a duration ({name}) is in _seconds"
