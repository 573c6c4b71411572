"""A real Prometheus loads the shipped alert rules and evaluates every query of the shipped
dashboard against a real processor and gateway (ops/, docs/observability.md).

Prometheus is Debian's binary that `make system-deps` unpacks (ops/prometheus-binaries.sh); without
it this test is skipped (in CI, where it must run, it fails). It scrapes both every second while
calls go through the gateway, then: every rule is loaded and evaluates without error, every
dashboard query is accepted, and the panels of the main path (decisions, lag, cycle and commit
latency, calls, gateway latency, in flight) show data.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from compose.prometheus_server import PrometheusServer, find_prometheus
from tests.gateway_harness import bearer, running_gateway
from tests.harness import Flow, wait_until
from tests.ops_queries import ALERTS, dashboard_queries, require_installed

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    require_installed(find_prometheus(), "prometheus not unpacked: run `make system-deps`")


# Panels a few calls through the gateway must fill (the others count faults that did not happen).
MAIN_PATH_PANELS = {
    "Assigned partitions",
    "Processors up",
    "Gateways up",
    "Active leases",
    "Consumer lag by partition",
    "Committed lag by partition",
    "Decisions by reason",
    "Cycle latency",
    "Commit latency",
    "Records per batch",
    "Calls by status",
    "Verdict latency p99 by call",
    "In flight",
    "Replies read by outcome",
}


async def test_prometheus_loads_the_rules_and_answers_every_dashboard_query(flow: Flow, tmp_path):
    processor = flow._running[0].processor
    async with (
        running_gateway(flow) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        jobs = {
            "concurrency-processor": [f"127.0.0.1:{processor.http_port}"],
            "concurrency-gateway": [gw.url.removeprefix("http://")],
        }
        prometheus = PrometheusServer(tmp_path / "prometheus", jobs, [ALERTS])
        await prometheus.astart(60)
        try:
            async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as prom:

                async def query(expr: str) -> dict:
                    return (await prom.get("/api/v1/query", params={"query": expr})).json()

                async def scraped_both(min_samples: int) -> bool:
                    got = await query("count_over_time(up[5m]) and up == 1")
                    samples = [float(r["value"][1]) for r in got["data"]["result"]]
                    return len(samples) == 2 and min(samples) >= min_samples

                await wait_until(lambda: scraped_both(1), 30, what="both targets scraped and up")
                for i in range(30):  # calls spread over several scrapes, so rates have two points
                    user = bearer(f"u-prom-{i % 6}")
                    await http.post("/v1/sessions", json={"sessionId": f"s-{i % 4}"}, headers=user)
                    await http.post(f"/v1/sessions/s-{i % 4}/heartbeat", headers=user)
                    await asyncio.sleep(0.2)
                await wait_until(lambda: scraped_both(8), 30, what="eight scrapes of both targets")

                async def rules_evaluated() -> list[dict] | None:
                    groups = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
                    rules = [rule for group in groups for rule in group["rules"]]
                    done = all(not rule["lastEvaluation"].startswith("0001") for rule in rules)
                    return rules if rules and done else None

                rules = await wait_until(rules_evaluated, 30, what="every rule evaluated")
                results = {q.source: (q, await query(q.expr)) for q in dashboard_queries()}
        finally:
            await prometheus.astop()

    assert len(rules) == ALERTS.read_text().count("- alert:")
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy

    refused = {source: got.get("error") for source, (_, got) in results.items() if got["status"] != "success"}
    assert not refused, refused
    filled = {
        source.split(": ", 1)[1].rsplit(" (", 1)[0]
        for source, (_, got) in results.items()
        if got["data"]["result"]
    }
    assert MAIN_PATH_PANELS <= filled, f"empty panels of the main path: {sorted(MAIN_PATH_PANELS - filled)}"
