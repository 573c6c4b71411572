"""The services a benchmark runs against (its own Kafka broker and Redis, or given ones, from
the launcher's start_services), and the machine and Redis it describes in its report."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import psutil

from bench.access import bench_redis
from compose.launcher import Services, kafka_version, start_services

BENCH_KAFKA_HEAP = ("512m", "1g")  # more than the launcher's default: the data sets are large


def start_bench_services(bootstrap: str | None, redis_url: str | None) -> Services:
    """A broker and/or Redis (free ports, data in a temp dir) for what was not given."""
    return start_services(bootstrap=bootstrap, redis_url=redis_url, kafka_heap=BENCH_KAFKA_HEAP)


def kafka_label(svc: Services) -> str:
    """The Kafka version for the report: the started broker's, or the cached jars' for a given one."""
    return svc.kafka_version or f"external ({kafka_version() or 'unknown'} jars cached)"


async def redis_info(url: str) -> dict:
    r = bench_redis(url)
    try:
        server = await r.info("server")
        persistence = await r.info("persistence")
        return {
            "redis_version": server.get("redis_version"),
            "aof_enabled": persistence.get("aof_enabled"),
            "appendfsync": (await r.config_get("appendfsync")).get("appendfsync"),
        }
    finally:
        await r.aclose()


def machine_info() -> dict:
    vm = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_total_mb": round(vm.total / 2**20),
        "memory_available_mb": round(vm.available / 2**20),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
    }
