"""`python -m bench.capacity`: the figures of the capacity plan, measured here (issue 15).

Starts its own Kafka broker, one Redis and a 3-master Redis Cluster (free ports, a temp dir;
no replicas by default: the single node has none, and on 2 cores their CPU would be charged
to every run). The throughput data set (bench.data) is produced once to a 12-partition events
topic; then for {1 shard, 3 shards} x {1, 2, 3 processes}: every master flushed with its
commandstats reset, N `python -m processor` in a new group, until the group has committed the
end of every partition. Per run: events/s (events / first-to-last verdict LogAppendTime),
Redis script µs per event summed over the masters and per shard, Redis used memory per user
and per stored lease (INFO memory after the run minus the flushed baseline), processor CPU
per event and the machine's CPU use over the same span (psutil, sampled every 0.2 s). The
plan for 10M viewers (bench.capacity_plan) is derived from these figures and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import msgpack  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from bench import data as data_mod  # noqa: E402
from bench.access import bench_redis  # noqa: E402
from bench.capacity_plan import format_plan, measured, plan  # noqa: E402
from bench.cpu_sampler import Sampler  # noqa: E402
from bench.kafka_util import LOG_APPEND_TIME, create_topics, end_offsets, read_output_timing, wait_group_done  # noqa: E402
from bench.lease_bytes import run as lease_bytes_run  # noqa: E402
from bench.policy_setup import prepare_policies_topic  # noqa: E402
from bench.procs import (  # noqa: E402
    Names,
    processor_process,
    redis_commandstats,
    redis_flush_and_reset,
    summarize_commandstats,
)
from bench.services import BENCH_KAFKA_HEAP, machine_info  # noqa: E402
from compose.launcher import Services, start_services  # noqa: E402
from producer_sim.processor_proc import ProcessorProcess  # noqa: E402

PARTITIONS = 12


def log(msg: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Target:
    shards: int
    url: str  # what the processor gets as REDIS_URL
    cluster: bool
    masters: list[str]  # every master's URL (the figures are read per master)
    pids: list[int]  # every redis-server of the target, replicas included


async def on_masters(urls: list[str], fn):
    async def one(url: str):
        r = bench_redis(url)
        try:
            return await fn(r)
        finally:
            await r.aclose()

    return await asyncio.gather(*(one(u) for u in urls))


async def used_memory(r: Redis) -> dict[str, int]:
    info = await r.info("memory")
    return {k: int(info[k]) for k in ("used_memory", "used_memory_dataset")}


async def stored_state(r: Redis) -> dict:
    """This master's user keys and stored leases, and the partitions whose keys it holds."""
    users = leases = 0
    partitions = set()
    async for key in r.scan_iter(match="sc:*:p", count=1000):
        partitions.add(int(key.decode().rsplit(":", 2)[-2].rstrip("}")))
    keys = [k async for k in r.scan_iter(match="sc:*:u:*", count=1000)]
    for i in range(0, len(keys), 1000):
        pipe = r.pipeline(transaction=False)
        for key in keys[i : i + 1000]:
            pipe.get(key)
        for raw in await pipe.execute():
            if raw:
                users += 1
                leases += len(msgpack.unpackb(raw, raw=False, strict_map_key=False).get("l") or {})
    return {"user_keys": users, "leases": leases, "partitions": sorted(partitions)}


async def idle_cores(pids: list[int], seconds: float = 2.0) -> float:
    s = Sampler({"redis": pids})
    s.sample()
    await asyncio.sleep(seconds)
    s.sample()
    (t0, a), (t1, b) = s.samples
    return (b["redis"] - a["redis"]) / (t1 - t0)


async def all_up(procs: list[ProcessorProcess]) -> float:
    await asyncio.gather(*(p.wait_healthy(120) for p in procs))
    return time.time()


