"""A local Apache Kafka cluster: three KRaft nodes (broker + controller each, a 3-voter static
quorum) from the same cached jars as the single broker, as production runs Kafka::

    cluster = KafkaCluster(data_dir=tmp / "kafka-cluster")   # free ports
    cluster.start()                  # blocks until every node is registered and unfenced
    cluster.bootstrap                # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    cluster.nodes[2].kill()          # SIGKILL one broker (stop(): SIGTERM; start(): back)
    cluster.stop()

Internal topics are created at replication 3 with min.insync.replicas 2, and so are topics a
client creates without a factor. Which node leads which partition and which one is a group's
coordinator: compose/kafka_roles.py.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compose.kafka_broker import (
    KAFKA_JARS_DIR,
    KafkaBroker,
    ensure_kafka_jars,
    kafka_broker_count,
    kafka_cluster_id,
)
from compose.managed import RUN_DIR, LauncherError, free_port

log = logging.getLogger("compose.launcher")

NODES = 3
REPLICATION = 3
MIN_INSYNC = 2


def cluster_properties(replication: int = REPLICATION, min_insync: int = MIN_INSYNC) -> dict[str, str]:
    """What each node adds to the single broker's properties: replicated internal topics."""
    return {
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_insync),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_insync),
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_insync),
        # A clean shutdown hands its leaderships over first (the rolling restart's SIGTERM).
        "controlled.shutdown.enable": "true",
    }


class KafkaCluster:
    """`NODES` combined KRaft nodes on 127.0.0.1; node ids 1..NODES, `nodes[id]` their handles."""

    def __init__(
        self,
        ports: list[int] | None = None,
        data_dir: Path | str = RUN_DIR / "kafka-cluster",
        controller_ports: list[int] | None = None,
        jars_dir: Path | str = KAFKA_JARS_DIR,
        heap: tuple[str, str] = ("192m", "512m"),
        detached: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.ports = list(ports) if ports else [free_port() for _ in range(NODES)]
        if len(self.ports) != NODES:
            raise LauncherError(f"a Kafka cluster here has {NODES} nodes: give {NODES} ports")
        ids = list(range(1, NODES + 1))
        folders = {i: self.data_dir / f"node-{i}" for i in ids}
        # The quorum's addresses are part of the formatted state: a restart keeps them.
        known = [_read_port(folders[i] / "controller.port") for i in ids]
        if controller_ports is None:
            controller_ports = [p or free_port() for p in known]
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in zip(ids, controller_ports, strict=True))
        cluster_id = _read_cluster_id(folders) or kafka_cluster_id()
        self.nodes: dict[int, KafkaBroker] = {
            i: KafkaBroker(
                port=port,
                data_dir=folders[i],
                controller_port=cport,
                jars_dir=jars_dir,
                heap=heap,
                detached=detached,
                extra_properties=cluster_properties(),
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
            )
            for i, port, cport in zip(ids, self.ports, controller_ports, strict=True)
        }
        self.start_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def version(self) -> str:
        return next(iter(self.nodes.values())).version

    @property
    def pids(self) -> dict[int, int | None]:
        return {i: node.pid for i, node in self.nodes.items()}

    def running_nodes(self) -> list[int]:
        return [i for i, node in self.nodes.items() if node.running]

    def start(self, timeout: float = 120.0) -> None:
        """Start every node at once (a quorum needs a majority to elect its leader), then wait
        until each one lists all of them."""
        ensure_kafka_jars(next(iter(self.nodes.values())).jars_dir)
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(NODES) as pool:
            starts = [pool.submit(node.start, timeout) for node in self.nodes.values()]
            errors = [f.exception() for f in starts]
        if any(errors):
            self.kill()
            raise LauncherError(f"the Kafka cluster did not start: {next(e for e in errors if e)}")
        self.wait_registered(time.monotonic() + timeout)
        self.start_seconds = time.monotonic() - t0
        log.info(
            "Kafka cluster of %d nodes at %s started in %.1f s", NODES, self.bootstrap, self.start_seconds
        )

    def wait_registered(self, deadline: float, nodes: int = NODES) -> None:
        """Until every running node's metadata lists `nodes` live brokers (registered, unfenced)."""
        last: object = None
        while time.monotonic() < deadline:
            try:
                counts = [kafka_broker_count("127.0.0.1", self.nodes[i].port) for i in self.running_nodes()]
                if counts and min(counts) >= nodes:
                    return
                last = counts
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise LauncherError(f"the Kafka cluster's nodes do not all list {nodes} brokers (last: {last!r})")

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start one stopped or killed node again (same ports, same data) and wait until it is
        registered again: every running node lists it."""
        self.nodes[node_id].start(timeout)
        self.wait_registered(time.monotonic() + timeout, nodes=len(self.running_nodes()))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once: one by one, the last would wait for a quorum gone with
        the others until its shutdown timed out."""
        for node in self.nodes.values():
            node._signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_cluster_id(folders: dict[int, Path]) -> str | None:
    """The id a node was formatted with (its meta.properties), so a restart keeps it."""
    for folder in folders.values():
        try:
            text = (folder / "kraft-logs" / "meta.properties").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    return None
