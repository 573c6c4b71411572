"""The benchmark's throughput parts: the data set and policies they share, the pass-through
ceiling, the processor in this process (also under cProfile), and one vs two processor processes.

A mixin of bench.run.Bench: it uses the Bench's services, names, report and arguments.
"""

from __future__ import annotations

import time

import psutil

from bench import data as data_mod
from bench.ceiling import run_ceiling
from bench.kafka_util import create_topics, end_offsets, read_output_timing, wait_group_done
from bench.live_parts import PARTITIONS, log
from bench.policy_setup import prepare_policies_topic
from bench.procs import (
    InProcess,
    processor_process,
    profile_idle_s,
    profile_top,
    profile_total_s,
    redis_commandstats,
    redis_flush_and_reset,
    redis_user_keys,
    summarize_commandstats,
)


class ThroughputParts:
    def add_candidate(self, name: str, timing, t0: float, note: str = "", **extra) -> dict:
        wall = timing.last_ms / 1000 - t0
        row = {
            "name": name,
            "records": timing.records,
            "span_s": round(timing.seconds, 3),
            "events_per_s": round(timing.events_per_s),
            "wall_s": round(wall, 3),
            "wall_events_per_s": round(timing.records / wall) if wall > 0 else None,
            "log_append_time": timing.log_append_time,
            "note": note,
            **extra,
        }
        if timing.records < self.events:
            row["note"] = (note + f"; only {timing.records} of {self.events} records").strip("; ")
        self.report["throughput"].append(row)
        log(
            f"{name}: {row['records']:,} records in {row['span_s']:.2f} s = {row['events_per_s']:,} ev/s "
            f"(wall {row['wall_s']:.2f} s)"
        )
        return row

    # -- data ---------------------------------------------------------------------------
    async def prepare_data(self) -> None:
        a = self.args
        await create_topics(self.bootstrap, [self.events_topic], PARTITIONS)
        self.created_topics.append(self.events_topic)
        t0 = time.perf_counter()
        records = data_mod.generate(a.events, a.users, plans=a.plans)
        gen_s = time.perf_counter() - t0
        log(
            f"generated {len(records):,} events over {a.users:,} users in {gen_s:.1f} s"
            f"{' (half of the users with a plan and device classes)' if a.plans else ''}; producing"
        )
        prod_s = await data_mod.produce(self.bootstrap, self.events_topic, records, PARTITIONS)
        ds = data_mod.describe(self.events_topic, records, a.users, PARTITIONS, gen_s, prod_s)
        del records
        self.ends = await end_offsets(self.bootstrap, self.events_topic)
        self.events = sum(self.ends.values())
        assert self.events == ds.events, (self.events, ds.events)
        self.report["data"] = ds.summary()
        log(f"produced {self.events:,} events in {prod_s:.1f} s ({self.events / prod_s:,.0f} ev/s)")
        await self.prepare_policies()

    async def prepare_policies(self) -> None:
        """The run's policies topic: created (compacted), and with --plans the plan policies in it."""
        self.created_topics.append(self.policies_topic)
        records = data_mod.PLAN_POLICIES if self.args.plans else {}
        self.report["policies"] = await prepare_policies_topic(self.bootstrap, self.policies_topic, records)
        if records and not self.report["policies"]["processor_reads_policies"]:
            log(
                "this processor has no policies (no processor.policies): the plan and deviceClass "
                "fields are produced and ignored, the 'before' figure for the same bytes"
            )
        elif records:
            log(f"wrote {len(records)} plan policies to {self.policies_topic}")

    # -- candidates ---------------------------------------------------------------------
    async def ceiling(self, label: str) -> None:
        out = f"bench.{self.run_id}.{label}.out"
        self.created_topics.append(out)
        await self.output_topic(out)
        t0 = time.time()
        stats = await run_ceiling(
            self.bootstrap, self.events_topic, out, f"bench.{self.run_id}.{label}.group", self.ends
        )
        timing = await read_output_timing(self.bootstrap, out)
        self.add_candidate(
            label,
            timing,
            t0,
            note="pass-through: getmany + send_batch per partition, no Redis",
            fetch_batches=stats["fetch_batches"],
        )

    async def processor_inprocess(self, profile: bool = False) -> None:
        label = "processor-profiled" if profile else "processor"
        names = self.names(label)
        await self.output_topic(names.verdicts)
        await redis_flush_and_reset(self.redis_url)
        proc = InProcess(self.bootstrap, self.redis_url, self.events_topic, names)
        me = psutil.Process()
        cpu0 = me.cpu_times()
        t0 = time.time()
        await proc.start(profile=profile)
        try:
            await wait_group_done(
                self.bootstrap,
                names.group,
                self.events_topic,
                self.ends,
                timeout_s=self.args.timeout,
                alive=lambda: proc.alive,
            )
            if proc.task.done():  # surface a crash instead of a timeout
                proc.task.result()
            stats = await redis_commandstats(self.redis_url)
        finally:
            await proc.stop()
        cpu1 = me.cpu_times()
        keys = await redis_user_keys(self.redis_url)  # after cpu1: this process's own CPU
        timing = await read_output_timing(self.bootstrap, names.verdicts)
        redis = summarize_commandstats(stats, timing.records, self.events)
        if profile:
            self.report["profile"] = {
                "events": timing.records,
                "events_per_s_under_profiler": round(timing.events_per_s),
                "dump": str(self.out_dir / "processor.prof"),
                "top": profile_top(proc.profiler, timing.records, 15, self.out_dir / "processor.prof"),
                "profiled_total_s": profile_total_s(proc.profiler),
                "idle_in_epoll_s": profile_idle_s(proc.profiler),
                "note": "cProfile own time (tottime), whole event loop of the processor in this process",
            }
            log(f"profiled run: {timing.events_per_s:,.0f} ev/s under cProfile")
            return
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        redis["state"] = keys
        self.report["redis"] = redis
        self.report["decisions"] = proc.reasons()
        self.add_candidate(
            "processor",
            timing,
            t0,
            note="in-process, tokens on",
            cpu_us_per_event=round(cpu_s / max(1, timing.records) * 1e6, 1),
            redis_usec_per_event=redis["redis_usec_per_event"],
        )
        log(
            f"Redis: {redis['redis_usec_per_event']} µs/event, scripts {redis['scripts']}; "
            f"{keys['user_keys']:,} user keys of {keys['value_bytes_per_user_key']} bytes "
            f"({keys['memory_usage_per_user_key']} with overhead)"
        )
        log(f"decisions by reason: {self.report['decisions']}")

    async def processes(self, n: int) -> dict:
        label = f"processor-x{n}-proc"
        names = self.names(label)
        await self.output_topic(names.verdicts)
        await redis_flush_and_reset(self.redis_url)
        procs = [
            processor_process(
                self.bootstrap,
                self.redis_url,
                self.events_topic,
                names,
                self.out_dir / "logs" / f"{label}-{i}.log",
            )
            for i in range(n)
        ]
        t0 = time.time()
        for p in procs:
            p.start()
        try:
            await wait_group_done(
                self.bootstrap,
                names.group,
                self.events_topic,
                self.ends,
                timeout_s=self.args.timeout,
                alive=lambda: all(p.running for p in procs),
            )
            cpu = [p.cpu_seconds() for p in procs]
            stats = await redis_commandstats(self.redis_url)
        finally:
            codes = [await p.astop(30) for p in procs]
        timing = await read_output_timing(self.bootstrap, names.verdicts)
        redis = summarize_commandstats(stats, timing.records, self.events)
        name = "processor x1 (process)" if n == 1 else f"processors x{n} (processes)"
        return self.add_candidate(
            name,
            timing,
            t0,
            note=f"{n} x python -m processor, one group",
            process_cpu_s=[round(c, 1) if c else None for c in cpu],
            exit_codes=codes,
            redis_usec_per_event=redis["redis_usec_per_event"],
        )

    async def scaling(self) -> None:
        one = await self.processes(1)
        two = await self.processes(2)
        inproc = next((c for c in self.report["throughput"] if c["name"] == "processor"), None)
        self.report["scaling"] = {
            "one_process_events_per_s": one["events_per_s"],
            "two_processes_events_per_s": two["events_per_s"],
            "two_over_one": round(two["events_per_s"] / one["events_per_s"], 3),
            "two_over_inprocess": round(two["events_per_s"] / inproc["events_per_s"], 3) if inproc else None,
            "note": "two processes join one by one: the timing includes one rebalance",
        }
