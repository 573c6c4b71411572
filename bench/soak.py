"""`make soak`: one processor process under steady load for a long time, to see slow growth.

A paced producer offers `--rate` events/s (a ring of playing sessions over `--users` users:
start, heartbeats, stop or a lapse, as the benchmark's live runs) for `--minutes`; every
`--interval` seconds it records the processor's RSS, Redis used memory, the consumer lag and
the events decided so far. It writes bench/out/soak/soak.json, soak.csv and soak.png, and says
whether RSS stayed flat (within `--flat-mb` after the first `--warmup-minutes`).

RSS follows the largest batch the processor has had to hold: when it falls behind (a busy
machine, a Redis fsync) it catches up with batches of up to BATCH_MAX_RECORDS events, and the
allocator keeps that high-water mark. `--stall-at S --stall-seconds N` stops the processor
(SIGSTOP) for N seconds at S seconds, inside the warm-up, so it reaches that bound early: after
it, no backlog can make RSS grow, and the rest of the run shows whether anything else does.

`--tracemalloc` runs the processor under tracemalloc (bench/soak_trace.py) and writes, each
minute, the allocation sites that grew most since the end of the warm-up: the tool that
finds what grows, when something does.

    python -m bench.soak                       # 30 min, 5,000 ev/s, 50,000 users
    python -m bench.soak --minutes 6 --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

from bench.access import bench_kafka, bench_redis
from bench.kafka_util import create_topics
from bench.live import LiveSource, paced_produce
from bench.procs import Names, processor_process
from bench.services import machine_info, start_bench_services
from compose.launcher import REPO_ROOT
from producer_sim.processor_proc import ProcessorProcess

PARTITIONS = 12


class _Forget(dict):
    """paced_produce records each eventId's send time; a soak sends millions and needs none."""

    def __setitem__(self, key, value) -> None:
        pass


