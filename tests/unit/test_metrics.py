"""The processor's metrics of a partition end when it is revoked (its new owner shows them)."""

from __future__ import annotations

import pytest

from processor.metrics import Metrics

pytestmark = pytest.mark.unit


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_revoked_partition_shows_neither_its_lag_nor_its_lease_counts():
    m = Metrics()
    m.lag.labels("3").set(120)
    m.set_active_leases(3, {"tv": 2, "": 1})
    m.lag.labels("4").set(7)
    m.forget_partition(3)
    assert sample(m, "concurrency_consumer_lag", partition="3") is None
    assert sample(m, "concurrency_active_leases", partition="3") is None
    assert sample(m, "concurrency_active_leases_by_class", partition="3", deviceClass="tv") is None
    assert sample(m, "concurrency_consumer_lag", partition="4") == 7  # the others stay


def test_forgetting_a_partition_never_seen_is_harmless():
    m = Metrics()
    m.forget_partition(9)
    assert sample(m, "concurrency_consumer_lag", partition="9") is None
