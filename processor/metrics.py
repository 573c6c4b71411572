"""Prometheus metrics of the processor (served on /metrics)."""

from __future__ import annotations

import contextlib

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
        self.key_mismatch = Counter(
            "concurrency_key_mismatch_total",
            "Records in a partition their key does not hash to under EVENT_PARTITIONER (dead-lettered "
            "as key_mismatch)",
            registry=r,
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
        self.commit_seconds = Histogram(
            "concurrency_commit_seconds",
            "One offset commit's round trip (at most one in flight, at most one per COMMIT_INTERVAL_MS)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.commit_failures = Counter(
            "concurrency_commit_failures_total",
            "Offset commits that did not land, by kind: retriable (Kafka away: retried with the next "
            "commit) or rebalance (refused: the partition's next owner replays)",
            ["kind"],
            registry=r,
        )
        self.seconds_since_commit = Gauge(
            "concurrency_seconds_since_commit",
            "Per owned partition: seconds since its last successful commit while it has records "
            "fetched and not yet committed (0 when everything fetched is committed)",
            ["partition"],
            registry=r,
        )
        self.publish_failing = Gauge(
            "concurrency_publish_failing",
            "1 while a batch's verdicts cannot be published and are retried (e.g. NOT_ENOUGH_REPLICAS "
            "below min.insync.replicas): its partitions wait, nothing is committed",
            registry=r,
        )
        self.committed_lag = Gauge(
            "concurrency_committed_lag",
            "Offsets decided and published but not yet committed, per owned partition",
            ["partition"],
            registry=r,
        )
        self.lag = Gauge(
            "concurrency_consumer_lag",
            "Records between the committed offset and the end of an owned partition, refreshed on a "
            "timer (grows while nothing is decided)",
            ["partition"],
            registry=r,
        )
        # The one gauge of halted partitions, whatever the reason (its name predates the other
        # reasons; alerts and dashboards read it by partition).
        self.state_lost = Gauge(
            "concurrency_state_lost",
            "1 while a partition is halted (paused, not decided), by reason: state_lost, "
            "events_topic_recreated, claim_failed",
            ["partition", "reason"],
            registry=r,
        )
        self._halt_reasons: dict[str, str] = {}
        self.state_repairs = Counter(
            "concurrency_state_repairs_total",
            "Times a partition's Redis state was found behind and replayed from the log",
            registry=r,
        )
        self.state_repair_records = Counter(
            "concurrency_state_repair_records_total",
            "Records decided again to repair lost Redis state",
            registry=r,
        )
        self.state_repairing = Gauge(
            "concurrency_state_repairing",
            "1 while a partition replays its log to repair lost Redis state",
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
            "unknown_partition, refused_topic, bad_header",
            ["outcome"],
            registry=r,
        )
        self.assigned = Gauge(
            "concurrency_assigned_partitions", "Partitions assigned to this instance", registry=r
        )
        self.expired = Counter(
            "concurrency_expired_total", "Leases expired by stream time (expire verdicts)", registry=r
        )
        # The session ledger's counts, kept by the script in each partition's hash: active
        # until expired by stream time or ended by a verdict. Set per owned partition only.
        self.active_leases = Gauge(
            "concurrency_active_leases", "Active leases of an owned partition", ["partition"], registry=r
        )
        self.active_leases_by_class = Gauge(
            "concurrency_active_leases_by_class",
            "Active leases of an owned partition by device class ('' = none)",
            ["partition", "deviceClass"],
            registry=r,
        )
        self._lease_classes: dict[str, set[str]] = {}

    def set_active_leases(self, partition: int, by_class: dict[str, int]) -> None:
        """Show a partition's ledger counts ({deviceClass: active leases}, '' = none)."""
        p = str(partition)
        self.active_leases.labels(p).set(sum(by_class.values()))
        known = self._lease_classes.setdefault(p, set())
        for device_class, n in by_class.items():
            self.active_leases_by_class.labels(p, device_class).set(n)
            known.add(device_class)

    def show_halt(self, partition: int, reason: str | None) -> None:
        """One series per halted partition, labelled with its reason; none once it is not halted."""
        p = str(partition)
        shown = self._halt_reasons.pop(p, None)
        if shown is not None and shown != reason:
            self.state_lost.remove(p, shown)
        if reason is not None:
            self.state_lost.labels(p, reason).set(1)
            self._halt_reasons[p] = reason

    def forget_partition(self, partition: int) -> None:
        """A revoked partition's counts, lag and halt are its new owner's to show."""
        p = str(partition)
        self.show_halt(partition, None)
        with contextlib.suppress(KeyError):  # never set: nothing was consumed here
            self.lag.remove(p)
        for device_class in self._lease_classes.pop(p, ()):
            self.active_leases_by_class.remove(p, device_class)
        with contextlib.suppress(KeyError):  # never set: nothing was decided or read here
            self.active_leases.remove(p)