class Capacity:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.run_id = uuid.uuid4().hex[:6]
        self.events_topic = f"cap.{self.run_id}.events"
        self.policies = f"cap.{self.run_id}.policies"
        self.svc: Services | None = None
        self.ends: dict[int, int] = {}
        self.events = 0
        self.report: dict = {"rows": [], "errors": []}

    def start(self) -> list[Target]:
        self.svc = start_services(
            kafka=True, redis=True, cluster=True, data_dir=self.tmp,
            kafka_heap=BENCH_KAFKA_HEAP, cluster_replicas=self.args.replicas,
        )  # fmt: skip
        self.broker, self.single, self.cluster = self.svc.broker, self.svc.redis, self.svc.cluster
        masters = self.cluster.master_ports()
        return [
            Target(1, self.single.url, False, [self.single.url], [self.single.pid]),
            Target(
                len(masters),
                self.cluster.url,
                True,
                [self.cluster.node_url(p) for p in masters],
                [n.pid for n in self.cluster.nodes.values()],
            ),
        ]

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()

    async def prepare(self) -> None:
        a = self.args
        bootstrap = self.broker.bootstrap
        await create_topics(bootstrap, [self.events_topic], PARTITIONS)
        t0 = time.perf_counter()
        records = data_mod.generate(a.events, a.users)
        gen_s = time.perf_counter() - t0
        prod_s = await data_mod.produce(bootstrap, self.events_topic, records, PARTITIONS)
        self.report["data"] = data_mod.describe(
            self.events_topic, records, a.users, PARTITIONS, gen_s, prod_s
        ).summary()
        del records
        self.ends = await end_offsets(bootstrap, self.events_topic)
        self.events = sum(self.ends.values())
        await prepare_policies_topic(bootstrap, self.policies, {})
        log(f"produced {self.events:,} events over {a.users:,} users to {PARTITIONS} partitions")

    def topic_bytes(self, topic: str) -> int:
        """Bytes of the topic's log segments on the broker's disk (records, batch headers)."""
        return sum(f.stat().st_size for f in self.broker.data_dir.rglob(f"{topic}-*/*.log"))

    async def cell(self, target: Target, n: int, batch: int | None = None) -> dict:
        label = f"{target.shards}s{n}p" + (f"b{batch}" if batch else "")
        base = f"cap.{self.run_id}.{label}"
        names = Names(f"{base}.verdicts", f"{base}.dlq", f"{base}.group", self.policies)
        bootstrap = self.broker.bootstrap
        await create_topics(bootstrap, [names.verdicts], PARTITIONS, LOG_APPEND_TIME)
        await asyncio.gather(*(redis_flush_and_reset(u) for u in target.masters))
        baseline = await on_masters(target.masters, used_memory)
        idle = await idle_cores(target.pids)  # cron and cluster bus: not a per-event cost
        load0 = os.getloadavg()[0]
        logs, cluster = Path(self.args.out).parent / "logs" / "capacity", target.cluster
        # BATCH_MAX_RECORDS: fewer events per partition per script call
        extra = {"BATCH_MAX_RECORDS": str(batch)} if batch else {}
        procs = [
            processor_process(
                bootstrap, target.url, self.events_topic, names, logs / f"{label}-{i}.log", cluster, **extra
            )
            for i in range(n)
        ]
        for p in procs:
            p.start()
        sampler = Sampler(
            {
                "processors": [p.pid for p in procs],
                "kafka": [self.broker.pid],
                "redis": target.pids,
                "bench": [os.getpid()],
            }
        )
        sampling = asyncio.ensure_future(sampler.run())
        # When the last process first reported UP (consuming): before it, fewer worked.
        joined = asyncio.ensure_future(all_up(procs))
        try:
            await wait_group_done(
                bootstrap, names.group, self.events_topic, self.ends, self.args.timeout,
                alive=lambda: all(p.running for p in procs),
            )  # fmt: skip
            stats = await asyncio.gather(*(redis_commandstats(u) for u in target.masters))
        finally:
            sampler.running = False
            await sampling
            t_joined = joined.result() if joined.done() and not joined.exception() else None
            joined.cancel()
            codes = [await p.astop(30) for p in procs]
        timing = await read_output_timing(bootstrap, names.verdicts)
        after = await on_masters(target.masters, used_memory)
        state = await on_masters(target.masters, stored_state)
        span = timing.seconds
        cpu = sampler.between(timing.first_ms / 1000, timing.last_ms / 1000)
        shards = []
        for url, st, b0, b1, s in zip(target.masters, stats, baseline, after, state, strict=True):
            r = summarize_commandstats(st, timing.records, self.events)
            own = sum(self.ends[p] for p in s["partitions"])
            calls = sum(v["calls"] or 0 for v in r["scripts"].values())
            shards.append(
                {
                    "master": url,
                    **s,
                    "events": own,
                    "script_usec": r["script_usec"],
                    "script_calls": calls,
                    "usec_per_own_event": round(r["script_usec"] / own, 2) if own else None,
                    "busy_share_of_one_core": round(r["script_usec"] / 1e6 / span, 3),
                    "used_memory_delta": b1["used_memory"] - b0["used_memory"],
                    "dataset_delta": b1["used_memory_dataset"] - b0["used_memory_dataset"],
                }
            )
        usec = sum(s["script_usec"] for s in shards)
        memory = sum(s["used_memory_delta"] for s in shards)
        users = sum(s["user_keys"] for s in shards)
        leases = sum(s["leases"] for s in shards)
        cores = {k: round(v / span, 2) for k, v in cpu.items() if k != "machine_total"}
        ours = sum(v for k, v in cores.items() if k != "machine_busy")
        cores["other"] = round(cores["machine_busy"] - ours, 2)
        row = {
            "shards": target.shards,
            "processes": n,
            "batch_max_records": batch,
            "events": self.events,
            "verdicts": timing.records,
            "span_s": round(span, 2),
            "all_up_after_first_verdict_s": round(t_joined - timing.first_ms / 1000, 2) if t_joined else None,
            "events_per_s": round(self.events / span),
            "events_per_s_per_process": round(self.events / span / n),
            "redis_usec_per_event": round(usec / self.events, 2),
            "events_per_script_call": round(self.events / max(1, sum(s["script_calls"] for s in shards)), 1),
            "busiest_shard_busy": max(s["busy_share_of_one_core"] for s in shards),
            "used_memory_delta": memory,
            "user_keys": users,
            "leases": leases,
            "bytes_per_user": round(memory / users, 1) if users else None,
            "bytes_per_lease": round(memory / leases, 1) if leases else None,
            "processor_cpu_us_per_event": round(cpu["processors"] / self.events * 1e6, 1),
            # All the redis-servers' CPU (I/O too) less their idle use; waiting for a core,
            # which inflates commandstats' usec on a saturated machine, is not in it.
            "redis_cpu_us_per_event": round((cpu["redis"] - idle * span) / self.events * 1e6, 1),
            "redis_idle_cores": round(idle, 4),
            "machine_cpu_percent": round(cpu["machine_busy"] / cpu["machine_total"] * 100, 1),
            "cpu_cores_used": cores,
            "loadavg_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "exit_codes": codes,
            "verdict_log_bytes": self.topic_bytes(names.verdicts),
            "by_shard": shards,
        }
        log(
            f"{target.shards} shard(s) x {n} process(es): {row['events_per_s']:,} ev/s, Redis "
            f"{row['redis_usec_per_event']} µs/ev, {row['bytes_per_lease']} B/lease, machine CPU "
            f"{row['machine_cpu_percent']} % (cores {cores})"
        )
        return row

    async def run(self, targets: list[Target]) -> None:
        await self.prepare()
        if self.args.lease_bytes_users:  # the marginal bytes of a lease (flushes the single Redis)
            users = self.args.lease_bytes_users
            self.report["lease_bytes"] = await lease_bytes_run(self.single.url, users, 4)
        cells = [(t, n, None) for t in targets for n in self.args.processes]
        if self.args.live_batch:  # the cluster, one process, live-sized batches
            cells.append((targets[-1], 1, self.args.live_batch))
        for target, n, batch in cells:
            try:
                self.report["rows"].append(await self.cell(target, n, batch))
            except Exception as exc:  # noqa: BLE001 - one failed run is reported, the rest runs
                log(f"{target.shards} shard(s) x {n} (batch {batch}): {exc!r}")
                err = {"shards": target.shards, "processes": n, "batch": batch, "error": repr(exc)}
                self.report["errors"].append(err)
        self.report["event_log_bytes"] = self.topic_bytes(self.events_topic)


