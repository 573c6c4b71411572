"""Redis clients: one server or a Redis Cluster, packing commands with hiredis."""

from __future__ import annotations

import hiredis
from redis.asyncio import Connection, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection


class HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's per-argument Python loop.

    The asyncio client has no C packer of its own; a batch call carries one key per event,
    and packing them in Python cost more than the script itself.
    """

    def pack_command(self, *args):
        first = args[0]
        if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
            return super().pack_command(*args)  # 'CONFIG GET' and friends are split by redis-py
        return [hiredis.pack_command(args)]


class HiredisPackingConnection(HiredisPacking, Connection):
    """A TCP connection that packs with hiredis."""


class HiredisPackingSSLConnection(HiredisPacking, SSLConnection):
    """A TLS connection (rediss://) that packs with hiredis: TLS costs what TLS costs, no more."""


def connect(url: str, cluster: bool = False, **kwargs) -> Redis | RedisCluster:
    """A client for `url`; plain TCP connections pack commands with hiredis.

    With `cluster`, `url` names one node of a Redis Cluster and the client discovers the
    others (REDIS_CLUSTER=true); every script call names keys of one hash slot.
    """
    packing = _PACKING.get(url.split("://", 1)[0])
    if not cluster:
        client = Redis.from_url(url, **kwargs)
        if packing is not None and "connection_class" not in kwargs:
            # The URL's scheme chose the class (from_url lets it win); no connection made yet.
            client.connection_pool.connection_class = packing
        return client
    client = RedisCluster.from_url(url, **kwargs)
    if packing is not None:
        # RedisCluster takes no connection_class; its nodes (made now and when the cluster is
        # discovered) build connections from these kwargs, none made yet.
        client.get_connection_kwargs()["connection_class"] = packing
        for node in client.startup_nodes:
            node.connection_class = packing
    return client


_PACKING = {"redis": HiredisPackingConnection, "rediss": HiredisPackingSSLConnection}
