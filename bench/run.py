"""`make bench` / `python -m bench.run`: the benchmark of DESIGN.md, "Performance: how it is measured".

Parts (`--only` picks some): ceiling (strongest pass-through), processor (in-process, tokens on,
with Redis INFO commandstats), scaling (one vs two `python -m processor` processes in one
group), profile (cProfile of an in-process run), latency (fixed offered rates), gateway (starts
over HTTP, straight on Kafka and on the bare ASGI floor at fixed rates), memory (RSS of a
processor process at a fixed rate; `make soak` is the long run), live_cost (a processor
process's CPU per event, verdict latency, committed-offset lag and SIGTERM-to-exit time at idle,
fixed rates and as fast as it goes: issue 20; `--processor-env` compares settings). Writes
bench/out/report.json and PNG charts.
The parts' code: bench/throughput_parts.py (ceiling, processor, scaling, profile),
bench/live_parts.py (latency, gateway, memory) and bench/live_cost.py (live_cost); this module
runs them in order and writes the report.

`--plans`: the same throughput data set (same seed, same events), but half of the users carry
`plan` and `deviceClass`, and the plan policies (bench.data.PLAN_POLICIES) are written to the
run's policies topic before any processor starts. A processor without policies (before
issue 13) reads the same bytes and ignores the two fields: that run is the "before" figure.
The report's `summary` holds the processor's events/s and Redis script time per event.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.kafka_util import LOG_APPEND_TIME, create_topics, delete_topics  # noqa: E402
from bench.live_cost import LiveCostPart  # noqa: E402
from bench.live_cost_table import parse_env_overrides  # noqa: E402
from bench.live_parts import PARTITIONS, LiveParts  # noqa: E402
from bench.procs import Names  # noqa: E402
from bench.report import print_tables, summary, write_charts, write_json  # noqa: E402
from bench.services import kafka_label, machine_info, redis_info, start_bench_services  # noqa: E402
from bench.throughput_parts import ThroughputParts  # noqa: E402

PARTS = ("ceiling", "processor", "scaling", "profile", "latency", "gateway", "memory", "live_cost")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench(ThroughputParts, LiveParts, LiveCostPart):
    def __init__(self, args: argparse.Namespace, bootstrap: str, redis_url: str) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.run_id = uuid.uuid4().hex[:6]
        self.events_topic = f"bench.{self.run_id}.events"
        # One policies topic per run (empty without --plans), never the shared default one.
        self.policies_topic = f"bench.{self.run_id}.policies"
        self.created_topics: list[str] = []
        self.ends: dict[int, int] = {}
        self.events = 0
        self.report: dict = {"throughput": [], "errors": []}
        self.out_dir = Path(args.out).parent

    def names(self, label: str) -> Names:
        base = f"bench.{self.run_id}.{label}"
        self.created_topics += [f"{base}.verdicts", f"{base}.dlq"]
        return Names(f"{base}.verdicts", f"{base}.dlq", f"{base}.group", self.policies_topic)

    async def output_topic(self, name: str) -> None:
        await create_topics(self.bootstrap, [name], PARTITIONS, LOG_APPEND_TIME)

    # -- running the parts ----------------------------------------------------------------
    async def part(self, name: str, coro) -> None:
        log(f"--- {name} (load average {os.getloadavg()[0]:.2f})")
        self.report.setdefault("loadavg_per_part", {})[name] = {"before": round(os.getloadavg()[0], 2)}
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - a failed part is reported, the rest still runs
            traceback.print_exc()
            self.report["errors"].append({"part": name, "error": repr(exc)})
            if name.startswith(("ceiling", "processor", "scaling", "profile")):
                self.report["throughput"].append({"name": name, "error": repr(exc)})
        self.report["loadavg_per_part"][name]["after"] = round(os.getloadavg()[0], 2)

    async def run(self) -> dict:
        parts = self.args.only
        if set(parts) & {"ceiling", "processor", "scaling", "profile"}:
            await self.prepare_data()
        if "ceiling" in parts:
            await self.part("ceiling", self.ceiling("ceiling"))
        if "processor" in parts:
            await self.part("processor", self.processor_inprocess())
        if "scaling" in parts:
            await self.part("scaling", self.scaling())
        if "ceiling" in parts and len(parts) > 1:
            await self.part("ceiling (again)", self.ceiling("ceiling-again"))
        ceilings = [
            c["events_per_s"]
            for c in self.report["throughput"]
            if c["name"].startswith("ceiling") and "events_per_s" in c
        ]
        if ceilings:
            best = max(ceilings)
            self.report["ceiling_events_per_s"] = best
            for c in self.report["throughput"]:
                if "events_per_s" in c:
                    c["ratio_to_ceiling"] = round(c["events_per_s"] / best, 4)
        if "profile" in parts:
            await self.part("profile", self.processor_inprocess(profile=True))
        if "latency" in parts:
            await self.part("latency", self.latency())
        if "gateway" in parts:
            await self.part("gateway", self.gateway())
        if "memory" in parts:
            await self.part("memory", self.memory())
        if "live_cost" in parts:
            await self.part("live_cost", self.live_cost())
        self.report["summary"] = summary(self.report, "plans" if self.args.plans else "plain", self.events)
        return self.report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small and short: 50k events, 5k users, 5 s rates, 30 s memory"
    )
    p.add_argument("--events", type=int, help="events in the throughput data set (default 500000)")
    p.add_argument(
        "--plans",
        action="store_true",
        help="same throughput data, but half of the users carry plan and deviceClass, and the plan "
        "policies are written to the run's policies topic first",
    )
    p.add_argument("--users", type=int, help="users in the data set (default 50000)")
    p.add_argument("--latency-seconds", type=float, help="seconds per offered rate (default 15)")
    p.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 5000, 20000],
        help="offered rates for latency, comma separated (default 1000,5000,20000)",
    )
    p.add_argument(
        "--gateway-rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[300, 500, 1000],
        help="offered starts/s of the gateway part, comma separated (default 300,500,1000)",
    )
    p.add_argument(
        "--gateway-profile",
        action="store_true",
        help="after the gateway part's runs, one more run of each server (floor, gateway, baseline) at each "
        "rate under py-spy (raw stacks in gateway-profile/ beside the report)",
    )
    p.add_argument(
        "--gateway-baseline",
        type=Path,
        default=None,
        help="a checkout of other code (e.g. `git archive main | tar -x -C DIR`) whose gateway is driven "
        "right before this one at each rate, in the same run (before/after)",
    )
    p.add_argument("--memory-seconds", type=float, help="length of the memory run (default 300)")
    p.add_argument(
        "--memory-rate", type=int, default=5000, help="offered rate of the memory run (default 5000)"
    )
    p.add_argument(
        "--live-cost-seconds", type=float, help="live_cost: seconds per fixed rate (default 15; --quick 5)"
    )
    p.add_argument(
        "--live-cost-rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[500, 2000, 5000],
        help="live_cost: fixed rates, comma separated (default 500,2000,5000)",
    )
    p.add_argument(
        "--live-cost-idle-seconds", type=float, default=10.0, help="live_cost: idle window (default 10)"
    )
    p.add_argument(
        "--live-cost-sigterm-after",
        type=float,
        default=10.0,
        help="live_cost: after the lag reads, seconds the rate runs again before SIGTERM (default 10)",
    )
    p.add_argument(
        "--live-cost-events",
        type=int,
        help="live_cost: preloaded events of the as-fast-as-it-goes row (default 200000; --quick 50000)",
    )
    p.add_argument(
        "--processor-env",
        action="append",
        type=parse_env_overrides,
        help="live_cost: processor settings over its defaults, e.g. COMMIT_INTERVAL_MS=200,GATHER_MS=20; "
        "given more than once, each is a variant and the variants alternate (with --live-cost-repeat)",
    )
    p.add_argument(
        "--live-cost-repeat",
        type=int,
        default=1,
        help="live_cost: rounds; each round runs every variant in turn (A B A B...)",
    )
    p.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(PARTS),
        help=f"comma-separated parts: {','.join(PARTS)} (default all)",
    )
    p.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    p.add_argument("--redis-url", help="use this Redis instead of starting one (it gets FLUSHALL!)")
    p.add_argument("--timeout", type=float, default=900, help="max seconds for one throughput candidate")
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "out" / "report.json"), help="JSON report path")
    a = p.parse_args(argv)
    unknown = set(a.only) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    q = a.quick
    a.events = a.events or (50_000 if q else 500_000)
    a.users = a.users or (5_000 if q else 50_000)
    a.latency_seconds = a.latency_seconds or (5.0 if q else 15.0)
    a.memory_seconds = a.memory_seconds or (30.0 if q else 300.0)
    a.live_cost_seconds = a.live_cost_seconds or (5.0 if q else 15.0)
    a.live_cost_events = a.live_cost_events or (50_000 if q else 200_000)
    a.processor_env = a.processor_env or [{}]
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    machine = machine_info()
    log(
        f"starting services ({'given' if args.bootstrap else 'own'} Kafka, "
        f"{'given' if args.redis_url else 'own'} "
        f"Redis)"
    )
    # SIGTERM (e.g. a CI time limit) unwinds like Ctrl-C, so the services below are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    svc = start_bench_services(args.bootstrap, args.redis_url)
    own = svc.broker is not None
    bench = Bench(args, svc.bootstrap, svc.redis_url)
    try:

        async def go() -> dict:
            rinfo = await redis_info(svc.redis_url)
            bench.report.update(
                {
                    "mode": "quick" if args.quick else "full",
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                    "argv": sys.argv[1:] if argv is None else argv,
                    "machine": machine,
                    "services": {
                        "bootstrap": svc.bootstrap,
                        "own": own,
                        "kafka_version": kafka_label(svc),
                        "redis": rinfo,
                    },
                    "settings": {
                        "events": args.events,
                        "users": args.users,
                        "latency_seconds": args.latency_seconds,
                        "rates": args.rates,
                        "memory_seconds": args.memory_seconds,
                        "memory_rate": args.memory_rate,
                        "parts": args.only,
                        "partitions": PARTITIONS,
                        "plans": args.plans,
                    },
                    "method": "throughput = output records / (last - first LogAppendTime of the candidate's "
                    "output "
                    "topic); wall = last append time - candidate start (includes start-up and group join)",
                }
            )
            try:
                return await bench.run()
            finally:
                if not own and bench.created_topics:
                    try:
                        await delete_topics(svc.bootstrap, bench.created_topics)
                    except Exception as exc:  # noqa: BLE001
                        log(f"could not delete the benchmark topics: {exc!r}")

        report = asyncio.run(go())
    finally:
        svc.stop()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["duration_s"] = round(time.time() - started, 1)
    report["charts"] = write_charts(report, out.parent, out.with_suffix(".png"))
    write_json(report, out)
    print_tables(report)
    log(f"report: {out}; charts: {', '.join(report['charts'])}; {report['duration_s']} s")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
