"""The benchmark's live parts: fixed offered rates through a processor process (latency), its
RSS over a fixed-rate run (memory), and the gateway over HTTP next to Kafka (gateway).

A mixin of bench.run.Bench: it uses the Bench's services, names, report and arguments.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer

from bench.access import bench_kafka
from bench.gateway_part import gateway_bench
from bench.kafka_util import create_topics
from bench.live import LiveSource, VerdictWatcher, drain, latencies, paced_produce, percentiles
from bench.procs import batch_metrics, processor_process, redis_flush_and_reset
from producer_sim.processor_proc import ProcessorProcess

PARTITIONS = 12


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class LiveParts:
    async def live_setup(self, label: str) -> tuple[ProcessorProcess, VerdictWatcher, AIOKafkaProducer, str]:
        topic = f"bench.{self.run_id}.{label}.events"
        self.created_topics.append(topic)
        await create_topics(self.bootstrap, [topic], PARTITIONS)
        names = self.names(label)
        await self.output_topic(names.verdicts)
        await redis_flush_and_reset(self.redis_url)
        proc = processor_process(
            self.bootstrap, self.redis_url, topic, names, self.out_dir / "logs" / f"{label}.log"
        )
        proc.start()
        await proc.wait_healthy()
        watcher = VerdictWatcher(self.bootstrap, names.verdicts)
        await watcher.start()
        producer = bench_kafka(self.bootstrap).producer(acks="all", linger_ms=0, max_batch_size=256 * 1024)
        await producer.start()
        return proc, watcher, producer, topic

    async def live_rate(
        self,
        proc: ProcessorProcess,
        watcher: VerdictWatcher,
        producer: AIOKafkaProducer,
        topic: str,
        source: LiveSource,
        rate: int,
        seconds: float,
    ) -> dict:
        sent: dict[str, float] = {}
        m0 = await batch_metrics(proc)
        cpu0 = proc.cpu_seconds()
        t_start = time.time()
        stats = await paced_produce(producer, topic, PARTITIONS, source, rate, seconds, sent)
        cpu1 = proc.cpu_seconds()
        waited = await drain(watcher, sent, timeout_s=max(20.0, seconds))
        m1 = await batch_metrics(proc)
        d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
        warmup = min(1.0, seconds / 5)
        lats, missing = latencies(sent, watcher.received, t_start + warmup)
        row = {
            "rate": rate,
            **stats,
            "warmup_excluded_s": warmup,
            "missing": missing,
            "drain_s": round(waited, 2),
            "latency": percentiles(lats),
            "processor_cpu_percent": round((cpu1 - cpu0) / stats["seconds"] * 100, 1)
            if cpu0 and cpu1
            else None,
            "processor_cycles": int(d.get("concurrency_batch_seconds_count", 0)),
            "processor_cycle_ms_mean": round(
                d["concurrency_batch_seconds_sum"] / d["concurrency_batch_seconds_count"] * 1000, 2
            )
            if d.get("concurrency_batch_seconds_count")
            else None,
            "processor_partition_batch_mean": round(
                d["concurrency_batch_size_sum"] / d["concurrency_batch_size_count"], 1
            )
            if d.get("concurrency_batch_size_count")
            else None,
        }
        for eid in sent:
            watcher.received.pop(eid, None)
        return row

    async def latency(self) -> None:
        proc, watcher, producer, topic = await self.live_setup("latency")
        runs = []
        try:
            source = LiveSource(self.run_id, users=self.args.users)
            for rate in self.args.rates:
                try:
                    row = await self.live_rate(
                        proc, watcher, producer, topic, source, rate, self.args.latency_seconds
                    )
                except Exception as exc:  # noqa: BLE001 - one rate failing still reports the others
                    row = {"rate": rate, "error": repr(exc)}
                runs.append(row)
                p = row.get("latency", {})
                log(
                    f"latency at {rate:,} ev/s: p50 {p.get('p50_ms')} p95 {p.get('p95_ms')} "
                    f"p99 {p.get('p99_ms')} ms,"
                    f" missing {row.get('missing')}"
                )
                if not proc.running:
                    raise RuntimeError(f"the processor exited; see {proc.log_path}")
        finally:
            await producer.stop()
            await watcher.stop()
            await proc.astop(30)
        self.report["latency"] = {
            "seconds_per_rate": self.args.latency_seconds,
            "runs": runs,
            "method": "paced producer, one send_batch per partition every 5 ms; send time taken before each "
            "tick's batches; a consumer of the verdicts topic stamps each eventId's first verdict",
        }

    async def gateway(self) -> None:
        profile = self.out_dir / "gateway-profile" if self.args.gateway_profile else None
        report = await gateway_bench(
            self,
            self.args.gateway_rates,
            self.args.latency_seconds,
            profile_dir=profile,
            baseline=self.args.gateway_baseline,
        )
        self.report["gateway"] = report
        for row in report["runs"]:
            http, kafka, floor = row["gateway"], row["kafka_direct"], row["floor"] or {}
            log(
                f"gateway at {row['rate']} starts/s: {http.get('starts_per_s')} achieved, p50/p95/p99 "
                f"{http.get('p50_ms')}/{http.get('p95_ms')}/{http.get('p99_ms')} ms; straight on Kafka "
                f"{kafka.get('p50_ms')}/{kafka.get('p95_ms')}/{kafka.get('p99_ms')} ms; the gateway adds "
                f"{row['gateway_added_p99_ms']} ms at p99; CPU per call: floor "
                f"{floor.get('server_cpu_ms_per_call')} ms "
                f"(p50/p99 {floor.get('p50_ms')}/{floor.get('p99_ms')}),"
                f" gateway {http.get('server_cpu_ms_per_call')} ms, ratio {row['cpu_ratio_to_floor']}"
            )
            if "baseline" in row:
                b = row["baseline"]
                log(
                    f"  baseline gateway at {row['rate']}: CPU per call {b.get('server_cpu_ms_per_call')} ms "
                    f"(ratio {row.get('baseline_cpu_ratio_to_floor')}), p50/p99 {b.get('p50_ms')}/"
                    f"{b.get('p99_ms')} ms"
                )

    async def memory(self) -> None:
        proc, watcher, producer, topic = await self.live_setup("memory")
        series: list[tuple[float, float]] = []
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                rss = proc.rss_mb()
                if rss is not None:
                    series.append((round(time.monotonic() - t0, 1), round(rss, 2)))
                await asyncio.sleep(1.0)

        sampler = asyncio.ensure_future(sample())
        try:
            source = LiveSource(self.run_id + "m", users=self.args.users)
            row = await self.live_rate(
                proc, watcher, producer, topic, source, self.args.memory_rate, self.args.memory_seconds
            )
        finally:
            sampler.cancel()
            await producer.stop()
            await watcher.stop()
            await proc.astop(30)
        half = series[len(series) // 2 :]
        self.report["memory"] = {
            "rate": self.args.memory_rate,
            "seconds": self.args.memory_seconds,
            "samples": len(series),
            "rss_mb_first": series[0][1],
            "rss_mb_last": series[-1][1],
            "rss_mb_min": min(s[1] for s in series),
            "rss_mb_max": max(s[1] for s in series),
            "slope_mb_per_min": round(slope(series) * 60, 4),
            "slope_mb_per_min_second_half": round(slope(half) * 60, 4),
            "latency_during": row["latency"],
            "achieved_rate": row["achieved_rate"],
            "missing": row["missing"],
            "series": series,
        }
        log(
            f"memory: RSS {series[0][1]} -> {series[-1][1]} MB, "
            f"slope {self.report['memory']['slope_mb_per_min']} "
            f"MB/min ({self.report['memory']['slope_mb_per_min_second_half']} over the second half)"
        )

    # -- the whole run ------------------------------------------------------------------


def slope(series: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y), per unit of t."""
    n = len(series)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in series) / n
    my = sum(y for _, y in series) / n
    var = sum((t - mt) ** 2 for t, _ in series)
    return sum((t - mt) * (y - my) for t, y in series) / var if var else 0.0
