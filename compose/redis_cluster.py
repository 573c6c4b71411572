"""A local Redis Cluster: Debian's ``redis-server`` nodes joined by ``redis-cli --cluster create``.

Three masters and one replica each by default, AOF everysec like the single node, and a
short ``cluster-node-timeout`` so a killed master's replica takes over in seconds::

    cluster = RedisCluster(ports=[7000, 7001, ...], data_dir=tmp / "cluster")
    cluster.start()            # blocks until every slot is served and every replica is in sync
    cluster.kill_node(cluster.master_ports()[0])
    cluster.wait_healthy()     # a replica took over
    cluster.stop()

A data folder that already holds a formed cluster (``nodes.conf``) is started again as it
was: nodes find each other from their own config, no new ``create``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis

from compose.cluster_slots import balance_partitions, parse_nodes
from compose.managed import RUN_DIR, LauncherError, free_port
from compose.redis_server import RedisServer, ensure_redis_server

log = logging.getLogger("compose.launcher")

SLOTS = 16384


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on 127.0.0.1."""

    def __init__(
        self,
        ports: list[int] | None = None,
        data_dir: Path | str = RUN_DIR / "redis-cluster",
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        bus_ports: list[int] | None = None,
        detached: bool = False,
    ) -> None:
        n = masters * (1 + replicas)
        if masters < 3:
            raise LauncherError("a Redis Cluster needs at least 3 masters")
        self.ports = list(ports) if ports else [free_port() for _ in range(n)]
        if len(self.ports) != n:
            raise LauncherError(f"{masters} masters with {replicas} replica(s) each need {n} ports")
        # The bus port defaults to port + 10000; free ports chosen by the OS may not leave that
        # free, so tests pass their own (cluster-port, Redis 7+).
        self.bus_ports = list(bus_ports) if bus_ports else [None] * n
        self.data_dir = Path(data_dir).resolve()
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: dict[int, RedisServer] = {
            port: self._make_node(port, bus, detached)
            for port, bus in zip(self.ports, self.bus_ports, strict=True)
        }
        self.start_seconds: float | None = None

    def _make_node(self, port: int, bus_port: int | None, detached: bool) -> RedisServer:
        """One node's server (a TLS cluster makes TLS-only nodes)."""
        return RedisServer(
            port=port,
            data_dir=self.data_dir / f"node-{port}",
            detached=detached,
            extra_args=self._node_args(bus_port),
        )

    def _node_args(self, bus_port: int | None) -> list[str]:
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # The other masters' slots stay served while one shard fails over.
            "--cluster-require-full-coverage", "no",
            "--maxmemory-policy", "noeviction",
            # A replica's first sync starts at once (default: 5 s wait for more replicas).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if bus_port is not None:
            args += ["--cluster-port", str(bus_port)]
        return args

    @classmethod
    def on_free_ports(cls, data_dir: Path | str, **kwargs) -> RedisCluster:
        """Client and bus ports all picked by the OS (tests)."""
        n = kwargs.get("masters", 3) * (1 + kwargs.get("replicas", 1))
        ports = _distinct_free_ports(2 * n)
        return cls(ports=ports[:n], bus_ports=ports[n:], data_dir=data_dir, **kwargs)

    # -- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """One node's URL: a cluster client discovers the rest (REDIS_URL with REDIS_CLUSTER=true)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    @property
    def version(self) -> str:
        return self.nodes[self.ports[0]].version

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def _ask(self, port: int, *command: str):
        with self._client(port) as client:
            return client.execute_command(*command)

    # -- life cycle -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes.values())

    def start(self, timeout: float = 90.0) -> None:
        t0 = time.monotonic()
        ensure_redis_server()
        formed = all((node.data_dir / "nodes.conf").exists() for node in self.nodes.values())
        for node in self.nodes.values():
            node.start(timeout)
        try:
            if not formed or self._known_nodes(self.ports[0]) < len(self.ports):
                self._create(t0 + timeout)
            self.wait_healthy(timeout=max(1.0, t0 + timeout - time.monotonic()))
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info(
            "Redis Cluster (%d masters, %d replica(s) each) on ports %s started in %.1f s",
            len(self.ports) // (1 + self.replicas),
            self.replicas,
            ",".join(map(str, self.ports)),
            self.start_seconds,
        )

    def _create(self, deadline: float) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise LauncherError(
                "redis-cli not found next to redis-server: install the Debian package "
                "redis-tools (or redis-server, which depends on it)"
            )
        cmd = [
            cli, *self._cli_args(), "--cluster", "create",
            *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=max(5.0, deadline - time.monotonic()),
            env=self._cli_env(),
        )
        if res.returncode != 0 or "[OK] All 16384 slots covered" not in res.stdout:
            raise LauncherError(
                f"`{' '.join(cmd)}` failed:\n{(res.stdout + res.stderr)[-3000:]}\n"
                f"(a data folder left by another cluster? remove {self.data_dir})"
            )

    def _cli_args(self) -> list[str]:
        """redis-cli's connection options (a TLS cluster adds its CA and user)."""
        return []

    def _cli_env(self) -> dict[str, str] | None:
        """redis-cli's environment (None: this process's; a TLS cluster adds REDISCLI_AUTH)."""
        return None

    def _known_nodes(self, port: int) -> int:
        info = self._cluster_info(port)
        return int(info.get("cluster_known_nodes", 0))

    def _cluster_info(self, port: int) -> dict[str, str]:
        raw = self._ask(port, "CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def topology(self) -> dict[int, list[int]]:
        """master port -> its replicas' ports, as a running node sees it (failed nodes left out)."""
        return _parse_topology(self._nodes_text())

    def _nodes_text(self) -> str:
        for port in self.ports:
            if self.nodes[port].running:
                raw = self._ask(port, "CLUSTER", "NODES")
                return raw.decode() if isinstance(raw, bytes) else str(raw)
        raise LauncherError("no Redis Cluster node is running")

    def master_ports(self) -> list[int]:
        return sorted(self.topology())

    def healthy(self) -> bool:
        """Every slot served by a live master, and every master with its replicas in sync."""
        try:
            for port in self.ports:
                if not self.nodes[port].running:
                    return False
                info = self._cluster_info(port)
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != SLOTS:
                    return False
            topology = self.topology()
            if len(topology) * (1 + self.replicas) != len(self.ports):
                return False
            for master, replicas in topology.items():
                if len(replicas) != self.replicas:
                    return False
                for replica in replicas:
                    repl = self._ask(replica, "INFO", "replication")
                    if repl.get("master_link_status") != "up" or repl.get("master_port") != master:
                        return False
        except (redis.RedisError, OSError, ValueError):
            return False
        return True

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Poll until healthy() (failover done, replicas in sync); returns the seconds it took."""
        t0 = time.monotonic()
        while not self.healthy():
            if time.monotonic() - t0 > timeout:
                raise LauncherError(f"the Redis Cluster on {self.ports} is not healthy after {timeout:.0f} s")
            time.sleep(0.1)
        return time.monotonic() - t0

    def wait_serving(self, timeout: float = 60.0) -> float:
        """Poll until every slot is served by a live master again (after a master died, its
        replica took over); replicas may still be missing or catching up. Returns the seconds."""
        t0 = time.monotonic()
        while True:
            live = [p for p in self.ports if self.nodes[p].running]
            try:
                owners = _slot_owners(self._nodes_text())
                infos = [self._cluster_info(p) for p in live]
                if (
                    owners
                    and all(port in live for port in owners)
                    and all(i.get("cluster_state") == "ok" for i in infos)
                ):
                    return time.monotonic() - t0
            except (redis.RedisError, OSError, ValueError, LauncherError):
                pass
            if time.monotonic() - t0 > timeout:
                raise LauncherError(
                    f"the Redis Cluster on {self.ports} serves not all slots in {timeout:.0f} s"
                )
            time.sleep(0.05)

    def balance_partitions(self, events_topic: str, partitions: int) -> dict[int, list[int]]:
        """Move the events partitions' slots until each master holds an equal share
        (compose/cluster_slots.py); returns master port -> partitions."""
        port = next(p for p in self.ports if self.nodes[p].running)
        spread = balance_partitions("127.0.0.1", port, events_topic, partitions)
        self.wait_healthy()
        return spread

    def kill_node(self, port: int) -> None:
        """SIGKILL one node: a crash, no shutdown."""
        self.nodes[port].kill()

    def start_node(self, port: int, timeout: float = 60.0) -> None:
        """Start a stopped node again with its data: a former master rejoins as a replica."""
        self.nodes[port].start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        for node in self.nodes.values():
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_topology(nodes_text: str) -> dict[int, list[int]]:
    """CLUSTER NODES -> {master port: [replica ports]}, leaving out nodes flagged fail."""
    live = [n for n in parse_nodes(nodes_text) if n.live]
    masters = {n.node_id: n.port for n in live if "master" in n.flags}
    out: dict[int, list[int]] = {port: [] for port in masters.values()}
    for n in live:
        if "slave" in n.flags and n.master_id in masters:
            out[masters[n.master_id]].append(n.port)
    return out


def _slot_owners(nodes_text: str) -> set[int]:
    """Ports of the masters holding slots (a failed master still holds them until replaced)."""
    return {n.port for n in parse_nodes(nodes_text) if "master" in n.flags and n.slots}


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
