"""The live_cost part (issue 20): what one processor process spends per event at the rates it
really runs at, beside as fast as it goes.

Every row gets a fresh events topic, group, verdicts topic and a flushed Redis, and its own
`python -m processor` with the project's defaults (plus `--processor-env` overrides):

- idle: assigned partitions, no traffic, `--live-cost-idle-seconds`; CPU as % of a core;
- each fixed rate: a paced producer (bench.live) offers the rate for `--live-cost-seconds`
  with wall-clock record timestamps, start:heartbeat:stop 2:7:1 over `--users`; CPU from the
  end of a warm-up until the last verdict is out, per event whose first verdict was consumed
  in that span (also right when the processor falls behind), and as a share of a core while
  the rate is offered; verdict latency; when the last verdict is out, the committed-offset lag,
  and 2 s later; then the rate runs again and after `--live-cost-sigterm-after` s the
  processor gets SIGTERM: the time until it exits (the rate goes on until then);
- as fast as it goes: `--live-cost-events` of the throughput data set preloaded, CPU from the
  first to the last verdict's LogAppendTime per event.

Processor CPU is its utime+stime (psutil reads /proc/<pid>/stat), Redis CPU the delta of INFO
cpu used_cpu_sys+used_cpu_user, both sampled every 0.2 s and interpolated at the window's ends.
A mixin of bench.run.Bench: it uses the Bench's services, names, report and arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from bench import data as data_mod
from bench.access import bench_kafka, bench_redis
from bench.cpu_sampler import Sampler
from bench.kafka_util import create_topics, end_offsets, read_output_timing, wait_group_done
from bench.live import LiveSource, VerdictWatcher, drain, latencies, paced_produce, percentiles
from bench.live_cost_table import (
    committed_lag,
    cost_figures,
    decided_in_window,
    table_lines,
    variant_label,
)
from bench.live_parts import PARTITIONS, log
from bench.procs import Names, processor_process, redis_flush_and_reset
from producer_sim.processor_proc import ProcessorProcess

MIX = (2, 7, 1)  # start : heartbeat : stop
SETTLE_S = 2.0  # after /health says UP, before an idle window opens
EXIT_TIMEOUT_S = 60.0  # SIGTERM to exit longer than this: killed, reported as "> 60 s"


class CostSampler(Sampler):
    """The processor's CPU seconds (and the machine's) with Redis' INFO cpu, every 0.2 s."""

    def __init__(self, pid: int, redis: Redis) -> None:
        super().__init__({"processor": [pid]})
        self.redis = redis

    async def asample(self) -> None:
        cpu = await self.redis.info("cpu")
        self.sample()
        self.samples[-1][1]["redis"] = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    async def run(self) -> None:
        while self.running:
            await self.asample()
            await asyncio.sleep(0.2)
        await self.asample()


