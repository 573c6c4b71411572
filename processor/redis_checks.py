"""Checks on the Redis the processor is about to write leases to, run once at start."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processor.config import Settings

log = logging.getLogger("processor")

SAFE_POLICY = "noeviction"


class UnsafeRedisError(RuntimeError):
    """Redis may drop lease state on its own: starting would risk granting streams twice."""


async def check_redis_safe(redis: Redis, settings: Settings) -> None:
    """Refuse a Redis whose maxmemory-policy can evict keys, unless ALLOW_EVICTING_REDIS is set.

    An evicted user key silently frees all of that user's slots. `volatile-*` policies are no
    safer than `allkeys-*`: every user key carries a TTL (IDLE_USER_TTL_SECONDS). When CONFIG
    is unavailable (renamed, disabled, or denied by an ACL, as on many managed services) the
    policy cannot be known: warn and go on rather than refuse a Redis that may well be fine.
    """
    try:
        policies = await _policies(redis)
    except ResponseError as exc:
        log.warning(
            "cannot read Redis maxmemory-policy (CONFIG GET refused): make sure it is 'noeviction'",
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
    primaries = getattr(redis, "get_primaries", None)  # redis.asyncio.RedisCluster
    targets = [{"target_nodes": node} for node in primaries()] if primaries else [{}]
    out = []
    for kwargs in targets:
        reply = await redis.config_get("maxmemory-policy", **kwargs)
        for key, value in reply.items():
            if _text(key) == "maxmemory-policy":
                out.append(_text(value))
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
