"""Docker-less launcher for the local services: Apache Kafka (KRaft, single node) and Redis
(one server, or a 3 + 3 Redis Cluster).

One module per service: compose/kafka_broker.py (Apache Kafka from its Maven Central jars,
cached in ``compose/.cache/kafka-jars``), compose/redis_server.py (``redis-server`` from PATH),
compose/redis_cluster.py (nodes joined with ``redis-cli --cluster create``),
compose/docker_compose.py and compose/containers.py (the Docker paths); compose/services.py
starts any of them, the one way every caller does. This module is the command line, and
re-exports what tests, the demo and the bench import.

Library use (tests, demo, bench)::

    from compose.launcher import start_services

    with start_services(kafka=True, redis=True, cluster=False) as svc:  # free ports, temp dir
        svc.bootstrap, svc.redis_url     # svc.broker / svc.redis: handles (kill, restart...)

Command line::

    python -m compose.launcher up|down|status|ensure|balance [--kafka-port 9092] [--redis-port 6379]
                               [--redis-cluster] [--local]

``up`` starts what does not already answer on the ports, detached (the services outlive the
command), with pidfiles (one per service and port), logs and data under ``compose/.run/``.
``--redis-cluster`` starts a Redis Cluster on ports BASE..BASE+5 (``--redis-port BASE``,
default 7000; bus ports +10000) instead of the single Redis, and moves the slots of the events
partitions (``EVENTS_TOPIC``, ``TOPIC_PARTITIONS``) so each master holds an equal share;
``balance`` does that on a running cluster. ``down`` with the same ports
stops what ``up`` started there.
``up --secure`` starts the secured services instead (compose/secure_services.py): Kafka with
SASL_SSL on --kafka-port (default 9094; mutual TLS on +1, a hostname-mismatch listener on +2),
ACLs on, the contract's topics and ACLs made; Redis with TLS only on --redis-port (default
6380) and ACL users. A new throwaway CA and new passwords every start, under
``compose/.run/secure/`` (``processor.env``, ``gateway.env``, ``services.json``); ``down`` stops
them too. With a Docker engine answering, ``up``/``down`` use
``docker compose`` (compose/docker-compose.yml) unless ``--local`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from compose.chromium import ensure_chromium
from compose.docker_compose import COMPOSE_FILE, docker_compose, docker_engine_available
from compose.kafka_acls import Topics
from compose.kafka_broker import (
    KAFKA_JARS_DIR,
    KAFKA_POM,
    KafkaBroker,
    ensure_kafka_jars,
    find_java,
    kafka_broker_count,
    kafka_version,
    wait_for_kafka,
)
from compose.managed import (
    COMPOSE_DIR,
    REPO_ROOT,
    RUN_DIR,
    LauncherError,
    ManagedProcess,
    free_port,
    pid_alive,
    pid_cmdline,
    port_answers,
)
from compose.redis_cluster import RedisCluster
from compose.redis_server import RedisServer, ensure_redis_server, redis_ping
from compose.secure_services import start_secure_services
from compose.services import Services, start_services

__all__ = [
    "COMPOSE_DIR",
    "COMPOSE_FILE",
    "KAFKA_JARS_DIR",
    "KAFKA_POM",
    "REPO_ROOT",
    "RUN_DIR",
    "KafkaBroker",
    "LauncherError",
    "ManagedProcess",
    "RedisCluster",
    "RedisServer",
    "Services",
    "docker_engine_available",
    "ensure_kafka_jars",
    "ensure_redis_server",
    "find_java",
    "free_port",
    "kafka_broker_count",
    "kafka_version",
    "main",
    "port_answers",
    "redis_ping",
    "start_services",
    "wait_for_kafka",
]

log = logging.getLogger("compose.launcher")

CLUSTER_BASE_PORT = 7000
CLUSTER_NODES = 6  # 3 masters + 3 replicas


def _pidfile(name: str, port: int) -> Path:
    """One pidfile per service and port ("pid port" a line), so that engineers or runs using
    other ports in the same checkout never stop each other's services."""
    return RUN_DIR / f"{name}-{port}.pid"


def _read_pids(name: str, port: int, marker: str) -> list[int]:
    """The pids of `name` started on `port` (a cluster: its first port) still running the
    expected program; also from the single `<name>.pid` an older launcher wrote."""
    lines: list[str] = []
    with contextlib.suppress(OSError):
        lines += _pidfile(name, port).read_text().splitlines()
    ports = set(_cluster_ports(port)) if name == "redis-cluster" else {port}
    with contextlib.suppress(OSError):
        lines += [ln for ln in (RUN_DIR / f"{name}.pid").read_text().splitlines() if _port_of(ln) in ports]
    pids = []
    for line in lines:
        with contextlib.suppress(ValueError, IndexError):
            pid = int(line.split()[0])
            if pid_alive(pid) and marker in pid_cmdline(pid):
                pids.append(pid)
    return pids


def _port_of(line: str) -> int | None:
    try:
        return int(line.split()[1])
    except (ValueError, IndexError):
        return None


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
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


