"""The services a benchmark runs against: its own Kafka broker and Redis, or given ones."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from redis.asyncio import Redis

from compose.launcher import KafkaBroker, RedisServer, free_port, kafka_version


@dataclass
class Services:
    bootstrap: str
    redis_url: str
    kafka_version: str
    own: bool
    _broker: KafkaBroker | None = None
    _redis: RedisServer | None = None
    _tmp: Path | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
        if self._redis is not None:
            self._redis.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def start_services(bootstrap: str | None, redis_url: str | None) -> Services:
    """Start a broker and/or Redis (free ports, data in a temp dir) for what was not given."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    broker = redis = None
    try:
        if bootstrap is None:
            broker = KafkaBroker(port=free_port(), data_dir=tmp / "kafka", heap=("512m", "1g"))
            broker.start()
            bootstrap = broker.bootstrap
            version = broker.version
        else:
            version = f"external ({kafka_version() or 'unknown'} jars cached)"
        if redis_url is None:
            redis = RedisServer(
                port=free_port(), data_dir=tmp / "redis"
            )  # AOF everysec, as the launcher does
            redis.start()
            redis_url = redis.url
    except BaseException:
        if broker is not None:
            broker.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Services(bootstrap, redis_url, version, broker is not None, broker, redis, tmp)


async def redis_info(url: str) -> dict:
    r = Redis.from_url(url)
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
