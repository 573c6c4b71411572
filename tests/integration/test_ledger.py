"""The session ledger through real Kafka, Redis and processor: expiry pushed by stream time.

Contract, "The session ledger": each events partition's stream time is its highest record
timestamp; before a record is decided every lease of that partition whose expiry it reached
is expired, and an `expire` verdict is published before the record's own, ordered by expiry,
then userId, then sessionId. The lease TTL here is the default 90 s.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata

from processor.app import Processor
from tests.harness import Flow, wait_until

TTL = 90_000


def expires(verdicts: list[dict]) -> list[dict]:
    return [v for v in verdicts if v["type"] == "expire"]


def expire_shape(v: dict) -> dict:
    return {k: v[k] for k in ("eventId", "decision", "reason", "maxStreams", "token")}


EXPIRE_SHAPE = {"eventId": None, "decision": "revoke", "reason": "expired", "maxStreams": None, "token": None}


async def test_an_expiry_is_pushed_before_the_record_that_passes_it(flow_factory):
    async with flow_factory(partitions=1) as flow:
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="a", deviceClass="tv")
        await flow.send("start", "u2", "s9", at=TTL - 1, event_id="b")  # just before: nothing expires
        await flow.send("start", "u2", "s8", at=TTL, event_id="c")  # reaches u1's expiry
        verdicts = await flow.wait_events("a", "b", "c")
        assert [v["eventId"] for v in verdicts] == ["a", "b", None, "c"]
        expire = verdicts[2]
        assert expire_shape(expire) == EXPIRE_SHAPE and expire["type"] == "expire"
        assert (expire["userId"], expire["sessionId"]) == ("u1", "s1")
        assert expire["leaseExpiresAt"] == flow.t0 + TTL and expire["decidedAt"] == flow.t0 + TTL
        assert expire["activeStreams"] == 0 and expire["deviceClass"] == "tv"


async def test_several_expiries_come_in_expiry_then_user_then_session_order(flow_factory):
    async with flow_factory(partitions=1) as flow:
        await flow.start_processor()
        await flow.send("start", "b", "s1", at=0, event_id="b1")
        await flow.send("start", "a", "s2", at=0, event_id="a2")
        await flow.send("start", "a", "s1", at=0, event_id="a1")
        await flow.send("start", "c", "s1", at=5, event_id="c1")
        await flow.send("start", "d", "s1", at=1, event_id="d1")
        await flow.send("heartbeat", "d", "s1", at=60_000, event_id="d-hb")  # renewed: expires at 150 s
        await flow.send("start", "a", "s3", at=70_000, event_id="a3")  # a's s3 outlives s1, s2
        await flow.send("start", "z", "s1", at=200_000, event_id="late")  # passes all of them
        verdicts = await flow.wait_events("late")
        tail = verdicts[[v["eventId"] for v in verdicts].index("a3") + 1 :]
        got = [(v["userId"], v["sessionId"], v["leaseExpiresAt"] - flow.t0, v["activeStreams"]) for v in tail]
        assert got == [
            ("a", "s1", TTL, 1),  # a's s2 expires at the same time: not later, not counted; s3 is
            ("a", "s2", TTL, 1),
            ("b", "s1", TTL, 0),
            ("c", "s1", TTL + 5, 0),
            ("d", "s1", 60_000 + TTL, 0),  # renewed: due at its first expiry, expired at its last
            ("a", "s3", 70_000 + TTL, 0),
            ("z", "s1", 200_000 + TTL, 1),  # z's own start verdict, after the expiries
        ]
        assert all(v["decidedAt"] == flow.t0 + 200_000 for v in tail[:-1])


async def test_a_late_event_after_a_pushed_expiry_sees_the_lease_expired_at_its_expiry(flow_factory):
    async with flow_factory(partitions=1) as flow:
        await flow.start_processor()
        await a_late_event_after_a_pushed_expiry(flow)


async def a_late_event_after_a_pushed_expiry(flow: Flow) -> None:
    await flow.send("start", "u1", "s1", at=0, event_id="start")
    await flow.send("heartbeat", "u2", "s1", at=100_000, event_id="push")  # another user moves stream time
    await flow.wait_events("start", "push")
    await flow.send("heartbeat", "u1", "s1", at=50_000, event_id="late")  # record time before the expiry
    verdicts = await flow.wait_events("late")
    [expire] = [v for v in expires(verdicts) if v["userId"] == "u1"]
    late = next(v for v in verdicts if v["eventId"] == "late")
    # The user's clock moved up to the expiry: the late heartbeat finds no lease, decided then.
    assert (late["decision"], late["reason"]) == ("deny", "no_lease")
    assert late["decidedAt"] == expire["leaseExpiresAt"] == flow.t0 + TTL


class CrashAfterRedis(Processor):
    """Dies after the script applied a batch and before any verdict is produced."""

    async def _publish(self, batches):
        raise RuntimeError("simulated crash between Redis and produce")


async def rewind(flow: Flow) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=flow.bootstrap, group_id=flow.settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(flow.settings.events_topic, p) for p in range(flow.partitions)]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
    finally:
        await consumer.stop()


async def test_expiry_verdicts_are_identical_after_a_crash_between_redis_and_produce_and_a_replay(
    flow_factory,
):
    async with flow_factory(partitions=1) as flow:
        await flow.send("start", "u1", "s1", at=0, event_id="a")
        await flow.send("start", "u1", "s2", at=10, event_id="b")
        await flow.send("start", "u2", "s1", at=200_000, event_id="c")
        crashing = CrashAfterRedis(flow.settings)
        with pytest.raises(RuntimeError, match="simulated crash"):
            await asyncio.wait_for(crashing.run(), 30)
        running = await flow.start_processor()  # the batch again: its stored results, expiries included
        first = await flow.wait_verdicts(5)
        assert [v["eventId"] for v in first] == ["a", "b", None, None, "c"]
        assert [(v["sessionId"], v["activeStreams"]) for v in expires(first)] == [("s1", 1), ("s2", 0)]
        await running.stop()
        await rewind(flow)  # every record delivered again
        await flow.start_processor()
        await flow.send("heartbeat", "u2", "s1", at=200_001, event_id="d")
        verdicts = await flow.wait_events("d")
        records = flow.verdict_records()
        assert [r.value for r in records[5:10]] == [r.value for r in records[:5]]  # byte for byte
        assert len(expires(verdicts)) == 4 and len({v["verdictId"] for v in expires(verdicts)}) == 2


def partition_of(user: str, partitions: int) -> int:
    every = list(range(partitions))
    return DefaultPartitioner()(user.encode(), every, every)


async def test_an_idle_partition_pushes_nothing_until_its_own_records_move_its_stream_time(flow_factory):
    async with flow_factory(partitions=2) as flow:
        await flow.start_processor()
        quiet = "u-quiet"
        busy = next(f"u{i}" for i in range(100) if partition_of(f"u{i}", 2) != partition_of(quiet, 2))
        await flow.send("start", quiet, "s1", at=0, event_id="q-start")
        for n in range(1, 5):  # the other partition moves on by 40 minutes
            await flow.send("heartbeat", busy, "s1", at=n * 600_000, event_id=f"busy-{n}")
        await flow.wait_events("q-start", *(f"busy-{n}" for n in range(1, 5)))
        assert expires(flow.verdicts()) == []
        await flow.send("stop", quiet, "other", at=TTL + 1, event_id="q-next")  # its own partition moves
        verdicts = await flow.wait_events("q-next")
        [expire] = expires(verdicts)
        assert (expire["userId"], expire["decidedAt"]) == (quiet, flow.t0 + TTL + 1)


def gauge(processor: Processor, partition: int, device_class: str | None = None) -> float | None:
    registry = processor.metrics.registry
    if device_class is None:
        return registry.get_sample_value("concurrency_active_leases", {"partition": str(partition)})
    labels = {"partition": str(partition), "deviceClass": device_class}
    return registry.get_sample_value("concurrency_active_leases_by_class", labels)


async def test_the_active_lease_gauge_counts_the_ledger_and_is_right_after_a_restart(flow_factory):
    async with flow_factory(partitions=1) as flow:
        running = await flow.start_processor()
        await flow.send("start", "u1", "tv", at=0, event_id="1", deviceClass="tv")
        await flow.send("start", "u1", "phone", at=1, event_id="2", deviceClass="mobile")
        await flow.send("start", "u2", "web", at=2, event_id="3")
        await flow.send("start", "u3", "tv", at=3, event_id="4", deviceClass="tv")
        await flow.send("stop", "u3", "tv", at=4, event_id="5")
        await flow.wait_events("1", "2", "3", "4", "5")
        p = running.processor
        await wait_until(lambda: gauge(p, 0) == 3, what="gauge of 3 leases")
        assert (gauge(p, 0, "tv"), gauge(p, 0, "mobile"), gauge(p, 0, "")) == (1, 1, 1)
        await running.stop()
        again = await flow.start_processor()  # a new instance: counts read from Redis at assignment
        q = again.processor
        assert (gauge(q, 0), gauge(q, 0, "tv"), gauge(q, 0, "mobile"), gauge(q, 0, "")) == (3, 1, 1, 1)
        await flow.send("heartbeat", "u1", "tv", at=60_000, event_id="6")
        await flow.send("heartbeat", "u4", "none", at=TTL + 10, event_id="7")  # expires phone and web
        await flow.wait_events("6", "7")
        await wait_until(lambda: gauge(q, 0) == 1, what="gauge after two expiries")
        assert (gauge(q, 0, "tv"), gauge(q, 0, "mobile"), gauge(q, 0, "")) == (1, 0, 0)


async def test_a_user_holding_a_lease_never_expires_by_idle_time_and_gets_the_idle_ttl_once_it_has_none(
    flow_factory, redis_client
):
    """An idle user key dropped by Redis would end its leases without an `expire` verdict."""
    async with flow_factory(partitions=1) as flow:
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="a")
        await flow.wait_events("a")
        key = f"sc:{{{flow.settings.events_topic}:0}}:u:u1"
        assert await redis_client.exists(key) == 1
        assert await redis_client.pttl(key) == -1  # no expiry while it holds a lease
        await flow.send("stop", "u1", "s1", at=10, event_id="b")
        await flow.wait_events("b")
        assert 0 < await redis_client.pttl(key) <= flow.settings.idle_user_ttl_seconds * 1000
