"""Checks on the Redis the processor is about to write leases to, run once at start.

They ask with the least a Redis ACL user needs: INFO (a refused INFO is logged and the check
skipped, never a crash), never CONFIG (a user allowed CONFIG GET can read `requirepass`).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from processor.config import Settings
from processor.connections import RedisAccess
from processor.lease_store import partition_slot

log = logging.getLogger("processor")

SAFE_POLICY = "noeviction"


class UnsafeRedisError(RuntimeError):
    """Redis may drop lease state on its own: starting would risk granting streams twice."""


class RedisModeError(RuntimeError):
    """REDIS_CLUSTER does not match the Redis that REDIS_URL names."""


class RedisAccessError(RuntimeError):
    """Redis refuses this client (TLS or login): one line that says which, and what to do."""


async def check_redis_login(redis: Redis | RedisCluster, access: RedisAccess) -> None:
    """Open one connection as every call will (TLS, AUTH); RedisAccessError when Redis refuses
    it. An unreachable Redis raises redis' ConnectionError, which the caller waits out."""
    where = f"Redis at {access.url}"  # the URL holds no password (the settings took it out)
    try:
        if isinstance(redis, RedisCluster):
            await redis.initialize()
        else:
            connection = await redis.connection_pool.get_connection()
            await redis.connection_pool.release(connection)
    except AuthenticationError as exc:
        raise RedisAccessError(
            f"{where} refused the login of user {access.user!r} ({str(exc).splitlines()[0][:120]}): a "
            "wrong password or an unknown or disabled user; check REDIS_URL and REDIS_PASSWORD_FILE"
        ) from None
    except NoPermissionError as exc:
        raise RedisAccessError(
            f"Redis user {access.user!r} at {access.url} may not run a command the client needs ({exc}): "
            "see docs/security.md for the user's command list"
        ) from None
    except RedisConnectionError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            why = (
                "presented a certificate for another name"
                if "mismatch" in text.lower()
                else ("presented a certificate that is not trusted")
            )
            raise RedisAccessError(
                f"{where} {why} ({_ssl_reason(text)}): set REDIS_SSL_CA_FILE to the PEM of the CA "
                "that signed it"
            ) from None
        if "SSL" in text or "TLS" in text:
            raise RedisAccessError(
                f"the TLS handshake with {where} failed ({_ssl_reason(text)}): check rediss:// against the "
                "server, and REDIS_SSL_CERT_FILE/REDIS_SSL_KEY_FILE if it asks for a client certificate"
            ) from None
        raise


def _ssl_reason(text: str) -> str:
    return text.split("] ", 1)[-1].splitlines()[0][:160]


async def check_redis_mode(redis: Redis | RedisCluster, cluster: bool) -> None:
    """Refuse a cluster node without REDIS_CLUSTER=true, and a plain Redis with it.

    Unchecked, the first would fail at the first script call with a MovedError traceback (or
    worse, work for the keys that happen to live on that node); the second with a
    RedisClusterException. An unreachable Redis raises redis' ConnectionError (retried).
    """
    if cluster:
        assert isinstance(redis, RedisCluster)
        try:
            await redis.initialize()
        except RedisClusterException as exc:
            if "not enabled" in str(exc):
                raise RedisModeError(
                    "REDIS_CLUSTER=true but REDIS_URL names a Redis that is not in cluster mode "
                    "(cluster_enabled:0): set REDIS_CLUSTER=false, or point REDIS_URL at a node of "
                    "the Redis Cluster"
                ) from None
            raise RedisConnectionError(str(exc)) from exc
        return
    try:
        info = await redis.info("cluster")
    except NoPermissionError:
        log.warning(
            "cannot check that REDIS_CLUSTER matches the Redis (INFO refused to this ACL user): "
            "make sure REDIS_CLUSTER=%s is right",
            str(cluster).lower(),
        )
        return
    if info.get("cluster_enabled") in (1, "1"):
        raise RedisModeError(
            "REDIS_URL names a node of a Redis Cluster (cluster_enabled:1) but REDIS_CLUSTER is "
            "false: set REDIS_CLUSTER=true, so the processor uses a cluster client and every "
            "partition's keys go to the node that owns their slot"
        )


