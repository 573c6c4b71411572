"""Prometheus metrics of the gateway (served on /metrics), one registry per instance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from gateway.auth import TokenCache


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "HTTP calls answered, by call and status",
            ["call", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            "gateway_verdict_seconds",
            "Event published to its verdict received",
            ["call"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.timeouts = Counter(
            "gateway_verdict_timeouts_total", "Calls with no verdict in time", ["call"], registry=r
        )
        self.fail_open = Counter(
            "gateway_fail_open_total",
            "Degraded allows with a 60 s token after a timeout (GATEWAY_ON_TIMEOUT=allow)",
            ["call"],
            registry=r,
        )
        self.replies = Counter(
            "gateway_replies_total",
            "Reply records read, by outcome (matched, no_waiter, revoke, not_a_verdict, mismatch)",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge("gateway_in_flight", "Calls waiting for their verdict", registry=r)
        self.rejected = Counter(
            "gateway_rejected_total",
            "Calls refused with 503 or 429 (reason user_in_flight), by reason",
            ["reason"],
            registry=r,
        )
        self.token_cache_bytes = Gauge(
            "gateway_token_cache_bytes",
            "Memory accounted to the callers of verified tokens (at most GATEWAY_TOKEN_CACHE_BYTES)",
            registry=r,
        )
        self.token_cache_entries = Gauge(
            "gateway_token_cache_entries", "Verified tokens remembered until their exp", registry=r
        )

    def watch_token_cache(self, tokens: TokenCache) -> None:
        """Read at each scrape, never on the calls' path."""
        self.token_cache_bytes.set_function(lambda: tokens.bytes)
        self.token_cache_entries.set_function(lambda: len(tokens))
