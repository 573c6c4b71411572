"""Every Kafka and Redis client the project makes comes from processor/connections.py, so each one
gets the TLS and SASL settings (contract: Secured Kafka and Redis). A constructor called anywhere
else would speak PLAINTEXT to a secured broker and fail with "Unable to bootstrap"."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("processor", "gateway", "producer_sim", "bench")
# Where a constructor may be called: the one place, and the Redis client it wraps.
KAFKA_PLACE = "processor/connections.py"
REDIS_PLACE = "processor/redis_client.py"

KAFKA_CONSTRUCTOR = re.compile(
    r"\b(AIOKafkaProducer|AIOKafkaConsumer|AIOKafkaAdminClient|AIOKafkaClient)\s*\("
)
REDIS_CONSTRUCTOR = re.compile(
    r"(\b(Redis|RedisCluster|StrictRedis)(\.from_url)?\(|\bfrom_url\(|\bConnectionPool\()"
)
REDIS_CONNECT = re.compile(r"from processor\.redis_client import[^\n]*\bconnect\b|redis_client\.connect\s*\(")


def sources() -> list[tuple[str, str]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
            out.append((path.relative_to(ROOT).as_posix(), "\n".join(lines)))
    return out


def calls(pattern: re.Pattern[str], allowed: str) -> list[str]:
    return [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in sources()
        if name != allowed
        for m in pattern.finditer(text)
    ]


def test_the_source_tree_is_searched():
    names = [name for name, _ in sources()]
    assert KAFKA_PLACE in names and REDIS_PLACE in names and "bench/live_cost.py" in names
    assert len(names) > 80


def test_no_module_but_connections_makes_a_kafka_client():
    assert calls(KAFKA_CONSTRUCTOR, KAFKA_PLACE) == []


def test_no_module_but_redis_client_makes_a_redis_client():
    assert calls(REDIS_CONSTRUCTOR, REDIS_PLACE) == []


def test_only_connections_uses_the_bare_redis_connect():
    assert calls(REDIS_CONNECT, "processor/connections.py") == []


def test_the_patterns_find_what_they_look_for():
    # The check itself can fail: these lines are what it must catch.
    caught = [
        "producer = AIOKafkaProducer(bootstrap_servers=b)",
        "admin = AIOKafkaAdminClient(\n bootstrap_servers=b)",
        "r = Redis.from_url(url)",
        "c = RedisCluster.from_url(url)",
        "r = redis.Redis(host='h')",
    ]
    for line in caught:
        assert KAFKA_CONSTRUCTOR.search(line) or REDIS_CONSTRUCTOR.search(line), line
    assert REDIS_CONNECT.search("from processor.redis_client import connect")
    assert not KAFKA_CONSTRUCTOR.search("consumer: AIOKafkaConsumer | None = None")
