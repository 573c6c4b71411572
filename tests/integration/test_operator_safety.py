"""What keeps operators from hurting themselves: an evicting Redis is refused, the lease listing
shows what is held now, and a liveness probe does not restart an idle standby."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import murmur2
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processor.config import Settings, load_settings
from processor.lease_store import LeaseStore, Rules
from processor.redis_checks import UnsafeRedisError, check_redis_mode, check_redis_safe
from processor.wire import decode_event
from tests.harness import TEST_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]


def settings(**overrides: object) -> Settings:
    return load_settings(jwt_secret=TEST_SECRET, **overrides)


@pytest.fixture
async def set_policy(redis_client: Redis):
    """Set the shared Redis's maxmemory-policy for one test, restored afterwards."""
    original = (await redis_client.config_get("maxmemory-policy"))["maxmemory-policy"]

    async def set_(policy: str) -> None:
        await redis_client.config_set("maxmemory-policy", policy)

    try:
        yield set_
    finally:
        await redis_client.config_set("maxmemory-policy", original)


# -- an evicting Redis ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
async def test_redis_that_can_evict_keys_is_refused_naming_the_fix_and_the_flag(
    set_policy, redis_client: Redis, policy: str
):
    await set_policy(policy)
    with pytest.raises(UnsafeRedisError) as info:
        await check_redis_safe(redis_client, settings())
    message = str(info.value)
    assert f"maxmemory-policy={policy}" in message
    assert "CONFIG SET maxmemory-policy noeviction" in message
    assert "ALLOW_EVICTING_REDIS=true" in message


async def test_evicting_redis_is_accepted_with_a_warning_when_the_operator_allows_it(
    set_policy, redis_client: Redis, caplog: pytest.LogCaptureFixture
):
    await set_policy("volatile-lru")
    with caplog.at_level(logging.WARNING, logger="processor"):
        await check_redis_safe(redis_client, settings(allow_evicting_redis=True))
    assert any("ALLOW_EVICTING_REDIS=true" in r.getMessage() for r in caplog.records)


async def test_noeviction_redis_passes_silently(
    set_policy, redis_client: Redis, caplog: pytest.LogCaptureFixture
):
    await set_policy("noeviction")
    with caplog.at_level(logging.WARNING, logger="processor"):
        await check_redis_safe(redis_client, settings())
    assert not [r for r in caplog.records if r.name.startswith("processor")]


async def test_an_evicting_redis_is_refused_without_config_get_reading_info(
    set_policy, redis_client: Redis, redis_url: str
):
    # As on managed Redis services: CONFIG denied by an ACL (a user allowed CONFIG GET can read
    # requirepass); the policy is read from INFO memory, so the refusal still happens.
    await set_policy("allkeys-lru")
    user, password = f"no-config-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis_client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-config"]
    )
    limited = Redis.from_url(redis_url, username=user, password=password)
    try:
        with pytest.raises(ResponseError):
            await limited.config_get("maxmemory-policy")
        with pytest.raises(UnsafeRedisError, match="allkeys-lru"):
            await check_redis_safe(limited, settings())
    finally:
        await limited.aclose()
        await redis_client.acl_deluser(user)


async def test_redis_that_refuses_info_is_accepted_with_a_warning(
    set_policy, redis_client: Redis, redis_url: str, caplog: pytest.LogCaptureFixture
):
    # A least-privilege ACL user without INFO (and CONFIG): the policy cannot be known.
    await set_policy("allkeys-lru")  # unsafe, but the processor cannot know it
    user, password = f"no-info-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis_client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-config", "-info"]
    )
    limited = Redis.from_url(redis_url, username=user, password=password)
    try:
        with pytest.raises(ResponseError):
            await limited.info("memory")
        with caplog.at_level(logging.WARNING, logger="processor"):
            await check_redis_safe(limited, settings())
            await check_redis_mode(limited, cluster=False)  # refused INFO: a warning, no traceback
        messages = [r.getMessage() for r in caplog.records]
        assert any("maxmemory-policy" in m for m in messages), messages
        assert any("REDIS_CLUSTER" in m for m in messages), messages
    finally:
        await limited.aclose()
        await redis_client.acl_deluser(user)


async def test_processor_refuses_to_start_on_an_evicting_redis_with_a_clear_message(
    flow_factory, set_policy, tmp_path: Path
):
    async with flow_factory(partitions=1) as flow:
        await set_policy("volatile-lru")
        proc = flow.spawn_processor(tmp_path)
        assert await asyncio.to_thread(proc.wait, 60) == 2, proc.log()
        assert "maxmemory-policy=volatile-lru" in proc.log()
        assert "Traceback" not in proc.log()


# -- the lease listing ------------------------------------------------------------------

PARTITIONS = 4


