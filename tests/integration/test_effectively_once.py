"""No effect twice: replays, upstream duplicates, crashes between Redis and produce, fencing."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from processor.app import Processor
from processor.lease_store import LeaseStore, Rules
from processor.reference_model import ReferenceModel
from processor.script_results import FencedError
from processor.wire import DecodedEvent
from tests.harness import Flow, wait_until
from tests.redis_targets import ON_SINGLE_AND_CLUSTER

pytestmark = ON_SINGLE_AND_CLUSTER  # the contract holds on one Redis and on a Redis Cluster

RULES = Rules(
    max_streams=3,
    lease_ttl_ms=90_000,
    overflow_policy="reject",
    event_id_memory=16,
    idle_user_ttl_ms=3_600_000,
)


def copies_identical(verdicts: list[dict]) -> dict[str, dict]:
    by_id: dict[str, dict] = {}
    for v in verdicts:
        assert by_id.setdefault(v["verdictId"], v) == v, "two copies of one verdictId differ"
    return by_id


async def test_replayed_batch_returns_stored_results_and_leaves_state_unchanged(redis_client, topic_factory):
    store = LeaseStore(redis_client, await topic_factory(1, prefix="replay"), RULES)
    claim = await store.claim(0)
    events = [(i, 1_000 + i, DecodedEvent("start", "u1", f"s{i}", f"e{i}", None, None)) for i in range(5)]
    first = await store.decide(0, claim.epoch, -1, 4, events)
    state = await redis_client.get(store.user_key(0, "u1"))
    again = await store.decide(0, claim.epoch, -1, 4, events)
    assert again == first
    assert await redis_client.get(store.user_key(0, "u1")) == state
    assert len(await store.active_leases(0, "u1")) == 3


async def test_stale_epoch_is_fenced_and_writes_nothing(redis_client, topic_factory):
    store = LeaseStore(redis_client, await topic_factory(1, prefix="fence"), RULES)
    old = await store.claim(0)
    new = await store.claim(0)  # another instance took the partition
    event = [(0, 1_000, DecodedEvent("start", "u1", "s1", None, None, None))]
    with pytest.raises(FencedError):
        await store.decide(0, old.epoch, -1, 0, event)
    assert await store.applied_offset(0) is None
    assert await redis_client.get(store.user_key(0, "u1")) is None
    assert (await store.decide(0, new.epoch, -1, 0, event))[0][0] == 1


async def test_duplicate_event_id_at_a_new_offset_yields_the_identical_verdict_and_no_second_lease(
    flow: Flow,
):
    await flow.send("start", "u1", "s1", at=0, event_id="dup")
    await flow.send("start", "u1", "s1", at=5_000, event_id="dup")  # upstream retry, new offset
    await flow.send("start", "u1", "s2", at=6_000, event_id="next")
    verdicts = await flow.wait_verdicts(3)
    dups = [v for v in verdicts if v["eventId"] == "dup"]
    assert len(dups) == 2 and dups[0] == dups[1]
    assert next(v for v in verdicts if v["eventId"] == "next")["activeStreams"] == 2


async def test_offsets_reset_to_zero_replay_identical_verdicts_without_new_effects(flow_factory):
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        for i in range(6):
            await flow.send("start", f"u{i % 2}", f"s{i}", at=i, event_id=f"e{i}")
        first = await flow.wait_verdicts(6)
        await running.stop()
        # An operator rewinds the group: every event is delivered again.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=flow.bootstrap, group_id=flow.settings.consumer_group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(flow.settings.events_topic, p) for p in range(2)]
            consumer.assign(tps)
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
        finally:
            await consumer.stop()
        await flow.start_processor()
        await flow.send("start", "u0", "s-new", at=100, event_id="after")
        verdicts = await flow.wait_verdicts(13)
        by_id = copies_identical(verdicts)
        assert len(by_id) == 7
        assert {v["verdictId"] for v in first} <= set(by_id)
        # u0 holds s0, s2, s4: the limit is reached, the replay added nothing.
        assert next(v for v in verdicts if v["eventId"] == "after")["reason"] == "limit_exceeded"


class CrashAfterRedis(Processor):
    """Dies after the script applied a batch and before any verdict is produced."""

    async def _publish(self, batches):
        raise RuntimeError("simulated crash between Redis and produce")


async def test_batch_replayed_after_a_crash_between_redis_and_produce_gets_the_model_verdicts(flow_factory):
    async with flow_factory(partitions=1) as flow:
        for i in range(5):
            await flow.send("start", "u1", f"s{i}", at=i * 10, event_id=f"e{i}")
        crashing = CrashAfterRedis(flow.settings)
        with pytest.raises(RuntimeError, match="simulated crash"):
            await asyncio.wait_for(crashing.run(), 30)
        await flow.start_processor()
        verdicts = await flow.wait_verdicts(5)
        model = ReferenceModel()
        for i, v in enumerate(sorted(verdicts, key=lambda v: v["eventId"])):
            want = model.apply("u1", f"s{i}", "start", flow.t0 + i * 10, f"e{i}")
            assert (v["reason"], v["activeStreams"], v["decidedAt"]) == (
                want.reason,
                want.active_streams,
                want.decided_at,
            )
        assert len(copies_identical(verdicts)) == 5


async def test_ten_concurrent_starts_from_ten_producers_allow_exactly_max_streams(flow: Flow):
    producers = [AIOKafkaProducer(bootstrap_servers=flow.bootstrap) for _ in range(10)]
    await asyncio.gather(*(p.start() for p in producers))
    try:
        import orjson

        await asyncio.gather(
            *(
                p.send_and_wait(
                    flow.settings.events_topic,
                    key=b"family",
                    timestamp_ms=flow.t0,
                    value=orjson.dumps(
                        {"type": "start", "userId": "family", "sessionId": f"tv-{i}", "eventId": f"start-{i}"}
                    ),
                )
                for i, p in enumerate(producers)
            )
        )
    finally:
        await asyncio.gather(*(p.stop() for p in producers))
    verdicts = await flow.wait_verdicts(10)
    assert sum(v["decision"] == "allow" for v in verdicts) == 3
    assert sum(v["reason"] == "limit_exceeded" for v in verdicts) == 7
    assert max(v["activeStreams"] for v in verdicts) == 3


async def test_two_processors_share_partitions_enforce_the_limit_and_survive_one_leaving(flow_factory):
    async with flow_factory(partitions=6) as flow:
        first = await flow.start_processor()
        second = await flow.start_processor()
        await wait_until(
            lambda: (
                first.processor.health()[0]
                and second.processor.health()[0]
                and len(first.processor._consumer.assignment()) == 3
                and len(second.processor._consumer.assignment()) == 3
            ),
            what="partitions split 3/3",
        )
        users = [f"user-{i}" for i in range(12)]
        for user in users:
            for s in range(5):
                await flow.send("start", user, f"s{s}", at=s, event_id=f"{user}-a{s}")
        verdicts = await flow.wait_verdicts(60)
        for user in users:
            mine = [v for v in verdicts if v["userId"] == user]
            assert sum(v["decision"] == "allow" for v in mine) == 3
        await second.stop()  # leaves the group: the first takes every partition
        await wait_until(lambda: len(first.processor._consumer.assignment()) == 6, what="takeover")
        for user in users:
            await flow.send("stop", user, "s0", at=100, event_id=f"{user}-stop")
            await flow.send("start", user, "s9", at=200, event_id=f"{user}-b")
        verdicts = await flow.wait_verdicts(84)
        by_event = {v["eventId"]: v for v in verdicts}
        for user in users:
            assert by_event[f"{user}-stop"]["reason"] == "stopped"
            assert (by_event[f"{user}-b"]["reason"], by_event[f"{user}-b"]["activeStreams"]) == ("started", 3)