_MARKERS = {
    "kafka": "kafka.Kafka",
    "redis": "redis-server",
    "redis-cluster": "redis-server",
    "kafka-secure": "kafka.Kafka",
    "redis-secure": "redis-server",
}
SECURE_KAFKA_PORT = 9094  # SASL_SSL; +1 mutual TLS, +2 hostname mismatch
SECURE_REDIS_PORT = 6380
SECURE_DIR = RUN_DIR / "secure"


def secure_dir(kafka_port: int) -> Path:
    """Where ``up --secure`` on this port keeps its CA, passwords and data (``secure/`` for the
    default port), so runs on other ports never replace each other's credentials."""
    return SECURE_DIR if kafka_port == SECURE_KAFKA_PORT else RUN_DIR / f"secure-{kafka_port}"


def _cluster_ports(base: int) -> list[int]:
    return list(range(base, base + CLUSTER_NODES))


def cmd_up(kafka_port: int, redis_port: int | None, local: bool, redis_cluster: bool = False) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    base = redis_port or (CLUSTER_BASE_PORT if redis_cluster else 6379)
    svc = start_services(
        kafka=True,
        redis=not redis_cluster,
        cluster=redis_cluster,
        data_dir=RUN_DIR,
        kafka_port=kafka_port,
        redis_port=base,
        cluster_port=base,
        reuse=True,  # what already answers on the ports is left alone
        backend="local" if local or not docker_engine_available() else "compose",
        detached=True,  # the services outlive this command
    )
    for note in svc.notes:
        print(note)
    for name, handle in (("kafka", svc.broker), ("redis", svc.redis)):
        if isinstance(handle, KafkaBroker | RedisServer):
            _pidfile(name, handle.port).write_text(f"{handle.pid} {handle.port}\n")
    if svc.cluster is not None:
        lines = "".join(f"{n.pid} {n.port}\n" for n in svc.cluster.nodes.values())
        _pidfile("redis-cluster", base).write_text(lines)
        _print_spread(svc.cluster.balance_partitions(*_events_partitions()))
        url, folder = svc.cluster.url, svc.cluster.data_dir
        print(f"redis-cluster: REDIS_URL={url} REDIS_CLUSTER=true; data in {folder}")
    return 0


def cmd_up_secure(kafka_port: int | None, redis_port: int | None) -> int:
    """Start the secured Kafka and Redis detached, make the contract's topics and ACLs, and print
    the settings a processor and a gateway need (paths to the password files, never a password)."""
    kafka_port, redis_port = kafka_port or SECURE_KAFKA_PORT, redis_port or SECURE_REDIS_PORT
    folder = secure_dir(kafka_port)
    running = _read_pids("kafka-secure", kafka_port, _MARKERS["kafka-secure"])
    running += _read_pids("redis-secure", redis_port, _MARKERS["redis-secure"])
    if running:
        print(f"secured services already run (pids {running}); `make services-down` first for new ones")
        _print_secure_env(folder)
        return 0
    busy = [p for p in (kafka_port, kafka_port + 1, kafka_port + 2, redis_port) if port_answers(p)]
    if busy:
        raise LauncherError(f"ports {busy} are taken: choose others with --kafka-port / --redis-port")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)  # throwaway CA and passwords: new every start
    _, partitions = _events_partitions()
    svc = start_secure_services(
        folder,
        kafka_port=kafka_port,
        mtls_port=kafka_port + 1,
        mismatch_port=kafka_port + 2,
        redis_port=redis_port,
        contract_topics=_contract_topics(),
        partitions=partitions,
        detached=True,
    )
    assert svc.broker is not None and svc.redis is not None
    _pidfile("kafka-secure", kafka_port).write_text(f"{svc.broker.pid} {kafka_port}\n")
    _pidfile("redis-secure", redis_port).write_text(f"{svc.redis.pid} {redis_port}\n")
    svc.write_env_files()
    print(
        f"kafka (secured): SASL_SSL {svc.bootstrap} (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), mutual TLS "
        f"{svc.mtls_bootstrap}, hostname mismatch {svc.mismatch_bootstrap}; users admin, processor, "
        f"gateway, processor-nowrite; the contract's topics and ACLs made"
    )
    print(f"redis (secured): TLS only {svc.redis_url}; users admin, processor, gateway; default off")
    _print_secure_env(folder)
    return 0


def _print_secure_env(folder: Path) -> None:
    for user in ("processor", "gateway"):
        env_file = folder / f"{user}.env"
        print(f"# {user}: set -a; . {env_file}; set +a")
        with contextlib.suppress(OSError):
            print(env_file.read_text(), end="")
    print(f"# addresses, CA, client certificate and password files: {folder / 'services.json'}")


def _contract_topics() -> Topics:
    """The topic and group names the processor and the gateway will use (their settings' names)."""
    env, d = os.environ, Topics()
    return Topics(
        events=env.get("EVENTS_TOPIC", d.events),
        verdicts=env.get("VERDICTS_TOPIC", d.verdicts),
        dlq=env.get("DLQ_TOPIC", d.dlq),
        policies=env.get("POLICIES_TOPIC", d.policies),
        replies=env.get("GATEWAY_REPLIES_TOPIC", d.replies),
        processor_group=env.get("CONSUMER_GROUP", d.processor_group),
        gateway_group=env.get("GATEWAY_CONSUMER_GROUP", d.gateway_group),
    )


