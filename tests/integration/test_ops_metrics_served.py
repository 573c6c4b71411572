"""Every metric the shipped dashboard and alert rules query is served by a real processor's or a
real gateway's /metrics (ops/, docs/observability.md).

The expected names come from the files themselves (tests/ops_queries.py), so a panel or a rule
that queries a metric nobody serves fails here. A labelled family is listed on /metrics (its
`# HELP`/`# TYPE` lines) from the moment it is registered, before its first observation; one
call through the gateway also gives the families of the main path a sample, and those are
checked to carry one.
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway_harness import bearer, running_gateway
from tests.harness import Flow, wait_until
from tests.ops_queries import PROMETHEUS_SYNTHETIC, family_name, queried_names, served_families

pytestmark = pytest.mark.integration

# Families a start through the gateway must have given a sample (not only declared).
OBSERVED_AFTER_ONE_CALL = {
    "concurrency_events_total",
    "concurrency_consumer_lag",
    "concurrency_batch_seconds",
    "concurrency_assigned_partitions",
    "concurrency_active_leases",
    "gateway_requests_total",
    "gateway_verdict_seconds",
    "gateway_in_flight",
}


def sampled_families(exposition: str, histograms: set[str]) -> set[str]:
    """Families with at least one sample line (histogram parts folded into their family)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            series = line.split("{", 1)[0].split(" ", 1)[0]
            names.add(family_name(series, histograms))
    return names


async def test_every_metric_the_dashboard_and_the_alerts_query_is_served(flow: Flow):
    processor = flow._running[0].processor
    async with (
        running_gateway(flow) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as gateway_http,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{processor.http_port}", timeout=10) as processor_http,
    ):

        async def started() -> bool:
            r = await gateway_http.post("/v1/sessions", json={"sessionId": "s-ops"}, headers=bearer("u-ops"))
            return r.status_code == 200  # the cold first call may time out: retried like a client

        await wait_until(started, 60, interval=0.2, what="a start answered through the gateway")

        async def pages() -> tuple[str, str] | None:
            processor_page = (await processor_http.get("/metrics")).text
            gateway_page = (await gateway_http.get("/metrics")).text
            if "concurrency_events_total{" not in processor_page:
                return None  # the batch's counts are set after its verdicts are acknowledged
            if "concurrency_consumer_lag{" not in processor_page:
                return None  # refreshed on a timer (LAG_INTERVAL_MS, processor/lag.py), not per batch
            return processor_page, gateway_page

        processor_page, gateway_page = await wait_until(pages, 30, what="the decision counted")

    served: set[str] = set()
    histograms: set[str] = set()
    for page in (processor_page, gateway_page):
        names, hist = served_families(page)
        served |= names
        histograms |= hist

    queried = queried_names()
    missing = {
        name: sources
        for name, sources in sorted(queried.items())
        if name not in served and name not in PROMETHEUS_SYNTHETIC
    }
    assert not missing, "queried by ops/ but served by neither /metrics:\n" + "\n".join(
        f"  {family_name(name, histograms)}: {', '.join(sources)}" for name, sources in missing.items()
    )

    sampled = sampled_families(processor_page, histograms) | sampled_families(gateway_page, histograms)
    assert OBSERVED_AFTER_ONE_CALL <= sampled, OBSERVED_AFTER_ONE_CALL - sampled
    queried_families = {family_name(n, histograms) for n in queried}
    assert OBSERVED_AFTER_ONE_CALL <= queried_families, "the dashboard lost a panel of the main path"
