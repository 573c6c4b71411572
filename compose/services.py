"""The one way to start the local services: Kafka (KRaft, one node) and Redis (one server, a
Redis Cluster, or both), for ``python -m compose.launcher up``, the demo, the bench and the
tests::

    with start_services(kafka=True, redis=True) as svc:   # free ports, data in a temp dir
        svc.bootstrap, svc.redis_url, svc.cluster_url
        svc.broker, svc.redis, svc.cluster                # handles: kill, restart, nodes...

A service given by address (``bootstrap=``, ``redis_url=``, ``cluster_url=``) is used as is;
with ``reuse=True`` one that already answers on its fixed port is too; a handle is None for
those. ``stop()`` stops only what this call started, in reverse order, and removes a temp
data dir. Backends: ``"local"`` processes (compose/kafka_broker.py, redis_server.py,
redis_cluster.py), ``"containers"`` (testcontainers on free ports, compose/containers.py; a
cluster stays local processes), ``"compose"`` (``docker compose`` on the fixed ports of
compose/docker-compose.yml).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compose.containers import KafkaContainer, RedisContainer
from compose.docker_compose import docker_compose
from compose.kafka_broker import KafkaBroker, ensure_kafka_jars
from compose.kafka_cluster import KafkaCluster
from compose.managed import LauncherError, free_port, port_answers
from compose.redis_cluster import RedisCluster
from compose.redis_server import RedisServer

BACKENDS = ("local", "containers", "compose")
CLUSTER_NODES = 6  # 3 masters + 3 replicas
COMPOSE_PORTS = {"kafka": 9092, "redis": 6379, "cluster": 7000}  # compose/docker-compose.yml
COMPOSE_CLUSTER_NODES = [f"redis-node-{i}" for i in range(1, CLUSTER_NODES + 1)]


def _local_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


@dataclass
class Services:
    """What `start_services` started or found; `notes` say which was which, one line each."""

    bootstrap: str | None = None
    redis_url: str | None = None
    cluster_url: str | None = None
    broker: KafkaBroker | KafkaContainer | None = None
    kafka_cluster: KafkaCluster | None = None
    redis: RedisServer | RedisContainer | None = None
    cluster: RedisCluster | None = None
    notes: list[str] = field(default_factory=list)
    _stops: list[Callable[[], object]] = field(default_factory=list, repr=False)

    @property
    def kafka_version(self) -> str | None:
        return self.broker.version if self.broker is not None else None

    def stop(self) -> None:
        """Stop what was started here (last first); every stop runs even if one fails."""
        stops, self._stops = self._stops, []
        errors = []
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - the others must still stop
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_services(
    kafka: bool = True,
    redis: bool = True,
    cluster: bool = False,
    *,
    data_dir: Path | str | None = None,
    kafka_port: int | None = None,
    redis_port: int | None = None,
    cluster_port: int | None = None,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    cluster_url: str | None = None,
    reuse: bool = False,
    backend: str = "local",
    detached: bool = False,
    kafka_heap: tuple[str, str] | None = None,
    cluster_replicas: int = 1,
    kafka_nodes: int = 1,
) -> Services:
    """Start the services asked for (see the module's doc) and return their handle.

    Ports default to free ones (the cluster's client and bus ports too); `cluster_port` is
    the first of six consecutive ports. `data_dir` holds one folder per service and port
    (``kafka-<port>``, ``redis-<port>``, ``redis-cluster-<port>``); without it a temp dir is
    used and removed at stop. `detached` services outlive this process (``up``) and are not
    stopped by `stop()`. On a failure, whatever was started is stopped before it raises.
    `kafka_nodes=3` starts a 3-node Kafka cluster (compose/kafka_cluster.py, local processes,
    data in ``kafka-cluster-<port>``, `kafka_port` the first of three consecutive ports).
    """
    if backend not in BACKENDS:
        raise LauncherError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    svc = Services(bootstrap=bootstrap, redis_url=redis_url, cluster_url=cluster_url)
    for name, given in (("kafka", bootstrap), ("redis", redis_url), ("cluster", cluster_url)):
        if given:
            svc.notes.append(f"{name}: given, {given}")
    want = {
        "kafka": kafka and not bootstrap,
        "redis": redis and not redis_url,
        "cluster": cluster and not cluster_url,
    }
    ports = {"kafka": kafka_port, "redis": redis_port, "cluster": cluster_port}
    if backend == "compose":
        ports = {k: v or COMPOSE_PORTS[k] for k, v in ports.items()}
    if reuse:
        _reuse_answering(svc, want, ports)
    tmp = None
    if data_dir is None and backend != "compose":
        tmp = Path(tempfile.mkdtemp(prefix="services-"))
        svc._stops.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    root = Path(data_dir) if data_dir is not None else tmp
    try:
        if backend == "compose":
            _compose_up(svc, want, ports, detached)
        else:
            assert root is not None
            if want["kafka"] and kafka_nodes > 1:
                want["kafka"] = False
                _start_kafka_cluster(svc, ports["kafka"], root, detached)
            _start_processes(svc, want, ports, root, backend, detached, kafka_heap, cluster_replicas)
    except BaseException:
        svc.stop()
        raise
    return svc


def _reuse_answering(svc: Services, want: dict[str, bool], ports: dict[str, int | None]) -> None:
    """A fixed port that answers already is used as is; a cluster half there is an error."""
    if want["kafka"] and ports["kafka"] and port_answers(ports["kafka"]):
        want["kafka"] = False
        svc.bootstrap = f"127.0.0.1:{ports['kafka']}"
        svc.notes.append(f"kafka: something already answers on {svc.bootstrap}, leaving it alone")
    if want["redis"] and ports["redis"] and port_answers(ports["redis"]):
        want["redis"] = False
        svc.redis_url = _local_url(ports["redis"])
        svc.notes.append(f"redis: something already answers on 127.0.0.1:{ports['redis']}, leaving it alone")
    base = ports["cluster"]
    if want["cluster"] and base:
        cluster_ports = list(range(base, base + CLUSTER_NODES))
        busy = [p for p in cluster_ports if port_answers(p)]
        if busy and len(busy) < len(cluster_ports):
            free = sorted(set(cluster_ports) - set(busy))
            raise LauncherError(f"redis-cluster: ports {busy} are taken but not {free}: pick other ports")
        if busy:
            want["cluster"] = False
            svc.cluster_url = _local_url(base)
            svc.notes.append(
                f"redis-cluster: something already answers on 127.0.0.1:{base}-{base + CLUSTER_NODES - 1}, "
                "leaving it alone"
            )


def _start_processes(
    svc: Services,
    want: dict[str, bool],
    ports: dict[str, int | None],
    root: Path,
    backend: str,
    detached: bool,
    kafka_heap: tuple[str, str] | None,
    cluster_replicas: int,
) -> None:
    containers = backend == "containers"
    if want["kafka"]:
        if containers:
            broker: KafkaBroker | KafkaContainer = KafkaContainer()
        else:
            ensure_kafka_jars()
            port = ports["kafka"] or free_port()
            heap = {"heap": kafka_heap} if kafka_heap else {}
            broker = KafkaBroker(port=port, data_dir=root / f"kafka-{port}", detached=detached, **heap)
        _start(svc, broker, detached)
        svc.broker, svc.bootstrap = broker, broker.bootstrap
        svc.notes.append(
            f"kafka: Apache Kafka {broker.version} started at {broker.bootstrap} in "
            f"{broker.start_seconds:.1f} s ({_where(broker)})"
        )
    if want["redis"]:
        if containers:
            server: RedisServer | RedisContainer = RedisContainer()
        else:
            port = ports["redis"] or free_port()
            server = RedisServer(port=port, data_dir=root / f"redis-{port}", detached=detached)
        _start(svc, server, detached)
        svc.redis, svc.redis_url = server, server.url
        svc.notes.append(f"redis: started at {server.url} in {server.start_seconds:.2f} s ({_where(server)})")
    if want["cluster"]:
        base = ports["cluster"]
        if base:
            nodes = list(range(base, base + 3 * (1 + cluster_replicas)))
            folder = root / f"redis-cluster-{base}"
            rc = RedisCluster(ports=nodes, data_dir=folder, replicas=cluster_replicas, detached=detached)
        else:
            first = free_port()  # only a name for its folder: the nodes get ports of their own
            rc = RedisCluster.on_free_ports(root / f"redis-cluster-{first}", replicas=cluster_replicas)
        _start(svc, rc, detached)
        svc.cluster, svc.cluster_url = rc, rc.url
        svc.notes.append(
            f"redis-cluster: {len(rc.master_ports())} masters, {rc.replicas} replica(s) each, on "
            f"127.0.0.1:{','.join(map(str, rc.ports))}, started in {rc.start_seconds:.1f} s"
        )


def _start_kafka_cluster(svc: Services, first_port: int | None, root: Path, detached: bool) -> None:
    ensure_kafka_jars()
    first = first_port or free_port()  # without a port: a name for its folder, free ports for the nodes
    ports = [first, first + 1, first + 2] if first_port else None
    kc = KafkaCluster(ports=ports, data_dir=root / f"kafka-cluster-{first}", detached=detached)
    _start(svc, kc, detached)
    svc.kafka_cluster, svc.bootstrap = kc, kc.bootstrap
    svc.notes.append(
        f"kafka-cluster: Apache Kafka {kc.version}, 3 nodes at {kc.bootstrap} (pids "
        f"{', '.join(map(str, kc.pids.values()))}), started in {kc.start_seconds:.1f} s"
    )


def _where(handle: object) -> str:
    if isinstance(handle, KafkaContainer | RedisContainer):
        return "container"
    return f"pid {handle.pid}, data in {handle.data_dir}"  # type: ignore[attr-defined]


def _start(svc: Services, handle, detached: bool) -> None:
    # Registered before start: a start that fails half-way still has what it began stopped.
    if not detached:
        svc._stops.append(handle.stop)
    handle.start()


def _compose_up(svc: Services, want: dict[str, bool], ports: dict[str, int | None], detached: bool) -> None:
    """`docker compose up -d --wait` the wanted services (on the compose file's fixed ports)."""
    if any(ports[k] != COMPOSE_PORTS[k] for k in ("kafka", "redis", "cluster") if want[k]):
        raise LauncherError(
            f"docker compose publishes the fixed ports {COMPOSE_PORTS}; use the local backend for others"
        )
    names = (["kafka"] if want["kafka"] else []) + (["redis"] if want["redis"] else [])
    profile = ["--profile", "cluster"] if want["cluster"] else []
    names += COMPOSE_CLUSTER_NODES if want["cluster"] else []
    if not names:
        return
    if not detached:
        svc._stops.append(lambda: docker_compose(*profile, "stop", *names))
    if docker_compose(*profile, "up", "-d", "--wait", *names) != 0:
        raise LauncherError(f"`docker compose up {' '.join(names)}` failed")
    if want["cluster"] and docker_compose(*profile, "run", "--rm", "redis-cluster-create") != 0:
        raise LauncherError("`docker compose run redis-cluster-create` failed")
    if want["kafka"]:
        svc.bootstrap = f"127.0.0.1:{COMPOSE_PORTS['kafka']}"
    if want["redis"]:
        svc.redis_url = _local_url(COMPOSE_PORTS["redis"])
    if want["cluster"]:
        svc.cluster_url = _local_url(COMPOSE_PORTS["cluster"])
    svc.notes.append(f"docker compose: {', '.join(names)} up")