COLUMNS = (  # header, width, value of a row
    ("shards", 6, lambda r: r["shards"]),
    ("procs", 5, lambda r: r["processes"]),
    ("batch", 5, lambda r: r["batch_max_records"] or "-"),
    ("ev/script", 9, lambda r: r["events_per_script_call"]),
    ("ev/s", 7, lambda r: f"{r['events_per_s']:,}"),
    ("ev/s/proc", 9, lambda r: f"{r['events_per_s_per_process']:,}"),
    ("Redis µs/ev", 11, lambda r: r["redis_usec_per_event"]),
    ("Redis CPU µs/ev", 15, lambda r: r["redis_cpu_us_per_event"]),
    ("µs/own ev by shard", 18, lambda r: "/".join(str(s["usec_per_own_event"]) for s in r["by_shard"])),
    ("busiest", 7, lambda r: f"{r['busiest_shard_busy']:.0%}"),
    ("B/user", 6, lambda r: r["bytes_per_user"]),
    ("B/lease", 7, lambda r: r["bytes_per_lease"]),
    ("proc CPU µs/ev", 14, lambda r: r["processor_cpu_us_per_event"]),
    ("machine CPU", 11, lambda r: f"{r['machine_cpu_percent']}%"),
    ("cores proc/redis/kafka/other", 28, lambda r: "/".join(
        str(r["cpu_cores_used"][k]) for k in ("processors", "redis", "kafka", "other"))),
)  # fmt: skip