def _events_partitions() -> tuple[str, int]:
    """The events topic and partition count the processor will use (its own settings' names)."""
    return os.environ.get("EVENTS_TOPIC", "playback.events"), int(os.environ.get("TOPIC_PARTITIONS", "12"))


def _print_spread(spread: dict[int, list[int]]) -> None:
    topic, _ = _events_partitions()
    shares = ", ".join(f"{port}: {parts}" for port, parts in sorted(spread.items()))
    print(f"redis-cluster: partitions of {topic} per master: {shares}")


def cmd_balance(redis_port: int | None) -> int:
    """Even out the events partitions over a running cluster's masters (EVENTS_TOPIC, TOPIC_PARTITIONS)."""
    from compose.cluster_slots import balance_partitions

    _print_spread(balance_partitions("127.0.0.1", redis_port or CLUSTER_BASE_PORT, *_events_partitions()))
    return 0


def cmd_down(kafka_port: int | None, redis_port: int | None, local: bool) -> int:
    """Stop what `up` started on these ports: Kafka, the Redis on --redis-port (6379) and the
    cluster from --redis-port (7000); and the secured ones (9094, 6380 unless given)."""
    targets = [
        ("kafka", kafka_port or 9092),
        ("redis", redis_port or 6379),
        ("redis-cluster", redis_port or CLUSTER_BASE_PORT),
        ("kafka-secure", kafka_port or SECURE_KAFKA_PORT),
        ("redis-secure", redis_port or SECURE_REDIS_PORT),
    ]
    for name, port in targets:
        for pid in _read_pids(name, port, _MARKERS[name]):
            print(f"{name}: stopping pid {pid}")
            _stop_pid(pid)
        _pidfile(name, port).unlink(missing_ok=True)
        _drop_legacy_lines(name, port)
    if not local and docker_engine_available():
        return docker_compose("--profile", "cluster", "down")
    return 0


def _drop_legacy_lines(name: str, port: int) -> None:
    legacy = RUN_DIR / f"{name}.pid"
    ports = set(_cluster_ports(port)) if name == "redis-cluster" else {port}
    with contextlib.suppress(OSError):
        kept = [ln for ln in legacy.read_text().splitlines() if _port_of(ln) not in ports]
        if kept:
            legacy.write_text("".join(f"{ln}\n" for ln in kept))
        else:
            legacy.unlink()


def cmd_status(kafka_port: int, redis_port: int | None, redis_cluster: bool = False) -> int:
    base = redis_port or (CLUSTER_BASE_PORT if redis_cluster else 6379)
    checks = [("kafka", [kafka_port])]
    checks.append(("redis-cluster", _cluster_ports(base)) if redis_cluster else ("redis", [base]))
    for name, ports in checks:
        pids = _read_pids(name, ports[0], _MARKERS[name])
        owner = f"launcher pid {', '.join(map(str, pids))}" if pids else "not started by the launcher"
        answering = [p for p in ports if port_answers(p)]
        answers = "answers" if len(answering) == len(ports) else f"{len(answering)} of {len(ports)} listening"
        print(f"{name}: 127.0.0.1:{','.join(map(str, ports))} {answers} ({owner})")
    return 0


def cmd_ensure() -> int:
    redis = ensure_redis_server()
    jars = ensure_kafka_jars()
    find_java()
    browser, driver = ensure_chromium()  # the support console's browser tests
    print(f"redis-server: {redis}")
    print(f"chromium:     {browser} (driver {driver})")
    print(f"kafka jars:   {jars} (Apache Kafka {kafka_version(jars)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "ensure", "balance"])
    parser.add_argument(
        "--kafka-port", type=int, default=None, help="Kafka port (default 9092; with --secure 9094)"
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=None,
        help="Redis port (default 6379; with --secure 6380), or the cluster's first (7000)",
    )
    parser.add_argument(
        "--redis-cluster", action="store_true", help="a Redis Cluster (3 masters + 3 replicas), not one Redis"
    )
    parser.add_argument("--local", action="store_true", help="local processes even when Docker answers")
    parser.add_argument(
        "--secure", action="store_true", help="up: SASL_SSL Kafka with ACLs and TLS-only Redis with ACL users"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "up" and args.secure:
            return cmd_up_secure(args.kafka_port, args.redis_port)
        if args.command == "up":
            return cmd_up(args.kafka_port or 9092, args.redis_port, args.local, args.redis_cluster)
        if args.command == "down":
            return cmd_down(args.kafka_port, args.redis_port, args.local)
        if args.command == "balance":
            return cmd_balance(args.redis_port)
        if args.command == "status":
            return cmd_status(args.kafka_port or 9092, args.redis_port, args.redis_cluster)
        return cmd_ensure()
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
