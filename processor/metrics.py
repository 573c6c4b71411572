"""Prometheus metrics of the processor (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "concurrency_events_total",
            "Decided events by type, decision and reason",
            ["type", "decision", "reason"],
            registry=r,
        )
        self.revokes = Counter("concurrency_revokes_total", "Leases evicted by evict_oldest", registry=r)
        self.dlq = Counter(
            "concurrency_dlq_total", "Records sent to the dead-letter topic", ["error"], registry=r
        )
        self.batch_size = Histogram(
            "concurrency_batch_size",
            "Records per consumed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "concurrency_batch_seconds",
            "Decision latency: batch fetched to its verdicts acknowledged",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.lag = Gauge(
            "concurrency_consumer_lag", "Records behind the end of the partition", ["partition"], registry=r
        )
        self.state_lost = Gauge(
            "concurrency_state_lost",
            "1 while a partition is halted because Redis lost its state",
            ["partition"],
            registry=r,
        )
        self.fenced = Counter(
            "concurrency_fenced_total", "Batches refused because another owner took the partition", registry=r
        )
        self.publish_errors = Counter(
            "concurrency_publish_errors_total",
            "Failed attempts to publish a batch, by kind: retriable, non_retriable, record_too_large",
            ["kind"],
            registry=r,
        )
        self.policy_errors = Counter(
            "concurrency_policy_errors_total", "Malformed policy records ignored", registry=r
        )
        self.policies = Gauge("concurrency_policies", "Policies known (default, plans, users)", registry=r)
        self.retries = Counter(
            "concurrency_retries_total", "Retries after transient failures", ["what"], registry=r
        )
        self.replies = Counter(
            "concurrency_replies_total",
            "Verdict copies for reply headers, by outcome: sent, failed, unknown_topic, "
            "unknown_partition, bad_header",
            ["outcome"],
            registry=r,
        )
        self.assigned = Gauge(
            "concurrency_assigned_partitions", "Partitions assigned to this instance", registry=r
        )
