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
                               [--redis-cluster] [--kafka-cluster] [--local]

``up`` starts what does not already answer on the ports, detached (the services outlive the
command), with pidfiles (one per service and port), logs and data under ``compose/.run/``.
``--redis-cluster`` starts a Redis Cluster on ports BASE..BASE+5 (``--redis-port BASE``,
default 7000; bus ports +10000) instead of the single Redis, and moves the slots of the events
partitions (``EVENTS_TOPIC``, ``TOPIC_PARTITIONS``) so each master holds an equal share;
``balance`` does that on a running cluster. ``--kafka-cluster`` starts three Kafka nodes
(compose/kafka_cluster.py: a 3-voter KRaft quorum, internal topics at replication 3,
min.insync.replicas 2) on ports KAFKA..KAFKA+2 (default 9092-9094) instead of the single
broker, always as local processes. ``down`` with the same ports
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
import signal
import sys

from compose.chromium import ensure_chromium
from compose.docker_compose import COMPOSE_FILE, docker_compose, docker_engine_available
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
from compose.kafka_cluster import KafkaCluster
from compose.managed import (
    COMPOSE_DIR,
    REPO_ROOT,
    RUN_DIR,
    LauncherError,
    ManagedProcess,
    free_port,
    port_answers,
)
from compose.pidfiles import (
    CLUSTER_BASE_PORT,
    KAFKA_CLUSTER_NODES,
    MARKERS,
    cluster_ports,
    pidfile,
    port_of,
    ports_of,
    read_pids,
    stop_pid,
)
from compose.redis_cluster import RedisCluster
from compose.redis_server import RedisServer, ensure_redis_server, redis_ping
from compose.secure_up import (
    SECURE_KAFKA_PORT,
    SECURE_REDIS_PORT,
    cmd_up_secure,
    events_partitions,
    secure_dir,
)
from compose.services import Services, start_services

__all__ = [
    "COMPOSE_DIR",
    "COMPOSE_FILE",
    "KAFKA_JARS_DIR",
    "KAFKA_POM",
    "REPO_ROOT",
    "RUN_DIR",
    "KafkaBroker",
    "KafkaCluster",
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
    "secure_dir",
    "start_services",
    "wait_for_kafka",
]

log = logging.getLogger("compose.launcher")


def cmd_up(
    kafka_port: int,
    redis_port: int | None,
    local: bool,
    redis_cluster: bool = False,
    kafka_cluster: bool = False,
) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    base = redis_port or (CLUSTER_BASE_PORT if redis_cluster else 6379)
    if kafka_cluster:
        local = True  # the cluster's nodes are local processes only
        kafka_ports = range(kafka_port, kafka_port + KAFKA_CLUSTER_NODES)
        busy = [p for p in kafka_ports if port_answers(p)]
        if busy:
            raise LauncherError(f"kafka-cluster: ports {busy} are taken: `down` first, or pick --kafka-port")
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
        kafka_nodes=KAFKA_CLUSTER_NODES if kafka_cluster else 1,
    )
    for note in svc.notes:
        print(note)
    if svc.kafka_cluster is not None:
        lines = "".join(f"{n.pid} {n.port}\n" for n in svc.kafka_cluster.nodes.values())
        pidfile("kafka-cluster", kafka_port).write_text(lines)
        print(f"kafka-cluster: KAFKA_BOOTSTRAP_SERVERS={svc.bootstrap} TOPIC_REPLICATION_FACTOR=3")
    for name, handle in (("kafka", svc.broker), ("redis", svc.redis)):
        if isinstance(handle, KafkaBroker | RedisServer):
            pidfile(name, handle.port).write_text(f"{handle.pid} {handle.port}\n")
    if svc.cluster is not None:
        lines = "".join(f"{n.pid} {n.port}\n" for n in svc.cluster.nodes.values())
        pidfile("redis-cluster", base).write_text(lines)
        _print_spread(svc.cluster.balance_partitions(*events_partitions()))
        url, folder = svc.cluster.url, svc.cluster.data_dir
        print(f"redis-cluster: REDIS_URL={url} REDIS_CLUSTER=true; data in {folder}")
    return 0


