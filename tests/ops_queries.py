"""The PromQL the operator files ship (ops/prometheus/alerts.yml, ops/grafana/dashboards/*.json)
and the metric names it selects: what tests/unit/test_ops_files.py and
tests/integration/test_ops_metrics_served.py check.

The names are found by a small lexer, not a full PromQL parser (there is no maintained one
for Python): strings, label matchers `{...}`, ranges `[...]` and the label lists of `by`,
`without`, `on`, `ignoring`, `group_left` and `group_right` are cut out, then every
identifier that is not a keyword and not followed by `(` (a function or an aggregation) is a
metric name. promtool, where it is installed, checks that the same expressions parse.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"

# Grafana's built-in interval variables, as Prometheus would see them once Grafana fills them in.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

# Series Prometheus makes itself, not served by any /metrics.
PROMETHEUS_SYNTHETIC = {"up"}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(
    r"(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-z]*)"  # 0.99, 1e3, 5m
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<other>\S)"
)
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Query:
    source: str  # "alerts.yml: ConcurrencyPartitionHalted", "dashboard: Cycle latency (A)"
    expr: str  # as Prometheus evaluates it (Grafana's interval variables filled in)


def require_installed(tool: str | None, missing: str) -> str:
    """The tool's path; where it is not installed the test is skipped, except in CI (CI set),
    where a skip would pass unchecked rules: there it fails."""
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (in CI this check must run, not be skipped)")
        pytest.skip(missing)
    return tool


def fill_grafana_variables(expr: str) -> str:
    for var, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise ValueError(f"a dashboard variable this check cannot fill in: {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (series names as written, suffixes included)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    names: set[str] = set()
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]
    for i, (kind, value) in enumerate(tokens):
        if kind != "name" or value.lower() in _KEYWORDS:
            continue
        if i + 1 < len(tokens) and tokens[i + 1][1] == "(":
            continue  # a function or an aggregation
        if i > 0 and tokens[i - 1][1] == "offset":
            continue
        names.add(value)
    return names


def family_name(series: str, histograms: set[str]) -> str:
    """A histogram's _bucket/_sum/_count series belong to its family; other names are their own."""
    for suffix in _HISTOGRAM_PARTS:
        if series.endswith(suffix) and series.removesuffix(suffix) in histograms:
            return series.removesuffix(suffix)
    return series


def alert_queries() -> list[Query]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [
        Query(f"alerts.yml: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def dashboard_queries() -> list[Query]:
    found: list[Query] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                found.append(
                    Query(
                        f"{path.name}: {panel['title']} ({target['refId']})",
                        fill_grafana_variables(target["expr"]),
                    )
                )
    return found


def all_queries() -> list[Query]:
    return alert_queries() + dashboard_queries()


def queried_names() -> dict[str, list[str]]:
    """Every metric name the shipped PromQL selects -> the queries that select it."""
    out: dict[str, list[str]] = {}
    for q in all_queries():
        for name in metric_names(q.expr):
            out.setdefault(name, []).append(q.source)
    return out


def served_families(exposition: str) -> tuple[set[str], set[str]]:
    """(series names a /metrics page can answer, its histogram families), from its # TYPE lines.

    prometheus_client writes `# HELP`/`# TYPE` for a labelled family before its first
    observation, with no sample yet, so a family is served from the moment it is registered.
    """
    names: set[str] = set()
    histograms: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        names.add(name)
        if kind == "histogram":
            histograms.add(name)
            names.update(name + suffix for suffix in _HISTOGRAM_PARTS)
        elif kind == "counter" and not name.endswith("_total"):
            names.add(name + "_total")
    return names, histograms
