"""The live_cost benchmark part's pure helpers: lag arithmetic, figures, table, the 2:7:1 source."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from bench.live import LiveSource
from bench.live_cost_table import (
    committed_lag,
    cost_figures,
    decided_in_window,
    parse_env_overrides,
    table_lines,
    variant_label,
)


def test_committed_lag_sums_end_minus_committed_per_partition() -> None:
    assert committed_lag({0: 100, 1: 50, 2: 7}, {0: 90, 1: 50, 2: 0}) == 10 + 0 + 7


def test_committed_lag_counts_a_partition_without_commit_from_zero() -> None:
    # list_consumer_group_offsets gives -1 (or nothing) for a partition never committed
    assert committed_lag({0: 100, 1: 40, 2: 5}, {0: -1, 1: None}) == 145


def test_committed_lag_never_negative_for_a_partition() -> None:
    # an end read a moment before a commit that already covers a later offset
    assert committed_lag({0: 10, 1: 10}, {0: 12, 1: 4}) == 6


def test_decided_in_window_counts_first_verdicts_of_sent_events_inside_it() -> None:
    sent = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    received = {"a": 1.5, "b": 2.5, "c": 9.0, "x": 2.0}  # c after the window; x not an event of ours
    assert decided_in_window(sent, received, 2.0, 5.0) == 1  # b
    assert decided_in_window(sent, received, 0.0, 10.0) == 3


def test_parse_env_overrides() -> None:
    assert parse_env_overrides("COMMIT_INTERVAL_MS=200, GATHER_MS=20,") == {
        "COMMIT_INTERVAL_MS": "200",
        "GATHER_MS": "20",
    }
    assert parse_env_overrides("") == {}
    assert variant_label({"A_B": "1", "C": "x"}) == "A_B=1,C=x"
    assert variant_label({}) == "defaults"


@pytest.mark.parametrize("bad", ["COMMIT_INTERVAL_MS", "=3", "commit_interval_ms=3", "A-B=1"])
def test_parse_env_overrides_refuses_what_is_not_a_setting(bad: str) -> None:
    with pytest.raises(ValueError, match="NAME=value"):
        parse_env_overrides(bad)


def test_cost_figures_per_event_and_share_of_a_core() -> None:
    f = cost_figures(processor_cpu_s=2.0, redis_cpu_s=0.5, seconds=10.0, events=20_000)
    assert f["processor_us_per_event"] == 100.0
    assert f["redis_us_per_event"] == 25.0
    assert f["processor_core_percent"] == 20.0
    assert f["redis_core_percent"] == 5.0
    idle = cost_figures(0.1, 0.0, 10.0, 0)
    assert idle["processor_us_per_event"] is None and idle["processor_core_percent"] == 1.0


def test_table_lines_shapes_each_kind_of_row() -> None:
    rows = [
        {"kind": "idle", "rate": 0, "processor_core_percent": 7.8, "redis_core_percent": 0.2,
         "sigterm_to_exit_s": 0.15, "loadavg_before": 3.1, "loadavg_after": 3.3},
        {"kind": "rate", "rate": 500, "achieved_rate": 498.0, "processor_us_per_event": 1121.0,
         "processor_core_percent": 56.0, "redis_us_per_event": 185.0,
         "latency": {"count": 10, "p50_ms": 12.34, "p99_ms": 80.0},
         "lag_at_last_verdict": 5004, "lag_2s_later": 4609, "sigterm_to_exit_s": 24.6},
        {"kind": "rate", "rate": 5000, "achieved_rate": 3000.0, "sigterm_to_exit_s": None,
         "sigterm_timeout_s": 60.0, "lag_at_last_verdict": 0, "lag_2s_later": 0},
        {"kind": "fast", "rate": 0, "events_per_s": 18000, "processor_us_per_event": 29.0},
        {"kind": "rate", "rate": 2000, "error": "RuntimeError('boom')"},
    ]  # fmt: skip
    lines = table_lines(rows)
    assert lines[0].startswith("| events/s | processor CPU per event |")
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    idle, r500, r5000, fast, err = lines[2:]
    assert idle == "| 0 (idle) | 7.80 % of a core | 0.20 % of a core | - | - | 0.15 s | 3.10 -> 3.30 |"
    assert "| 500 | 1,121.0 µs (56.0 % of a core) | 185.0 µs | 12.3 / 80.0 |" in r500
    assert "| 5,004 (4,609 2 s later) |" in r500
    assert "24.60 s" in r500
    assert r5000.startswith("| 5,000 (achieved 3,000) |") and "> 60 s (killed)" in r5000
    assert fast.startswith("| as fast as it goes (18,000/s) | 29.0 µs |")
    assert "error: RuntimeError('boom')" in err


def test_table_lines_with_variant_columns() -> None:
    row = {"kind": "idle", "rate": 0, "variant": "GATHER_MS=20", "round": 2, "processor_core_percent": 1.0,
           "loadavg_before": 1.0, "loadavg_after": 2.0, "machine_busy_percent": 64.4}  # fmt: skip
    head, _, line = table_lines([row], with_variant=True)
    assert head.startswith("| settings | round | events/s |")
    assert line.startswith("| GATHER_MS=20 | 2 | 0 (idle) |")
    assert line.endswith("| 1.00 -> 2.00, 64 % busy |")


def test_live_source_mix_gives_start_heartbeat_stop_2_7_1() -> None:
    source = LiveSource.mix("t", users=50_000, start=2, heartbeat=7, stop=1)
    kinds = Counter(orjson.loads(source.next()[2])["type"] for _ in range(300_000))
    total = sum(kinds.values())
    # the sessions still playing at the end have sent their start but not their end: a few % more starts
    assert kinds["start"] / total == pytest.approx(0.2, abs=0.012)
    assert kinds["heartbeat"] / total == pytest.approx(0.7, abs=0.012)
    assert kinds["stop"] / total == pytest.approx(0.1, abs=0.012)


def test_live_source_mix_refuses_an_impossible_mix() -> None:
    with pytest.raises(ValueError, match="no session shape"):
        LiveSource.mix("t", users=10, start=1, heartbeat=7, stop=2)  # more stops than starts
