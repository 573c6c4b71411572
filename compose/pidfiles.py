"""The launcher's pidfiles: one per service and port, so `down` stops exactly what `up` started
there, and other ports' services (another engineer's, another run's) are never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from compose.managed import RUN_DIR, pid_alive, pid_cmdline

CLUSTER_BASE_PORT = 7000
CLUSTER_NODES = 6  # 3 masters + 3 replicas
KAFKA_CLUSTER_NODES = 3


def pidfile(name: str, port: int) -> Path:
    """One pidfile per service and port ("pid port" a line), so that engineers or runs using
    other ports in the same checkout never stop each other's services."""
    return RUN_DIR / f"{name}-{port}.pid"


def read_pids(name: str, port: int, marker: str) -> list[int]:
    """The pids of `name` started on `port` (a cluster: its first port) still running the
    expected program; also from the single `<name>.pid` an older launcher wrote."""
    lines: list[str] = []
    with contextlib.suppress(OSError):
        lines += pidfile(name, port).read_text().splitlines()
    ports = ports_of(name, port)
    with contextlib.suppress(OSError):
        lines += [ln for ln in (RUN_DIR / f"{name}.pid").read_text().splitlines() if port_of(ln) in ports]
    pids = []
    for line in lines:
        with contextlib.suppress(ValueError, IndexError):
            pid = int(line.split()[0])
            if pid_alive(pid) and marker in pid_cmdline(pid):
                pids.append(pid)
    return pids


def ports_of(name: str, port: int) -> set[int]:
    if name == "redis-cluster":
        return set(cluster_ports(port))
    if name == "kafka-cluster":
        return set(range(port, port + KAFKA_CLUSTER_NODES))
    return {port}


def port_of(line: str) -> int | None:
    try:
        return int(line.split()[1])
    except (ValueError, IndexError):
        return None


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)


MARKERS = {
    "kafka": "kafka.Kafka",
    "kafka-cluster": "kafka.Kafka",
    "redis": "redis-server",
    "redis-cluster": "redis-server",
    "kafka-secure": "kafka.Kafka",
    "redis-secure": "redis-server",
}


def cluster_ports(base: int) -> list[int]:
    return list(range(base, base + CLUSTER_NODES))