def parse_metrics(text: str) -> dict[str, float]:
    out = {"lag": 0.0, "decided": 0.0}
    for line in text.splitlines():
        if line.startswith("concurrency_consumer_lag{"):
            out["lag"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("concurrency_events_total{"):
            out["decided"] += float(line.rsplit(" ", 1)[1])
    return out


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.samples: list[dict] = []

    def processor(self, bootstrap: str, redis_url: str, topic: str, tag: str) -> ProcessorProcess:
        names = Names(f"soak.{tag}.verdicts", f"soak.{tag}.dlq", f"soak.{tag}.group", f"soak.{tag}.policies")
        log = self.out / "processor.log"
        if not self.args.tracemalloc:
            return processor_process(bootstrap, redis_url, topic, names, log).start()
        trace = {
            "SOAK_TRACE_FILE": str(self.out / "tracemalloc.txt"),
            "SOAK_TRACE_BASELINE_S": str(self.args.warmup_minutes * 60),
        }
        args = ("-X", "tracemalloc=8", "-m", "bench.soak_trace")
        return processor_process(bootstrap, redis_url, topic, names, log, python_args=args, **trace).start()

    async def stall(self, proc: ProcessorProcess) -> None:
        """SIGSTOP the processor for a while: a backlog it then works off with full-size batches."""
        await asyncio.sleep(self.args.stall_at)
        if not self.args.stall_seconds:
            return
        print(f"stalling the processor for {self.args.stall_seconds:g} s (SIGSTOP)", flush=True)
        proc.pause()
        try:
            await asyncio.sleep(self.args.stall_seconds)
        finally:
            proc.resume()

    async def sample(self, proc: ProcessorProcess, redis: Redis, t0: float) -> None:
        while True:
            await asyncio.sleep(self.args.interval)
            text = await proc.metrics()
            # None e.g. while it is stalled on purpose
            metrics = parse_metrics(text) if text is not None else {"lag": None, "decided": None}
            info = await redis.info("memory")
            row = {
                "t_s": round(time.monotonic() - t0, 1),
                "rss_mb": round(proc.rss_mb() or 0, 2),
                "redis_used_mb": round(info["used_memory"] / 2**20, 2),
                "redis_keys": await redis.dbsize(),
                "lag": metrics["lag"],
                "decided": metrics["decided"],
                "processor_cpu_s": round(proc.cpu_seconds() or 0, 1),
            }
            self.samples.append(row)
            print(
                f"{row['t_s']:>7.0f} s  RSS {row['rss_mb']:7.1f} MB  redis {row['redis_used_mb']:7.1f} MB"
                f"  keys {row['redis_keys']:>7}  lag {row['lag']}  decided {row['decided']}",
                flush=True,
            )
            if not proc.running:
                raise RuntimeError(f"the processor exited; see {proc.log_path}")

    async def run(self) -> dict:
        a = self.args
        services = start_bench_services(a.bootstrap, a.redis_url)
        tag = uuid.uuid4().hex[:8]
        topic = f"soak.{tag}.events"
        proc = None
        redis = bench_redis(services.redis_url)
        try:
            await create_topics(services.bootstrap, [topic], PARTITIONS)
            proc = self.processor(services.bootstrap, services.redis_url, topic, tag)
            await proc.wait_healthy()
            producer = bench_kafka(services.bootstrap).producer(
                acks="all", linger_ms=0, max_batch_size=256 * 1024
            )
            await producer.start()
            t0 = time.monotonic()
            sampler = asyncio.ensure_future(self.sample(proc, redis, t0))
            staller = asyncio.ensure_future(self.stall(proc))
            source = LiveSource(tag, users=a.users, ring=a.ring)
            produce = asyncio.ensure_future(
                paced_produce(producer, topic, PARTITIONS, source, a.rate, a.minutes * 60, _Forget())
            )
            try:
                # A sampler that fails (or a processor that exits) ends the run at once.
                await asyncio.wait({produce, sampler}, return_when=asyncio.FIRST_COMPLETED)
                if sampler.done():
                    produce.cancel()
                    sampler.result()
                stats = await produce
            finally:
                for task in (sampler, staller, produce):
                    task.cancel()
                await producer.stop()
        finally:
            if proc is not None:
                await proc.astop(30)
            await redis.aclose()
            services.stop()
        return self.report(stats)

    def report(self, stats: dict) -> dict:
        a = self.args
        after = [s for s in self.samples if s["t_s"] >= a.warmup_minutes * 60]
        rss = [s["rss_mb"] for s in after] or [0.0]
        spread = round(max(rss) - min(rss), 2)
        report = {
            "args": {k: v for k, v in vars(a).items() if k not in ("bootstrap", "redis_url")},
            "machine": machine_info(),
            "produce": stats,
            "rss_mb_at_warmup_end": rss[0],
            "rss_mb_max_after_warmup": max(rss),
            "rss_mb_min_after_warmup": min(rss),
            "rss_spread_after_warmup_mb": spread,
            "rss_slope_mb_per_min_after_warmup": round(
                _slope([(s["t_s"], s["rss_mb"]) for s in after]) * 60, 4
            ),
            "flat": spread <= a.flat_mb,
            "lag_max": max((s["lag"] or 0 for s in self.samples), default=None),
            "samples": self.samples,
        }
        (self.out / "soak.json").write_text(json.dumps(report, indent=2))
        with open(self.out / "soak.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.samples[0]) if self.samples else ["t_s"])
            writer.writeheader()
            writer.writerows(self.samples)
        plot(self.samples, a, self.out / "soak.png")
        return report


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second); 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def plot(samples: list[dict], a: argparse.Namespace, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[plot]'): no chart")
        return
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for ax, key, label in (
        (axes[0], "rss_mb", "processor RSS (MB)"),
        (axes[1], "redis_used_mb", "Redis used memory (MB)"),
        (axes[2], "lag", "consumer lag (records)"),
    ):
        ax.plot(minutes, [s[key] or 0 for s in samples])
        ax.set_ylabel(label)
        ax.axvline(a.warmup_minutes, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"soak: {a.rate:,} events/s, {a.users:,} users, {a.minutes:g} min")
    axes[2].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=int, default=5000, help="offered events/s (default 5000)")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--ring", type=int, default=3000, help="sessions playing at once in the source")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup-minutes", type=float, default=5.0)
    p.add_argument("--flat-mb", type=float, default=5.0, help="allowed RSS spread after the warm-up")
    p.add_argument("--stall-at", type=float, default=60.0, help="seconds in: stop the processor (SIGSTOP)")
    p.add_argument("--stall-seconds", type=float, default=8.0, help="for this long (0: never)")
    p.add_argument("--tracemalloc", action="store_true", help="find what grows (slows the processor)")
    p.add_argument("--bootstrap", help="an existing Kafka (default: start one)")
    p.add_argument("--redis-url", help="an existing Redis (default: start one)")
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "out" / "soak"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(Soak(args).run())
    print(
        f"RSS after the warm-up: {report['rss_mb_min_after_warmup']} - {report['rss_mb_max_after_warmup']} MB"
        f" (spread {report['rss_spread_after_warmup_mb']} MB, slope "
        f"{report['rss_slope_mb_per_min_after_warmup']} MB/min): {'flat' if report['flat'] else 'NOT flat'};"
        f" max lag {report['lag_max']}; achieved {report['produce']['achieved_rate']:,} ev/s"
    )
    print(f"report: {args.out}/soak.json, chart: {args.out}/soak.png")
    return 0 if report["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