async def warn_uneven_partitions(redis: Redis | RedisCluster, events_topic: str, partitions: int) -> None:
    """Log how many partitions each cluster master serves, with a warning when it is uneven.

    Each partition's keys share one hash tag, so one slot: ``redis-cli --cluster create``'s equal
    slot ranges put the 12 tags of ``playback.events`` 2 / 5 / 5 on three masters. Not refused
    (it works, one shard just runs hotter); `python -m compose.launcher balance` evens it out.
    """
    if not isinstance(redis, RedisCluster):
        return
    await redis.initialize()
    per_master: dict[str, list[int]] = {node.name: [] for node in redis.get_primaries()}
    for p in range(partitions):
        node = redis.nodes_manager.get_node_from_slot(partition_slot(events_topic, p))
        per_master.setdefault(node.name, []).append(p)
    counts = sorted(len(v) for v in per_master.values())
    where = {"partitions_per_master": {k: v for k, v in sorted(per_master.items())}}
    if counts[-1] - counts[0] > 1:
        log.warning(
            "the events partitions are spread unevenly over the Redis Cluster's masters (%s): "
            "run `python -m compose.launcher balance` (moves their slots) to even the load",
            " / ".join(map(str, counts)),
            extra=where,
        )
    else:
        log.info("events partitions per Redis Cluster master", extra=where)


async def check_redis_safe(redis: Redis, settings: Settings) -> None:
    """Refuse a Redis whose maxmemory-policy can evict keys, unless ALLOW_EVICTING_REDIS is set.

    An evicted user key silently frees all of that user's slots. `volatile-*` policies are no
    safer than `allkeys-*`: every user key carries a TTL (IDLE_USER_TTL_SECONDS). When CONFIG
    is read from INFO memory, never CONFIG GET (a user allowed it can read `requirepass`); when
    INFO is unavailable (renamed, or denied by an ACL) the policy cannot be known: warn and go
    on rather than refuse a Redis that may well be fine.
    """
    try:
        policies = await _policies(redis)
    except ResponseError as exc:
        log.warning(
            "cannot read Redis maxmemory-policy (INFO refused): make sure it is 'noeviction'",
            extra={"error": str(exc)},
        )
        return
    unsafe = sorted({p for p in policies if p != SAFE_POLICY})
    if not unsafe:
        return
    if settings.allow_evicting_redis:
        log.warning(
            "Redis may evict keys (ALLOW_EVICTING_REDIS=true): an evicted user key frees that user's slots",
            extra={"maxmemory_policy": ",".join(unsafe)},
        )
        return
    raise UnsafeRedisError(
        f"Redis has maxmemory-policy={','.join(unsafe)}: when it reaches maxmemory it may evict a "
        "user's lease key (volatile-* policies too: every user key has a TTL), which silently frees "
        "that user's stream slots. Run `redis-cli CONFIG SET maxmemory-policy noeviction` (and keep "
        "it in redis.conf, e.g. `CONFIG REWRITE`), or set ALLOW_EVICTING_REDIS=true to accept the risk"
    )


async def _policies(redis: Redis) -> list[str]:
    """maxmemory-policy of the server, or of every primary of a cluster client."""
    targets: list[dict] = [{}]
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # the primaries are known only once the cluster was discovered
        targets = [{"target_nodes": node} for node in redis.get_primaries()]
    out = []
    for kwargs in targets:
        info = await redis.info("memory", **kwargs)
        if isinstance(redis, RedisCluster):  # one node targeted: its reply, under its name
            info = next(iter(info.values())) if info and "maxmemory_policy" not in info else info
        policy = info.get("maxmemory_policy")
        if policy is not None:
            out.append(policy.decode() if isinstance(policy, bytes) else str(policy))
    return out
