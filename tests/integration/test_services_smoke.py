"""The test services are the real thing: a Kafka broker with consumer groups and transactions,
a Redis with Lua and AOF persistence, and private instances that survive kills and restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def eventually(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within} s waiting for: {what}")
        await asyncio.sleep(0.05)


async def read_partition_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[bytes]], bool],
    *,
    isolation_level: str,
    within: float = 30,
) -> list[bytes]:
    """Values of partition 0 of ``topic`` from the beginning, read until ``done(values)``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + within
        while not done(values):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"read {values!r} from {topic} in {within} s, condition not met")
            batch = await consumer.getmany(tp, timeout_ms=200)
            values.extend(r.value for r in batch.get(tp, []))
        return values
    finally:
        await consumer.stop()


async def test_consumer_group_of_two_splits_four_partitions_and_together_receives_every_keyed_record_once(
    kafka_bootstrap: str, topic_factory: Callable[..., Awaitable[str]]
) -> None:
    topic = await topic_factory(partitions=4)
    group = f"smoke-{uuid.uuid4().hex[:8]}"
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        for _ in range(2)
    ]
    received: list[list[tuple[int, bytes, bytes]]] = [[], []]
    stop = asyncio.Event()

    async def pump(i: int, consumer: AIOKafkaConsumer) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                received[i].extend((tp.partition, r.key, r.value) for r in records)

    for c in consumers:
        await c.start()
    tasks = [asyncio.create_task(pump(i, c)) for i, c in enumerate(consumers)]
    try:

        def split_evenly() -> bool:
            a, b = (c.assignment() for c in consumers)
            return len(a) == 2 and len(b) == 2 and not (a & b)

        await eventually(split_evenly, 60, "the group to give each consumer 2 of the 4 partitions")
        assignments = [{tp.partition for tp in c.assignment()} for c in consumers]

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent = [(f"user-{i % 50}".encode(), f"event-{i}".encode()) for i in range(400)]
            futures = [await producer.send(topic, key=k, value=v) for k, v in sent]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

        await eventually(
            lambda: len({v for part in received for _, _, v in part}) == len(sent),
            60,
            "both consumers together to receive all 400 records",
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for c in consumers:
            await c.stop()

    everything = received[0] + received[1]
    assert Counter((k, v) for _, k, v in everything) == Counter(sent), "every record exactly once"
    for i in range(2):
        assert received[i], f"consumer {i} received nothing"
        assert {p for p, _, _ in received[i]} <= assignments[i], "records only from own partitions"
    partitions_of_key: dict[bytes, set[int]] = {}
    for p, k, _ in everything:
        partitions_of_key.setdefault(k, set()).add(p)
    assert all(len(ps) == 1 for ps in partitions_of_key.values()), "one partition per key"


async def test_read_committed_consumer_sees_committed_transactions_and_never_aborted_records(
    kafka_bootstrap: str, topic_factory: Callable[..., Awaitable[str]]
) -> None:
    topic = await topic_factory(partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"smoke-tx-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send(topic, key=b"u-1", value=f"committed-{i}".encode())
        await producer.begin_transaction()
        for i in range(3):
            await producer.send_and_wait(topic, key=b"u-1", value=f"aborted-{i}".encode())
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, key=b"u-1", value=b"committed-after-abort")
    finally:
        await producer.stop()

    def last_seen(values: list[bytes]) -> bool:
        return b"committed-after-abort" in values

    committed = await read_partition_until(
        kafka_bootstrap, topic, last_seen, isolation_level="read_committed"
    )
    assert committed == [b"committed-0", b"committed-1", b"committed-2", b"committed-after-abort"]

    # The aborted records really are in the log: a read_uncommitted consumer sees them.
    uncommitted = await read_partition_until(
        kafka_bootstrap, topic, last_seen, isolation_level="read_uncommitted"
    )
    assert [v for v in uncommitted if v.startswith(b"aborted-")] == [b"aborted-0", b"aborted-1", b"aborted-2"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


INCREMENT_AND_COUNT = """
-- KEYS[1]: a hash; ARGV[1]: field; ARGV[2]: increment.
-- Returns {new value of the field, number of fields in the hash}.
local value = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 60000)
return {value, redis.call('HLEN', KEYS[1])}
"""


async def test_redis_runs_a_registered_lua_script_atomically_and_by_sha(redis_client: aioredis.Redis) -> None:
    key = f"smoke:{uuid.uuid4().hex}:counters"
    script = redis_client.register_script(INCREMENT_AND_COUNT)

    assert await script(keys=[key], args=["a", 5]) == [5, 1]
    assert await script(keys=[key], args=["b", 2]) == [2, 2]
    results = await asyncio.gather(*(script(keys=[key], args=["a", 1]) for _ in range(50)))
    assert sorted(r[0] for r in results) == list(range(6, 56)), "each call saw its own increment"
    assert await redis_client.script_exists(script.sha) == [True]
    assert 0 < await redis_client.pttl(key) <= 60000


async def test_redis_started_by_the_suite_persists_with_aof_everysec(
    redis_server: object, redis_client: aioredis.Redis
) -> None:
    if redis_server is None:
        pytest.skip("Redis given by TEST_REDIS_URL: its persistence settings are not ours")
    raw = await redis_client.config_get("append*")
    config = {_text(k): _text(v) for k, v in raw.items()}
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"


async def test_private_redis_keeps_data_across_restart_and_starts_empty_after_wipe(
    isolated_services,
) -> None:
    server = await isolated_services.redis()
    key = f"smoke:{uuid.uuid4().hex}"

    async def get_after(action: Callable[[], Awaitable[None]] | None = None) -> bytes | None:
        if action is not None:
            await action()
        client = aioredis.from_url(server.url)
        try:
            return await client.get(key)
        finally:
            await client.aclose()

    client = aioredis.from_url(server.url)
    try:
        await client.set(key, b"kept")
    finally:
        await client.aclose()
    first_pid = server.pid
    assert await get_after(server.arestart) == b"kept"
    assert server.pid != first_pid
    assert await get_after(lambda: server.arestart(wipe_data=True)) is None


async def test_private_kafka_broker_keeps_acknowledged_records_across_sigkill_and_restart(
    isolated_services,
) -> None:
    broker = await isolated_services.kafka()
    topic = f"smoke-kill-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, value=f"before-kill-{i}".encode())
    finally:
        await producer.stop()

    old_pid = broker.pid
    await broker.akill()
    await broker.astart()
    assert broker.pid != old_pid

    values = await read_partition_until(
        broker.bootstrap, topic, lambda vs: len(vs) >= 5, isolation_level="read_uncommitted", within=60
    )
    assert values == [f"before-kill-{i}".encode() for i in range(5)]
