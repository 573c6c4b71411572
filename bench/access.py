"""The bench's Kafka and Redis clients, made like every client of the project (processor/connections.py).

Against the bench's own local services nothing is secured; pointed at a secured broker or Redis,
the loaders and readers take the environment's KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*,
KAFKA_SSL_* and REDIS_* settings (an admin principal: they create topics and read groups).
"""

from __future__ import annotations

import functools
from dataclasses import replace

from redis.asyncio import Redis, RedisCluster

from processor.config import ConnectionSettings
from processor.connections import KafkaAccess, kafka_access, redis_access


@functools.cache
def _settings() -> ConnectionSettings:
    return ConnectionSettings()


def bench_kafka(bootstrap: str) -> KafkaAccess:
    """Kafka at `bootstrap` with the environment's security settings."""
    return kafka_access(_settings(), bootstrap)


def bench_redis(url: str) -> Redis | RedisCluster:
    """A client of one Redis at `url` with the environment's TLS and password settings."""
    return replace(redis_access(_settings(), url), cluster=False).client()
