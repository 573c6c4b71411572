"""Running the real processor: in-process (optionally under cProfile) or as `python -m processor`."""

from __future__ import annotations

import asyncio
import cProfile
import io
import logging
import os
import pstats
from dataclasses import dataclass
from pathlib import Path

from bench.access import bench_redis
from compose.launcher import REPO_ROOT
from producer_sim.processor_proc import PROCESSOR_ARGS, ProcessorProcess, metric_value

JWT_SECRET = "bench-secret-0123456789abcdef-not-for-production"
BATCH_METRICS = (
    "concurrency_batch_seconds_sum",
    "concurrency_batch_seconds_count",
    "concurrency_batch_size_sum",
    "concurrency_batch_size_count",
)


@dataclass
class Names:
    verdicts: str
    dlq: str
    group: str
    policies: str | None = None  # POLICIES_TOPIC (a processor without policies ignores it)


def processor_env(
    bootstrap: str, redis_url: str, events_topic: str, names: Names, cluster: bool = False
) -> dict[str, str]:
    """The settings of a benchmark's processor process (over the bench's own environment)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        # Always set: a REDIS_CLUSTER in the caller's environment must not leak in.
        "REDIS_CLUSTER": "true" if cluster else "false",
        "EVENTS_TOPIC": events_topic,
        "VERDICTS_TOPIC": names.verdicts,
        "DLQ_TOPIC": names.dlq,
        "CONSUMER_GROUP": names.group,
        "JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    if names.policies:
        env["POLICIES_TOPIC"] = names.policies
    return env


def processor_process(
    bootstrap: str,
    redis_url: str,
    events_topic: str,
    names: Names,
    log_file: Path,
    cluster: bool = False,
    python_args: tuple[str, ...] = PROCESSOR_ARGS,
    **extra_env: str,
) -> ProcessorProcess:
    """A (not yet started) `python -m processor` on a free HTTP port, output to `log_file`."""
    env = {**processor_env(bootstrap, redis_url, events_topic, names, cluster), **extra_env}
    return ProcessorProcess(env, log_file, python_args=python_args)


async def batch_metrics(proc: ProcessorProcess) -> dict[str, float]:
    """The processor's batch histograms' sums and counts, from /metrics ({} if unreachable)."""
    text = await proc.metrics()
    if text is None:
        return {}
    return {name: metric_value(text, name) for name in BATCH_METRICS}


# -- Redis ----------------------------------------------------------------------------------
async def redis_flush_and_reset(url: str) -> None:
    r = bench_redis(url)
    try:
        await r.flushall()
        await r.config_resetstat()
    finally:
        await r.aclose()


async def redis_commandstats(url: str) -> dict:
    r = bench_redis(url)
    try:
        stats = await r.info("commandstats")
        return {k.removeprefix("cmdstat_"): v for k, v in stats.items()}
    finally:
        await r.aclose()


async def redis_user_keys(url: str, sample: int = 5000) -> dict:
    """The lease state left in Redis: user keys, the mean size of (a sample of) them, used_memory."""
    r = bench_redis(url)
    try:
        keys = []
        async for key in r.scan_iter(match="sc:*:u:*", count=1000):
            keys.append(key)
        total = len(keys)
        keys = keys[:sample]
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.strlen(key)
            pipe.memory_usage(key, samples=0)
        got = await pipe.execute() if keys else []
        memory = await r.info("memory")
        return {
            "user_keys": total,
            "sampled": len(keys),
            "value_bytes_per_user_key": round(sum(got[0::2]) / len(keys), 1) if keys else None,
            "memory_usage_per_user_key": round(sum(got[1::2]) / len(keys), 1) if keys else None,
            "used_memory": memory.get("used_memory"),
            "note": "after the run: STRLEN (MessagePack state) and MEMORY USAGE SAMPLES 0 of user keys",
        }
    finally:
        await r.aclose()


def summarize_commandstats(stats: dict, events: int, input_events: int | None = None) -> dict:
    """Redis time per event. Commands a script calls are counted in commandstats too (and their
    time is inside the script's), so the script time is the figure; the others are shown apart.

    `events` is the number of verdicts (the figure's divisor since the first benchmark; one per
    event unless evictions or terminates add revokes), `input_events` the events read."""
    scripts = {k: stats[k] for k in ("evalsha", "eval", "fcall") if k in stats}
    script_usec = sum(v.get("usec", 0) for v in scripts.values())
    script_calls = sum(v.get("calls", 0) for v in scripts.values())
    return {
        "scripts": {
            k: {"calls": v.get("calls"), "usec": v.get("usec"), "usec_per_call": v.get("usec_per_call")}
            for k, v in scripts.items()
        },
        "redis_usec_per_event": round(script_usec / events, 2) if events else None,
        "script_usec_per_event": round(script_usec / events, 2) if events else None,
        "script_usec": script_usec,
        "verdicts": events,
        "input_events": input_events,
        "redis_usec_per_input_event": round(script_usec / input_events, 2) if input_events else None,
        "events_per_script_call": round(events / max(1, script_calls), 1),
        "other_commands": sorted(
            (
                {
                    "command": k,
                    "calls": v.get("calls"),
                    "usec": v.get("usec"),
                    "calls_per_event": round(v.get("calls", 0) / events, 3) if events else None,
                }
                for k, v in stats.items()
                if k not in scripts
            ),
            key=lambda d: -(d["usec"] or 0),
        )[:8],
        "note": "other_commands include the commands called inside the scripts (their time is part of the "
        "script time), so they are not added to redis_usec_per_event",
    }


# -- in-process -----------------------------------------------------------------------------
class InProcess:
    """The Processor class on this event loop; `profile=True` runs it under cProfile."""

    def __init__(self, bootstrap: str, redis_url: str, events_topic: str, names: Names) -> None:
        from processor.config import load_settings

        extra = {"policies_topic": names.policies} if names.policies else {}
        self.settings = load_settings(
            **extra,
            kafka_bootstrap_servers=bootstrap,
            redis_url=redis_url,
            events_topic=events_topic,
            verdicts_topic=names.verdicts,
            dlq_topic=names.dlq,
            consumer_group=names.group,
            jwt_secret=JWT_SECRET,
            http_port=0,
            log_level="WARNING",
        )
        self.task: asyncio.Task | None = None
        self.processor = None
        self.profiler: cProfile.Profile | None = None

    async def start(self, profile: bool = False) -> None:
        from processor.app import Processor

        logging.getLogger("processor").setLevel(logging.WARNING)
        logging.getLogger("aiokafka").setLevel(logging.ERROR)
        self.processor = Processor(self.settings)
        if profile:
            self.profiler = cProfile.Profile()
            self.profiler.enable()
        self.task = asyncio.ensure_future(self.processor.run())

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def reasons(self) -> dict[str, int]:
        """Decided events by reason (the processor's concurrency_events_total), and DLQ records."""
        out: dict[str, int] = {}
        metrics = getattr(self.processor, "metrics", None)
        if metrics is None:
            return out
        for family in metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "concurrency_events_total":
                    key = sample.labels.get("reason", "?")
                elif sample.name == "concurrency_dlq_total":
                    key = "dlq:" + sample.labels.get("error", "?")
                else:
                    continue
                out[key] = out.get(key, 0) + int(sample.value)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    async def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
        if self.processor is not None:
            self.processor.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 60)


def profile_top(profiler: cProfile.Profile, events: int, n: int = 15, dump: Path | None = None) -> list[dict]:
    if dump is not None:
        profiler.dump_stats(str(dump))
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename
        for marker in ("site-packages/", "/work/main/", "lib/python3"):
            if marker in short:
                short = short.split(marker, 1)[1]
                break
        rows.append(
            {
                "function": f"{short}:{line}({func})" if line else func,
                "ncalls": nc,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
                "own_us_per_event": round(tt / events * 1e6, 2) if events else None,
                "calls_per_event": round(nc / events, 3) if events else None,
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    # The event loop's epoll wait is time spent idle (waiting for Kafka/Redis), not work.
    return [r for r in rows if "select.epoll" not in r["function"]][:n]


def profile_idle_s(profiler: cProfile.Profile) -> float:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    return round(sum(v[2] for k, v in stats.stats.items() if "select.epoll" in k[2]), 3)  # type: ignore[attr-defined]


def profile_total_s(profiler: cProfile.Profile) -> float:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    return round(stats.total_tt, 3)  # type: ignore[attr-defined]