def _print_spread(spread: dict[int, list[int]]) -> None:
    topic, _ = events_partitions()
    shares = ", ".join(f"{port}: {parts}" for port, parts in sorted(spread.items()))
    print(f"redis-cluster: partitions of {topic} per master: {shares}")


def cmd_balance(redis_port: int | None) -> int:
    """Even out the events partitions over a running cluster's masters (EVENTS_TOPIC, TOPIC_PARTITIONS)."""
    from compose.cluster_slots import balance_partitions

    _print_spread(balance_partitions("127.0.0.1", redis_port or CLUSTER_BASE_PORT, *events_partitions()))
    return 0


def cmd_down(kafka_port: int | None, redis_port: int | None, local: bool) -> int:
    """Stop what `up` started on these ports: Kafka, the Redis on --redis-port (6379) and the
    cluster from --redis-port (7000); and the secured ones (9094, 6380 unless given)."""
    targets = [
        ("kafka", kafka_port or 9092),
        ("kafka-cluster", kafka_port or 9092),
        ("redis", redis_port or 6379),
        ("redis-cluster", redis_port or CLUSTER_BASE_PORT),
        ("kafka-secure", kafka_port or SECURE_KAFKA_PORT),
        ("redis-secure", redis_port or SECURE_REDIS_PORT),
    ]
    for name, port in targets:
        pids = read_pids(name, port, MARKERS[name])
        for pid in pids:  # a cluster's nodes all at once: the last alone would wait for its quorum
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        for pid in pids:
            print(f"{name}: stopping pid {pid}")
            stop_pid(pid)
        pidfile(name, port).unlink(missing_ok=True)
        _drop_legacy_lines(name, port)
    if not local and docker_engine_available():
        return docker_compose("--profile", "cluster", "down")
    return 0


def _drop_legacy_lines(name: str, port: int) -> None:
    legacy = RUN_DIR / f"{name}.pid"
    ports = ports_of(name, port)
    with contextlib.suppress(OSError):
        kept = [ln for ln in legacy.read_text().splitlines() if port_of(ln) not in ports]
        if kept:
            legacy.write_text("".join(f"{ln}\n" for ln in kept))
        else:
            legacy.unlink()


def cmd_status(
    kafka_port: int, redis_port: int | None, redis_cluster: bool = False, kafka_cluster: bool = False
) -> int:
    base = redis_port or (CLUSTER_BASE_PORT if redis_cluster else 6379)
    kafka_ports = list(range(kafka_port, kafka_port + KAFKA_CLUSTER_NODES)) if kafka_cluster else [kafka_port]
    checks = [("kafka-cluster" if kafka_cluster else "kafka", kafka_ports)]
    checks.append(("redis-cluster", cluster_ports(base)) if redis_cluster else ("redis", [base]))
    for name, ports in checks:
        pids = read_pids(name, ports[0], MARKERS[name])
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
    parser.add_argument(
        "--kafka-cluster",
        action="store_true",
        help="three Kafka nodes on --kafka-port and the next two (replication 3, min.insync.replicas 2)",
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
            up = (
                args.kafka_port or 9092,
                args.redis_port,
                args.local,
                args.redis_cluster,
                args.kafka_cluster,
            )
            return cmd_up(*up)
        if args.command == "down":
            return cmd_down(args.kafka_port, args.redis_port, args.local)
        if args.command == "balance":
            return cmd_balance(args.redis_port)
        if args.command == "status":
            status = (args.kafka_port or 9092, args.redis_port, args.redis_cluster, args.kafka_cluster)
            return cmd_status(*status)
        return cmd_ensure()
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
