"""A Redis Cluster over TLS with ACL users: compose/redis_cluster.py's cluster of
compose/redis_secure.py's nodes.

Every node listens on TLS only; the cluster bus and replication are TLS too (``tls-cluster``,
``tls-replication``), and replicas authenticate to their master as ``admin`` (``default`` is
off; the password in a node's config file, not on its command line). Each node loads the
same users as the single secured Redis, plus what the cluster client needs
(compose/redis_acls.py, ``CLUSTER_CLIENT_COMMANDS``)::

    cluster = SecureRedisCluster.on_free_ports(tmp / "cluster", pki=pki, passwords=passwords)
    cluster.start()
    cluster.url_for("processor")      # rediss://processor@127.0.0.1:P/0 (REDIS_CLUSTER=true)

The launcher's slot balancing (``balance_partitions``) speaks plain TCP and is not offered here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import redis

from compose.certs import Pki
from compose.managed import RUN_DIR, LauncherError
from compose.redis_cluster import RedisCluster
from compose.redis_secure import SecureRedisServer

ADMIN = "admin"


class SecureRedisCluster(RedisCluster):
    """``masters`` masters with ``replicas`` replicas each, TLS everywhere, ACL users on."""

    def __init__(
        self,
        pki: Pki,
        passwords: Mapping[str, str],
        ports: list[int] | None = None,
        data_dir: Path | str = RUN_DIR / "redis-cluster-secure",
        **kwargs,
    ) -> None:
        # set before the base class makes the nodes (_make_node reads them)
        self.pki = pki
        self.passwords = dict(passwords)
        super().__init__(ports=ports, data_dir=data_dir, **kwargs)

    def _make_node(self, port: int, bus_port: int | None, detached: bool) -> SecureRedisServer:
        # replicas log in as admin: SecureRedisServer(cluster=True) writes masteruser/masterauth
        tls_cluster = ["--tls-cluster", "yes", "--tls-replication", "yes"]
        return SecureRedisServer(
            self.pki,
            self.passwords,
            port=port,
            data_dir=self.data_dir / f"node-{port}",
            detached=detached,
            extra_args=[*self._node_args(bus_port), *tls_cluster],
            cluster=True,
        )

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.ports[0]}/0"

    def url_for(self, user: str) -> str:
        """One node's URL with the user (the password comes from REDIS_PASSWORD_FILE)."""
        return f"rediss://{user}@127.0.0.1:{self.ports[0]}/0"

    def node_url(self, port: int) -> str:
        return f"rediss://127.0.0.1:{port}/0"

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            username=ADMIN,
            password=self.passwords[ADMIN],
            ssl=True,
            ssl_ca_certs=str(self.pki.ca_file),
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def _cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.pki.ca_file), "--user", ADMIN]

    def _cli_env(self) -> dict[str, str]:
        # the password through the environment: a command line shows in `ps`
        return {**os.environ, "REDISCLI_AUTH": self.passwords[ADMIN]}

    def balance_partitions(self, events_topic: str, partitions: int) -> dict[int, list[int]]:
        raise LauncherError("slot balancing speaks plain TCP: not offered on the TLS cluster")
