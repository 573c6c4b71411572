"""The report: JSON, a rich table on stdout, and PNG charts (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bench.live_cost_table import table_lines


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def summary(report: dict, data: str, events: int) -> dict:
    """The figures a before/after comparison reads: one-process throughput and Redis time per event."""
    rows = {c["name"]: c for c in report["throughput"] if "events_per_s" in c}
    inproc = rows.get("processor", {})
    one = rows.get("processor x1 (process)", {})
    redis = report.get("redis", {})
    return {
        "data": data,
        "processor_reads_policies": report.get("policies", {}).get("processor_reads_policies"),
        "events": events,
        "processor_events_per_s": inproc.get("events_per_s"),
        "processor_ratio_to_ceiling": inproc.get("ratio_to_ceiling"),
        "processor_cpu_us_per_event": inproc.get("cpu_us_per_event"),
        "redis_usec_per_event": redis.get("redis_usec_per_event"),
        "redis_usec_per_input_event": redis.get("redis_usec_per_input_event"),
        "redis_value_bytes_per_user_key": (redis.get("state") or {}).get("value_bytes_per_user_key"),
        "redis_memory_usage_per_user_key": (redis.get("state") or {}).get("memory_usage_per_user_key"),
        "decisions_by_reason": report.get("decisions"),
        "one_process_events_per_s": one.get("events_per_s"),
        "one_process_redis_usec_per_event": one.get("redis_usec_per_event"),
        "ceiling_events_per_s": report.get("ceiling_events_per_s"),
        "note": "processor = in-process run (part processor); one_process = python -m processor "
        "(part scaling); Redis time = INFO commandstats evalsha usec / verdicts",
    }


def _fmt(x, nd=0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def print_tables(report: dict, console: Console | None = None) -> None:
    console = console or Console(width=200)
    m = report.get("machine", {})
    console.print(
        f"[bold]Benchmark[/] {report.get('mode')} | {m.get('nproc')} CPUs, {m.get('memory_total_mb')} MB, "
        f"Python {m.get('python')}, Kafka {report.get('services', {}).get('kafka_version')}, "
        f"Redis {report.get('services', {}).get('redis', {}).get('redis_version')} | "
        f"load {m.get('loadavg_at_start')}"
        f" -> {m.get('loadavg_at_end')}"
    )
    if ds := report.get("data"):
        console.print(
            f"data: {ds['events']:,} events, {ds['users']:,} users, {ds['partitions']} partitions, "
            f"types {ds['types']}, produced at {_fmt(ds.get('produce_events_per_s'))} ev/s"
        )
        if ds.get("plan_users"):
            console.print(
                f"plans: {ds['plan_users']:,} users with a plan, events per plan {ds.get('plan_events')}, "
                f"per deviceClass {ds.get('device_class_events')}; policies "
                f"{sorted((report.get('policies') or {}).get('records') or {})}, read by the processor: "
                f"{(report.get('policies') or {}).get('processor_reads_policies')}"
            )
    t = Table(title="Throughput (first to last LogAppendTime of each output topic)")
    for col in ("candidate", "records", "span s", "events/s", "ratio", "wall s", "wall ev/s", "note"):
        t.add_column(col, justify="right" if col not in ("candidate", "note") else "left")
    for c in report.get("throughput", []):
        if "error" in c:
            t.add_row(c["name"], "-", "-", "-", "-", "-", "-", f"[red]{c['error'][:60]}[/]")
            continue
        t.add_row(
            c["name"],
            _fmt(c["records"]),
            _fmt(c["span_s"], 2),
            _fmt(c["events_per_s"]),
            _fmt(c.get("ratio_to_ceiling"), 3),
            _fmt(c.get("wall_s"), 2),
            _fmt(c.get("wall_events_per_s")),
            c.get("note", ""),
        )
    console.print(t)
    if s := report.get("scaling"):
        console.print(
            f"scaling: two processes / one process = [bold]{_fmt(s.get('two_over_one'), 2)}[/]"
            f" (two / in-process: {_fmt(s.get('two_over_inprocess'), 2)})"
        )
    if r := report.get("redis"):
        console.print(
            f"Redis during the processor run: {r.get('redis_usec_per_event')} µs/event "
            f"(script time), {r.get('events_per_script_call')} "
            f"events per script call; scripts {r.get('scripts')}"
        )
    if (sm := report.get("summary")) and sm.get("processor_events_per_s") is not None:
        console.print(
            f"[bold]summary[/] ({sm.get('data')} data, processor reads policies: "
            f"{sm.get('processor_reads_policies')}): "
            f"processor {_fmt(sm.get('processor_events_per_s'))} ev/s, "
            f"Redis {sm.get('redis_usec_per_event')} µs/event"
            + (
                f"; one process {_fmt(sm.get('one_process_events_per_s'))} ev/s, "
                f"Redis {sm.get('one_process_redis_usec_per_event')} µs/event"
                if sm.get("one_process_events_per_s") is not None
                else ""
            )
        )
    if lat := report.get("latency"):
        t = Table(title="End-to-end latency (event handed to the producer -> verdict consumed)")
        for col in (
            "offered ev/s",
            "achieved",
            "verdicts",
            "missing",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "proc CPU %",
        ):
            t.add_column(col, justify="right")
        for row in lat.get("runs", []):
            if "error" in row:
                t.add_row(_fmt(row.get("rate")), "[red]error[/]", row["error"][:50], "", "", "", "", "", "")
                continue
            p = row["latency"]
            t.add_row(
                _fmt(row["rate"]),
                _fmt(row["achieved_rate"]),
                _fmt(p.get("count")),
                _fmt(row["missing"]),
                _fmt(p.get("p50_ms"), 1),
                _fmt(p.get("p95_ms"), 1),
                _fmt(p.get("p99_ms"), 1),
                _fmt(p.get("max_ms"), 1),
                _fmt(row.get("processor_cpu_percent"), 0),
            )
        console.print(t)
    if mem := report.get("memory"):
        if "error" in mem:
            console.print(f"[red]memory: {mem['error']}[/]")
        else:
            console.print(
                f"memory at {mem['rate']:,} ev/s for {mem['seconds']} s: RSS {mem['rss_mb_first']:.1f} -> "
                f"{mem['rss_mb_last']:.1f} MB (max {mem['rss_mb_max']:.1f}); "
                f"slope {mem['slope_mb_per_min']:+.3f} "
                f"MB/min overall, {mem['slope_mb_per_min_second_half']:+.3f} MB/min over the second half"
            )
    if lc := report.get("live_cost"):
        console.print("[bold]Live-rate cost[/] (one processor process; bench/live_cost.py)")
        lines = table_lines(lc["rows"], lc.get("with_variant", False))
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if prof := report.get("profile"):
        if "error" in prof:
            console.print(f"[red]profile: {prof['error']}[/]")
        else:
            t = Table(
                title=f"Processor profile (cProfile, own time, {prof['events']:,} events, "
                f"{prof['events_per_s_under_profiler']:,.0f} ev/s under the profiler; "
                f"{prof.get('idle_in_epoll_s')} s of {prof.get('profiled_total_s')} s idle in epoll)"
            )
            for col in ("function", "ncalls", "own s", "own µs/event", "calls/event"):
                t.add_column(col, justify="left" if col == "function" else "right")
            for row in prof["top"]:
                t.add_row(
                    row["function"][-70:],
                    _fmt(row["ncalls"]),
                    _fmt(row["tottime_s"], 3),
                    _fmt(row["own_us_per_event"], 2),
                    _fmt(row["calls_per_event"], 3),
                )
            console.print(t)
    for err in report.get("errors", []):
        console.print(f"[red]error in {err['part']}: {err['error']}[/]")


def _throughput_ax(ax, report: dict) -> bool:
    rows = [c for c in report.get("throughput", []) if "events_per_s" in c]
    if not rows:
        return False
    names = [c["name"] for c in rows]
    values = [c["events_per_s"] for c in rows]
    colors = ["#888888" if c["name"].startswith("ceiling") else "#1f77b4" for c in rows]
    bars = ax.bar(range(len(rows)), values, color=colors)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("events/s")
    ax.set_title("Throughput (same data, same broker)")
    for bar, c in zip(bars, rows, strict=True):
        label = f"{c['events_per_s']:,.0f}"
        if c.get("ratio_to_ceiling") is not None and not c["name"].startswith("ceiling"):
            label += f"\n{c['ratio_to_ceiling']:.2f}x ceiling"
        ax.annotate(
            label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
        )
    ax.margins(y=0.2)
    return True


def _latency_ax(ax, report: dict) -> bool:
    runs = [r for r in report.get("latency", {}).get("runs", []) if r.get("latency", {}).get("count")]
    if not runs:
        return False
    width = 0.25
    for i, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        xs = [j + (i - 1) * width for j in range(len(runs))]
        bars = ax.bar(xs, [r["latency"][key] for r in runs], width, label=key.removesuffix("_ms"))
        for bar, r in zip(bars, runs, strict=True):
            ax.annotate(
                f"{r['latency'][key]:.0f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=6,
            )
    ax.set_xticks(range(len(runs)), [f"{r['rate']:,} ev/s" for r in runs])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title("End-to-end latency per offered rate")
    ax.legend(fontsize=7)
    return True


def _memory_ax(ax, report: dict) -> bool:
    mem = report.get("memory") or {}
    series = mem.get("series")
    if not series:
        return False
    ax.plot([s[0] for s in series], [s[1] for s in series], lw=1)
    ax.set_xlabel("s")
    ax.set_ylabel("RSS MB")
    ax.set_title(
        f"Processor RSS at {mem['rate']:,} ev/s (2nd half {mem['slope_mb_per_min_second_half']:+.2f} MB/min)",
        fontsize=10,
    )
    return True


def write_charts(report: dict, out_dir: Path, main_png: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = [p for p in (_throughput_ax, _latency_ax, _memory_ax)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    used = [p(ax, report) for p, ax in zip(panels, axes, strict=True)]
    for ok, ax in zip(used, axes, strict=True):
        if not ok:
            ax.set_axis_off()
    m = report.get("machine", {})
    fig.suptitle(
        f"stream concurrency benchmark ({report.get('mode')}; {m.get('nproc')} CPUs shared by broker, "
        f"Redis, processor and load)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(main_png, dpi=120)
    plt.close(fig)
    written.append(str(main_png))
    for name, panel in (("throughput", _throughput_ax), ("latency", _latency_ax), ("memory", _memory_ax)):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        if panel(ax, report):
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=120)
            written.append(str(path))
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report [report.json]`: print the tables and redraw the charts of a report."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "out" / "report.json"
    report = orjson.loads(path.read_bytes())
    report["charts"] = write_charts(report, path.parent, path.with_suffix(".png"))
    print_tables(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