def print_table(rows: list[dict]) -> None:
    print("  ".join(f"{h:>{w}}" for h, w, _ in COLUMNS))
    for r in rows:
        print("  ".join(f"{v(r)!s:>{w}}" for _h, w, v in COLUMNS))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events in the data set (default 200000)")
    p.add_argument("--users", type=int, default=50_000, help="users in the data set (default 50000)")
    p.add_argument("--processes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    p.add_argument("--live-batch", type=int, default=240, help="BATCH_MAX_RECORDS of an extra run (0: none)")
    p.add_argument("--replicas", type=int, default=0, help="replicas per cluster master (default 0)")
    p.add_argument("--lease-bytes-users", type=int, default=5000, help="bench.lease_bytes users (0: skip)")
    p.add_argument("--timeout", type=float, default=600, help="max seconds for one run")
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "out" / "capacity.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a time limit unwinds: services stop
    tmp = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    cap = Capacity(args, tmp)
    cap.report.update({"argv": sys.argv[1:] if argv is None else argv, "machine": machine_info()})
    try:
        targets = cap.start()
        cap.report["redis_version"] = cap.single.version
        asyncio.run(cap.run(targets))
    finally:
        cap.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rep = cap.report
    rep["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    rep["duration_s"] = round(time.time() - started, 1)
    if rep["rows"]:
        print_table(rep["rows"])
        m = measured(rep)
        rep["plan"] = plan(m)
        print(format_plan(rep["plan"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2))
    log(f"report: {out}; {rep['duration_s']} s; load average at start {rep['machine']['loadavg_at_start']}")
    return 1 if rep["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
