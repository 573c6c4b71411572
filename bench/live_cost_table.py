"""The live_cost part's arithmetic and its table: pure functions, no I/O (unit-tested).

A row of the part (bench/live_cost.py) is a dict; `cost_figures` turns the CPU seconds and
events of its window into the figures of issue 20's table, `committed_lag` reads the group's
offsets against the log ends, and `table_lines` prints the rows as a Markdown table (the same
text goes to stdout and into docs).
"""

from __future__ import annotations

from collections.abc import Mapping


def committed_lag(ends: Mapping[int, int], committed: Mapping[int, int | None]) -> int:
    """Log end minus the group's committed offset, summed over partitions (read when every
    event has its verdict, the offsets published but not committed); a partition without a
    commit counts from 0 (the topics are fresh)."""
    total = 0
    for partition, end in ends.items():
        done = committed.get(partition)
        total += max(0, end - (done if done is not None and done >= 0 else 0))
    return total


def decided_in_window(sent: Mapping[str, float], received: Mapping[str, float], t0: float, t1: float) -> int:
    """Events (of `sent`) whose first verdict was consumed between t0 and t1: the events the
    processor got through in that window, also when it falls behind the offered rate."""
    return sum(1 for eid, t in received.items() if t0 <= t <= t1 and eid in sent)


def parse_env_overrides(text: str) -> dict[str, str]:
    """'COMMIT_INTERVAL_MS=200,GATHER_MS=20' -> {'COMMIT_INTERVAL_MS': '200', 'GATHER_MS': '20'}."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not name.replace("_", "").isalnum() or not name.isupper():
            raise ValueError(f"not NAME=value: {item!r} (a processor setting, e.g. COMMIT_INTERVAL_MS=200)")
        out[name] = value.strip()
    return out


def cost_figures(processor_cpu_s: float, redis_cpu_s: float, seconds: float, events: int) -> dict:
    """CPU per event (µs) and as a share of one core, for the processor and for Redis."""
    per = (lambda cpu: round(cpu / events * 1e6, 1)) if events > 0 else (lambda cpu: None)
    share = (lambda cpu: round(cpu / seconds * 100, 2)) if seconds > 0 else (lambda cpu: None)
    return {
        "window_s": round(seconds, 2),
        "events": events,
        "processor_cpu_s": round(processor_cpu_s, 3),
        "redis_cpu_s": round(redis_cpu_s, 3),
        "processor_us_per_event": per(processor_cpu_s),
        "processor_core_percent": share(processor_cpu_s),
        "redis_us_per_event": per(redis_cpu_s),
        "redis_core_percent": share(redis_cpu_s),
    }


NONE = "-"  # an empty cell


def _n(x, nd: int = 0) -> str:
    if x is None:
        return NONE
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _rate_label(row: Mapping) -> str:
    if row["kind"] == "idle":
        return "0 (idle)"
    if row["kind"] == "fast":
        return f"as fast as it goes ({_n(row.get('events_per_s'))}/s)"
    achieved = row.get("achieved_rate")
    label = f"{row['rate']:,}"
    if achieved is not None and abs(achieved - row["rate"]) > 0.05 * row["rate"]:
        label += f" (achieved {achieved:,.0f})"
    return label


def _processor_cell(row: Mapping) -> str:
    if row["kind"] == "idle":
        return f"{_n(row.get('processor_core_percent'), 2)} % of a core"
    cell = f"{_n(row.get('processor_us_per_event'), 1)} µs"
    if row.get("processor_core_percent") is not None:
        cell += f" ({_n(row['processor_core_percent'], 1)} % of a core)"
    return cell


def _redis_cell(row: Mapping) -> str:
    if row["kind"] == "idle":
        return f"{_n(row.get('redis_core_percent'), 2)} % of a core"
    return f"{_n(row.get('redis_us_per_event'), 1)} µs"


def _latency_cell(row: Mapping) -> str:
    lat = row.get("latency") or {}
    if not lat.get("count"):
        return NONE
    return f"{_n(lat.get('p50_ms'), 1)} / {_n(lat.get('p99_ms'), 1)}"


def _lag_cell(row: Mapping) -> str:
    if row.get("lag_at_last_verdict") is None:
        return NONE
    cell = _n(row["lag_at_last_verdict"])
    if row.get("lag_2s_later") is not None:
        cell += f" ({_n(row['lag_2s_later'])} 2 s later)"
    return cell


def _sigterm_cell(row: Mapping) -> str:
    s = row.get("sigterm_to_exit_s")
    if s is None:
        return NONE if row.get("sigterm_timeout_s") is None else f"> {row['sigterm_timeout_s']:g} s (killed)"
    return f"{s:.2f} s"


def _load_cell(row: Mapping) -> str:
    a, b = row.get("loadavg_before"), row.get("loadavg_after")
    cell = NONE if a is None else f"{a:.2f} -> {_n(b, 2)}"
    if row.get("machine_busy_percent") is not None:
        cell += f", {row['machine_busy_percent']:.0f} % busy"
    return cell


COLUMNS = (
    "events/s",
    "processor CPU per event",
    "Redis CPU per event",
    "p50 / p99 verdict latency ms",
    "committed offsets behind the end when the last verdict is out",
    "SIGTERM to exit",
    "load avg (1 min) start -> end, machine CPU busy in the window",
)


def table_lines(rows: list[Mapping], with_variant: bool = False) -> list[str]:
    """The rows as a Markdown table; `with_variant` adds a first column with the row's settings and round."""
    cols = (("settings", "round") if with_variant else ()) + COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in rows:
        head = [row.get("variant") or "defaults", str(row.get("round", 1))] if with_variant else []
        if "error" in row:
            cells = [*head, _rate_label(row), f"error: {row['error'][:80]}", "", "", "", "", ""]
        else:
            cells = [
                *head,
                _rate_label(row),
                _processor_cell(row),
                _redis_cell(row),
                _latency_cell(row),
                _lag_cell(row),
                _sigterm_cell(row),
                _load_cell(row),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def variant_label(env: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in env.items()) or "defaults"
