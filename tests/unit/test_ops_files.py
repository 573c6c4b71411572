"""The operator files load as they are: the alert rules, the Prometheus configuration, the Grafana
dashboard and its provisioning parse; their PromQL parses (promtool, where it is installed); each
alert and panel is explained in docs/observability.md. Whether the metrics they query are served
is tests/integration/test_ops_metrics_served.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import ops_queries
from tests.ops_queries import ROOT, Query, metric_names

pytestmark = pytest.mark.unit

OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"
PROVISIONING = ROOT / "ops" / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
# Where `make system-deps` unpacks Debian's promtool (ops/prometheus-binaries.sh).
LOCAL_PROMTOOL = ROOT / "compose" / ".cache" / "prometheus" / "promtool"
PROMTOOL_MISSING = "promtool is not installed (make system-deps unpacks Debian's into compose/.cache)"


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found:
        return found
    return str(LOCAL_PROMTOOL) if os.access(LOCAL_PROMTOOL, os.X_OK) else None


def test_metric_names_are_found_past_functions_labels_ranges_and_keywords():
    expr = (
        'histogram_quantile(0.99, sum by (le, call) (rate(gateway_verdict_seconds_bucket{call=~"st.*",'
        ' x="a}b"}[5m] offset 1h))) > 1e3 and on (instance) up{job="x"} == 0'
        " or sum without (partition) (concurrency_state_lost) / ignoring (kind) group_left (a) b_total"
    )
    assert metric_names(expr) == {"gateway_verdict_seconds_bucket", "up", "concurrency_state_lost", "b_total"}


def test_grafana_interval_variables_are_filled_and_others_refused():
    assert ops_queries.fill_grafana_variables("rate(x[$__rate_interval])") == "rate(x[5m])"
    with pytest.raises(ValueError, match="cannot fill in"):
        ops_queries.fill_grafana_variables('rate(x{instance="$instance"}[5m])')


def test_histogram_series_map_to_their_family_only_for_histograms():
    served, histograms = ops_queries.served_families(
        "# TYPE a_seconds histogram\n# TYPE b_count gauge\n# TYPE c_total counter\n"
    )
    assert {"a_seconds_bucket", "a_seconds_sum", "a_seconds_count", "b_count", "c_total"} <= served
    assert ops_queries.family_name("a_seconds_bucket", histograms) == "a_seconds"
    assert ops_queries.family_name("b_count", histograms) == "b_count"


def test_alert_rules_parse_and_each_has_severity_summary_and_a_runbook_in_the_docs():
    doc = yaml.safe_load(ops_queries.ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 20
    page = OBSERVABILITY_DOC.read_text()
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", page, flags=re.M)}
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and anchor in headings, f"{name}: no heading {anchor} in the docs"


def test_dashboard_is_provisionable_json_and_every_panel_is_explained():
    dashboards = sorted(ops_queries.DASHBOARDS.glob("*.json"))
    assert dashboards
    page = OBSERVABILITY_DOC.read_text()
    for path in dashboards:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dash["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert f"**{panel['title']}**" in page, f"panel {panel['title']!r} not in docs/observability.md"


def test_provisioning_files_point_at_the_dashboards_and_prometheus_loads_the_rules():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "stream-concurrency.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"concurrency-processor", "concurrency-gateway"}
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + dashboards_path + ":ro") for m in grafana_mounts), grafana_mounts
    prometheus_mounts = compose["services"]["prometheus"]["volumes"]
    assert any(m.endswith(":/etc/prometheus/alerts.yml:ro") for m in prometheus_mounts), prometheus_mounts


def test_every_query_parses_with_promtool(tmp_path: Path):
    tool = ops_queries.require_installed(promtool(), PROMTOOL_MISSING)
    # The dashboard's queries as recording rules, so that promtool parses them too.
    records = [
        {"record": f"dashboard:query_{i}", "expr": q.expr}
        for i, q in enumerate(ops_queries.dashboard_queries())
    ]
    dashboard_rules = tmp_path / "dashboard-rules.yml"
    dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    for rules in (ops_queries.ALERTS, dashboard_rules):
        done = subprocess.run(
            [tool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_fire_when_their_unit_tests_say():
    """ops/prometheus/alerts_test.yml: synthetic series in, which alerts fire when (thresholds, `for`)."""
    tool = ops_queries.require_installed(promtool(), PROMTOOL_MISSING)
    done = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"],
        cwd=ops_queries.ALERTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_rules_test_case_where_it_fires():
    """An alert added or renamed without a promtool case for the situation it exists for fails here."""
    rules = yaml.safe_load(ops_queries.ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((ops_queries.ALERTS.parent / "alerts_test.yml").read_text())["tests"]
    seen_firing = {
        check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]
    }
    assert not alerts - seen_firing, (
        f"alerts with no case in alerts_test.yml where they fire: {sorted(alerts - seen_firing)}"
    )
    assert not seen_firing - alerts, (
        f"cases for alerts alerts.yml does not have: {sorted(seen_firing - alerts)}"
    )


def test_a_missing_tool_skips_the_check_on_a_workstation_and_fails_it_in_ci(monkeypatch: pytest.MonkeyPatch):
    assert ops_queries.require_installed("/usr/bin/promtool", PROMTOOL_MISSING) == "/usr/bin/promtool"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool is not installed"):
        ops_queries.require_installed(None, PROMTOOL_MISSING)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="in CI this check must run"):
        ops_queries.require_installed(None, PROMTOOL_MISSING)


def test_every_query_selects_a_metric():
    queries: list[Query] = ops_queries.all_queries()
    assert len(queries) > 40
    for q in queries:
        assert metric_names(q.expr), q.source


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")