class LagProbe:
    """Log ends of the events topic and the group's committed offsets, read side by side."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic, self.group = topic, group
        self.admin = bench_kafka(bootstrap).admin()
        self.consumer = bench_kafka(bootstrap).consumer(enable_auto_commit=False)
        self.tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lag(self) -> int:
        async def committed() -> dict:
            try:
                return await self.admin.list_consumer_group_offsets(self.group, partitions=self.tps)
            except KafkaError:  # no group yet
                return {}

        ends, done = await asyncio.gather(self.consumer.end_offsets(self.tps), committed())
        return committed_lag(
            {tp.partition: off for tp, off in ends.items()},
            {tp.partition: m.offset for tp, m in done.items()},
        )


async def time_to_exit(proc: ProcessorProcess, within: float = EXIT_TIMEOUT_S) -> tuple[float | None, int]:
    """SIGTERM, then the seconds until the process has exited (None: killed after `within`) and its code."""
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    while proc.running:
        if time.monotonic() - t0 > within:
            return None, proc.kill() or -9
        await asyncio.sleep(0.02)
    return round(time.monotonic() - t0, 3), proc.returncode


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class LiveCostPart:
    async def live_cost(self) -> None:
        a = self.args
        rows: list[dict] = []
        redis = bench_redis(self.redis_url)
        try:
            for rnd in range(1, a.live_cost_repeat + 1):
                for env in a.processor_env:  # variants alternate: A B A B ...
                    steps = [("idle", 0)] + [("rate", r) for r in a.live_cost_rates] + [("fast", 0)]
                    for kind, rate in steps:
                        label = f"lc{rnd}.{len(rows)}-{kind}{rate or ''}"
                        row = await self.lc_row(label, kind, rate, env, redis)
                        rows.append({**row, "round": rnd})
                        log(f"live_cost {row['variant']} round {rnd}: " + table_lines([row])[-1])
        finally:
            await redis.aclose()
        with_variant = a.live_cost_repeat > 1 or len(a.processor_env) > 1
        lines = table_lines(rows, with_variant)
        self.report["live_cost"] = {
            "rows": rows,
            "table": lines,
            "with_variant": with_variant,
            "settings": {
                "seconds_per_rate": a.live_cost_seconds,
                "idle_seconds": a.live_cost_idle_seconds,
                "sigterm_after_s": a.live_cost_sigterm_after,
                "fast_events": a.live_cost_events,
                "rates": a.live_cost_rates,
                "users": a.users,
                "partitions": PARTITIONS,
                "mix_start_heartbeat_stop": MIX,
                "processor_env": a.processor_env,
                "repeat": a.live_cost_repeat,
            },
            "method": __doc__,
        }
        print("\n".join(lines), flush=True)

    # -- one row each -----------------------------------------------------------------------
    async def lc_row(self, label: str, kind: str, rate: int, env: dict, redis: Redis) -> dict:
        row = {"kind": kind, "rate": rate, "variant": variant_label(env), "loadavg_before": _load()}
        try:
            if kind == "idle":
                row.update(await self.lc_idle(label, env, redis))
            elif kind == "rate":
                row.update(await self.lc_rate(label, env, redis, rate))
            else:
                row.update(await self.lc_fast(label, env, redis))
        except Exception as exc:  # noqa: BLE001 - one row failing still reports the others
            row["error"] = repr(exc)
            self.report["errors"].append({"part": f"live_cost {label}", "error": repr(exc)})
        row["loadavg_after"] = _load()
        return row

    async def lc_processor(self, label: str, env: dict, topic: str) -> tuple[ProcessorProcess, Names]:
        names = self.names(label)
        await self.output_topic(names.verdicts)
        await redis_flush_and_reset(self.redis_url)
        proc = processor_process(
            self.bootstrap, self.redis_url, topic, names, self.out_dir / "logs" / f"{label}.log", **env
        )
        proc.start()
        return proc, names

    async def lc_topic(self, label: str) -> str:
        topic = f"bench.{self.run_id}.{label}.events"
        self.created_topics.append(topic)
        await create_topics(self.bootstrap, [topic], PARTITIONS)
        return topic

    async def lc_idle(self, label: str, env: dict, redis: Redis) -> dict:
        topic = await self.lc_topic(label)
        proc, _names = await self.lc_processor(label, env, topic)
        try:
            await proc.wait_healthy(120)
            await asyncio.sleep(SETTLE_S)
            sampler = CostSampler(proc.pid, redis)
            sampling = asyncio.ensure_future(sampler.run())
            t0 = time.time()
            await asyncio.sleep(self.args.live_cost_idle_seconds)
            t1 = time.time()
            sampler.running = False
            await sampling
            d = sampler.between(t0, t1)
            exit_s, code = await time_to_exit(proc)
        finally:
            await proc.astop(30)
        return {
            **cost_figures(d["processor"], d["redis"], t1 - t0, 0),
            "machine_busy_percent": round(d["machine_busy"] / d["machine_total"] * 100, 1),
            "sigterm_to_exit_s": exit_s,
            "exit_code": code,
        }

    async def lc_rate(self, label: str, env: dict, redis: Redis, rate: int) -> dict:
        a = self.args
        topic = await self.lc_topic(label)
        proc, names = await self.lc_processor(label, env, topic)
        watcher = VerdictWatcher(self.bootstrap, names.verdicts)
        producer = bench_kafka(self.bootstrap).producer(acks="all", linger_ms=0, max_batch_size=256 * 1024)
        probe = LagProbe(self.bootstrap, topic, names.group)
        sampler: CostSampler | None = None
        sampling = None
        try:
            await proc.wait_healthy(120)
            await watcher.start()
            await producer.start()
            await probe.start()
            sampler = CostSampler(proc.pid, redis)
            sampling = asyncio.ensure_future(sampler.run())
            source = LiveSource.mix(f"{self.run_id}{label}", a.users, *MIX)
            sent: dict[str, float] = {}
            t_start = time.time()
            stats = await paced_produce(producer, topic, PARTITIONS, source, rate, a.live_cost_seconds, sent)
            t_end = time.time()
            waited = await drain(watcher, sent, timeout_s=max(20.0, a.live_cost_seconds))
            t_drained = time.time()
            lag0 = await probe.lag()
            await asyncio.sleep(2.0)
            lag2 = await probe.lag()
            warmup = min(2.0, a.live_cost_seconds / 5)
            w0 = t_start + warmup
            # Per event: from w0 until the last verdict is out, over the events decided in that
            # span (right also when the processor falls behind); share of a core: while sending.
            spent = sampler.between(w0, t_drained)
            steady = sampler.between(w0, t_end)
            offered = sum(1 for t in sent.values() if w0 <= t <= t_end)
            decided = decided_in_window(sent, watcher.received, w0, t_drained)
            share = cost_figures(steady["processor"], steady["redis"], t_end - w0, 0)
            lats, missing = latencies(sent, watcher.received, w0)
            row = {
                **stats,
                **cost_figures(spent["processor"], spent["redis"], t_drained - w0, decided),
                "processor_core_percent": share["processor_core_percent"],
                "redis_core_percent": share["redis_core_percent"],
                "steady_window_s": share["window_s"],
                "offered_in_window": offered,
                "machine_busy_percent": round(steady["machine_busy"] / steady["machine_total"] * 100, 1),
                "warmup_excluded_s": warmup,
                "missing": missing,
                "drain_s": round(waited, 2),
                "latency": percentiles(lats),
                "lag_at_last_verdict": lag0,
                "lag_2s_later": lag2,
            }
            # SIGTERM while the rate still runs
            again = asyncio.ensure_future(paced_produce(producer, topic, PARTITIONS, source, rate, 3600, {}))
            await asyncio.sleep(a.live_cost_sigterm_after)
            exit_s, code = await time_to_exit(proc)
            again.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await again
            row.update(
                {
                    "sigterm_after_s": a.live_cost_sigterm_after,
                    "sigterm_to_exit_s": exit_s,
                    "sigterm_timeout_s": EXIT_TIMEOUT_S,
                    "exit_code": code,
                }
            )
            return row
        finally:
            if sampling is not None:
                sampler.running = False
                await sampling
            await proc.astop(30)
            await producer.stop()
            await watcher.stop()
            await probe.stop()

    async def lc_fast(self, label: str, env: dict, redis: Redis) -> dict:
        a = self.args
        topic = await self.lc_topic(label)
        records = data_mod.generate(a.live_cost_events, a.users)
        await data_mod.produce(self.bootstrap, topic, records, PARTITIONS)
        del records
        ends = await end_offsets(self.bootstrap, topic)
        events = sum(ends.values())
        proc, names = await self.lc_processor(label, env, topic)
        sampler = CostSampler(proc.pid, redis)
        sampling = asyncio.ensure_future(sampler.run())
        try:
            await wait_group_done(
                self.bootstrap, names.group, topic, ends, a.timeout, alive=lambda: proc.running
            )
        finally:
            sampler.running = False
            await sampling
            await proc.astop(30)
        timing = await read_output_timing(self.bootstrap, names.verdicts)
        d = sampler.between(timing.first_ms / 1000, timing.last_ms / 1000)
        return {
            **cost_figures(d["processor"], d["redis"], timing.seconds, events),
            "machine_busy_percent": round(d["machine_busy"] / d["machine_total"] * 100, 1),
            "verdicts": timing.records,
            "events_per_s": round(events / timing.seconds),
        }