async def write_leases(
    redis: Redis, events_topic: str, user: str, starts: list[tuple[str, int]]
) -> LeaseStore:
    """Decide one start per (sessionId, record timestamp ms) for `user`, through the script."""
    store = LeaseStore(redis, events_topic, Rules(3, 90_000, "reject", 16, 3_600_000))
    await store.check_partition_count(PARTITIONS)
    claim = await store.claim(partition_of(user))
    events = [
        (
            offset,
            ts,
            decode_event(orjson.dumps({"type": "start", "userId": user, "sessionId": sid}), user.encode()),
        )
        for offset, (sid, ts) in enumerate(starts)
    ]
    await store.decide(partition_of(user), claim.epoch, -1, len(events) - 1, events)
    return store


def partition_of(user: str) -> int:
    return (murmur2(user.encode()) & 0x7FFFFFFF) % PARTITIONS


async def list_leases(redis_url: str, events_topic: str, user: str, cwd: Path) -> dict:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "EVENTS_TOPIC": events_topic,
        "TOPIC_PARTITIONS": "1",  # wrong on purpose: the count stored in Redis wins
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "leases", user,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return orjson.loads(out)


async def test_leases_lists_only_leases_active_at_the_wall_clock_when_the_user_clock_lags(
    redis_client: Redis, redis_url: str, tmp_path: Path
):
    topic, now = f"ops-{uuid.uuid4().hex[:10]}", int(time.time() * 1000)
    # Last seen an hour ago: both leases are active at the user's clock, expired by the wall clock.
    quiet = await write_leases(
        redis_client, topic, "u-quiet", [("s1", now - 3_600_000), ("s2", now - 3_590_000)]
    )
    assert set(await quiet.active_leases(partition_of("u-quiet"), "u-quiet")) == {"s1", "s2"}
    await write_leases(redis_client, topic, "u-watching", [("s1", now - 10_000)])
    before = int(time.time() * 1000)
    listing = await list_leases(redis_url, topic, "u-quiet", tmp_path)
    assert listing["userId"] == "u-quiet" and listing["partition"] == partition_of("u-quiet")
    assert listing["leases"] == {}
    assert listing["evaluatedBy"] == "wall clock"
    assert before <= listing["evaluatedAt"] <= int(time.time() * 1000)
    assert listing["evaluatedAtUtc"].endswith("+00:00")
    watching = await list_leases(redis_url, topic, "u-watching", tmp_path)
    assert list(watching["leases"]) == ["s1"]
    assert watching["leases"]["s1"]["expiresAt"] == now - 10_000 + 90_000


async def test_leases_is_evaluated_at_the_user_clock_when_it_runs_ahead_of_the_wall_clock(
    redis_client: Redis, redis_url: str, tmp_path: Path
):
    topic, user = f"ops-{uuid.uuid4().hex[:10]}", "u-ahead"
    ahead = int(time.time() * 1000) + 3_600_000  # a producer clock an hour fast
    # s-early expires at ahead+90 s: after the wall clock, but before the user's clock.
    await write_leases(redis_client, topic, user, [("s-early", ahead), ("s-late", ahead + 100_000)])
    listing = await list_leases(redis_url, topic, user, tmp_path)
    assert set(listing["leases"]) == {"s-late"}
    assert (listing["evaluatedAt"], listing["evaluatedBy"]) == (ahead + 100_000, "user event clock")


async def test_leases_of_an_unknown_user_is_an_empty_listing(redis_url: str, tmp_path: Path):
    listing = await list_leases(redis_url, f"ops-{uuid.uuid4().hex[:10]}", "nobody", tmp_path)
    assert listing["leases"] == {}
    assert listing["evaluatedBy"] == "wall clock"


async def test_the_events_topic_the_processor_creates_refuses_records_stamped_over_a_minute_ahead(
    kafka_bootstrap: str, redis_url: str
):
    """One record stamped an hour ahead (Kafka's default bound) would move its partition's stream
    time there and expire every lease of the partition at once."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from processor.app import Processor

    suffix = uuid.uuid4().hex[:10]
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        events_topic=f"fresh-events-{suffix}",
        verdicts_topic=f"fresh-verdicts-{suffix}",
        dlq_topic=f"fresh-dlq-{suffix}",
        policies_topic=f"fresh-policies-{suffix}",
        consumer_group=f"fresh-{suffix}",
        jwt_secret=TEST_SECRET,
        http_port=0,
        topic_partitions=1,
    )
    processor = Processor(settings)
    task = asyncio.create_task(processor.run())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        deadline = time.monotonic() + 60
        while not processor.health()[0]:
            assert not task.done() and time.monotonic() < deadline, "processor did not start"
            await asyncio.sleep(0.1)
        value = orjson.dumps({"type": "start", "userId": "u1", "sessionId": "s1"})
        now = int(time.time() * 1000)
        await producer.send_and_wait(settings.events_topic, value, key=b"u1", timestamp_ms=now)
        with pytest.raises(KafkaError):
            await producer.send_and_wait(settings.events_topic, value, key=b"u1", timestamp_ms=now + 600_000)
    finally:
        await producer.stop()
        processor.stop()
        await asyncio.wait_for(task, 30)
