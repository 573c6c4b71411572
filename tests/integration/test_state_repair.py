"""Redis losing its last writes is repaired from the log (issue 21): the partition replays from
Redis's applied offset and publishes the same verdicts again; only what cannot be replayed halts.

A failover to a replica that missed writes is played here on one Redis by putting a partition's
keys back as they were (every key of its hash tag, in one transaction: what a replica holds is a
prefix of the master's writes). tests/chaos/test_cluster_failover.py and test_aof_lost_tail.py
do it with real faults.
"""

from __future__ import annotations

from collections import Counter

import orjson
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from tests.harness import Flow, wait_until

TTL_MS = 90_000  # the default LEASE_TTL_SECONDS


def users_on(partition: int, partitions: int, n: int) -> list[str]:
    partitioner, all_partitions = DefaultPartitioner(), list(range(partitions))
    users = (f"user-{i}" for i in range(10_000))
    return [u for u in users if partitioner(u.encode(), all_partitions, all_partitions) == partition][:n]


async def snapshot(redis, flow: Flow, partition: int) -> dict[bytes, bytes]:
    tag = f"sc:{{{flow.settings.events_topic}:{partition}}}"
    return {key: await redis.dump(key) async for key in redis.scan_iter(match=f"{tag}*")}


async def put_back(redis, flow: Flow, partition: int, keys: dict[bytes, bytes]) -> None:
    """The partition's keys exactly as in `keys`, in one transaction (newer keys removed)."""
    tag = f"sc:{{{flow.settings.events_topic}:{partition}}}"
    newer = [key async for key in redis.scan_iter(match=f"{tag}*")]
    async with redis.pipeline(transaction=True) as pipe:
        if newer:
            pipe.delete(*newer)
        for key, value in keys.items():
            pipe.restore(key, 0, value, replace=True)
        await pipe.execute()


def verdict_ids(flow: Flow, since: int = 0) -> Counter[str]:
    """verdictId -> copies published, among the verdict records from index `since` on."""
    return Counter(orjson.loads(r.value)["verdictId"] for r in flow.verdict_records()[since:])


def assert_replayed_identical(flow: Flow, window: Counter[str]) -> None:
    """Every copy of a verdictId has the same bytes, and each verdict of the lost window
    was published again."""
    values: dict[str, set[bytes]] = {}
    for record in flow.verdict_records():
        values.setdefault(orjson.loads(record.value)["verdictId"], set()).add(record.value)
    assert all(len(v) == 1 for v in values.values()), [v for v in values.values() if len(v) > 1]
    now = verdict_ids(flow)
    assert window and all(now[vid] > window[vid] for vid in window), (window, now)


async def test_writes_lost_under_a_running_owner_are_replayed_and_the_same_verdicts_published_again(
    flow_factory, redis_client
):
    (user, other) = users_on(0, 2, 2)
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        processor = running.processor
        await flow.send("start", user, "s0", at=0, event_id="e0")
        await flow.send("start", other, "o0", at=1, event_id="o0")
        await flow.wait_events("e0", "o0")
        before = await snapshot(redis_client, flow, 0)
        published = len(flow.verdict_records())
        # The lost window: a start, an expiry pushed by stream time (s0 and o0 expire at 90 s),
        # an upstream duplicate of an event before the window (its eventId memory survives) and
        # one of an event inside it (its memory is lost with the window).
        await flow.send("start", user, "s1", at=TTL_MS + 10, event_id="e1")
        await flow.send("start", user, "s0", at=TTL_MS + 11, event_id="e0")
        await flow.send("heartbeat", user, "s1", at=TTL_MS + 12, event_id="e2")
        await flow.send("heartbeat", user, "s1", at=TTL_MS + 13, event_id="e2")
        await flow.wait_events("e1", "e2")
        window = verdict_ids(flow, published)
        assert sum(1 for v in flow.verdicts() if v["type"] == "expire") == 2
        await put_back(redis_client, flow, 0, before)  # the replica had only the state after e0, o0

        await flow.send("start", user, "s2", at=TTL_MS + 20, event_id="e3")
        await flow.wait_events("e3")
        await wait_until(lambda: not processor.partitions.repairing(), what="the repair to end")
        assert_replayed_identical(flow, window)  # e1, both expiries, e0 again, e2 twice
        assert len(window) == 5 and sum(window.values()) == 6
        assert processor.halted_partitions == []
        m = processor.metrics
        assert m.state_repairs._value.get() == 1
        assert m.state_repair_records._value.get() == 4
        assert m.state_repairing.labels("0")._value.get() == 0
        leases = await processor._store.active_leases(0, user)
        assert sorted(leases) == ["s1", "s2"]
        [e3] = flow.verdicts_by_event()["e3"]
        assert e3["reason"] == "started" and e3["activeStreams"] == 2


async def test_a_claim_that_finds_redis_behind_the_committed_offset_replays_from_the_log(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        await flow.send("start", user, "s0", at=0, event_id="e0")
        await flow.wait_events("e0")
        before = await snapshot(redis_client, flow, 0)
        published = len(flow.verdict_records())
        for i in range(1, 6):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")  # the last three denied
        await flow.wait_events(*(f"e{i}" for i in range(1, 6)))
        await running.stop()
        committed = await _committed(flow, 0)
        assert committed == 6
        window = verdict_ids(flow, published)
        await put_back(redis_client, flow, 0, before)

        running = await flow.start_processor()  # UP at once: repairing is not halted
        processor = running.processor
        await flow.send("stop", user, "s0", at=10, event_id="e6")
        await flow.wait_events("e6")
        await wait_until(lambda: not processor.partitions.repairing(), what="the repair to end")
        assert_replayed_identical(flow, window)  # e1..e5 again
        assert processor.metrics.state_repair_records._value.get() == 5
        [e6] = flow.verdicts_by_event()["e6"]
        assert e6["reason"] == "stopped" and e6["activeStreams"] == 2
        await running.stop()
        assert await _committed(flow, 0) == 7  # never moved back to the replayed offsets


async def test_a_second_loss_during_a_repair_restarts_it_from_the_older_state(flow_factory, redis_client):
    users = users_on(0, 2, 20)
    # One record per cycle (no gathering: GATHER_MS would ask getmany for 0 more records).
    async with flow_factory(partitions=2, batch_max_records=1, gather_ms=0) as flow:
        running = await flow.start_processor()
        processor = running.processor
        await flow.send("start", users[0], "s", at=0, event_id="first")
        await flow.wait_events("first")
        before = await snapshot(redis_client, flow, 0)
        published = len(flow.verdict_records())
        ids = []
        for i in range(200):
            ids.append(f"e{i}")
            await flow.send(
                "start" if i < 20 else "heartbeat", users[i % 20], "s", at=1 + i, event_id=ids[-1]
            )
        await flow.wait_events(*ids, timeout=60)
        window = verdict_ids(flow, published)
        await put_back(redis_client, flow, 0, before)
        await flow.send("stop", users[0], "s", at=500, event_id="after")

        def replaying() -> bool:
            state = processor.partitions.get(TopicPartition(flow.settings.events_topic, 0))
            return state is not None and state.repair is not None and state.repair.records >= 20

        await wait_until(replaying, 30, interval=0.001, what="the repair half-way")
        await put_back(redis_client, flow, 0, before)  # a second failover, back to the same state
        await flow.wait_events("after", timeout=60)
        await wait_until(lambda: not processor.partitions.repairing(), what="the repair to end")
        assert_replayed_identical(flow, window)
        assert processor.metrics.state_repairs._value.get() == 2
        assert processor.halted_partitions == []
        [after] = flow.verdicts_by_event()["after"]
        assert after["reason"] == "stopped" and after["activeStreams"] == 0
        for user in users[1:]:
            assert sorted(await processor._store.active_leases(0, user)) == ["s"]


async def test_lost_writes_whose_records_were_deleted_from_the_log_halt_until_accepted(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    [healthy] = users_on(1, 2, 1)
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        await flow.send("start", user, "s0", at=0, event_id="e0")
        await flow.wait_events("e0")
        before = await snapshot(redis_client, flow, 0)
        for i in range(1, 4):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
        await flow.wait_events("e1", "e2", "e3")
        await running.stop()
        await put_back(redis_client, flow, 0, before)
        tp = TopicPartition(flow.settings.events_topic, 0)
        admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
        await admin.start()
        try:
            await admin.delete_records({tp: RecordsToDelete(before_offset=2)})  # e0, e1 gone
        finally:
            await admin.close()

        halted = flow.launch_processor()
        processor = halted.processor
        await wait_until(lambda: processor.halted_partitions == [0] and processor._consuming, what="halt")
        ok, body = processor.health()
        assert not ok and body["haltReasons"] == {"0": "state_lost"}
        assert "repairingPartitions" not in body
        await flow.send("start", user, "s9", at=10, event_id="while-halted")
        await flow.send("start", healthy, "h0", at=11, event_id="healthy")
        await flow.wait_events("healthy")
        assert "while-halted" not in flow.verdicts_by_event()
        await halted.stop()

        await flow.start_processor(accept_state_loss=True)
        await flow.wait_events("while-halted")
        [verdict] = flow.verdicts_by_event()["while-halted"]
        assert verdict["reason"] == "started"  # decided on the state Redis kept (s0 only)
        assert verdict["activeStreams"] == 2


async def keep_only_the_epoch(redis, flow: Flow, partition: int) -> None:
    """Redis as a failover leaves it when only the partition's first writes were lost: the
    epoch its owner claimed, none of its decisions."""
    tag = f"sc:{{{flow.settings.events_topic}:{partition}}}"
    epoch = await redis.hget(f"{tag}:p", "epoch")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*[key async for key in redis.scan_iter(match=f"{tag}*")])
        pipe.hset(f"{tag}:p", "epoch", epoch)
        await pipe.execute()


async def test_a_claim_that_finds_the_epoch_but_no_decision_replays_from_offset_zero(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        for i in range(3):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
        await flow.wait_events("e0", "e1", "e2")
        await running.stop()
        window = verdict_ids(flow)
        await keep_only_the_epoch(redis_client, flow, 0)

        running = await flow.start_processor()
        processor = running.processor
        await flow.send("stop", user, "s0", at=10, event_id="e3")
        await flow.wait_events("e3")
        await wait_until(lambda: not processor.partitions.repairing(), what="the repair to end")
        assert processor.halted_partitions == []
        assert_replayed_identical(flow, window)  # e0..e2 again, from offset 0
        assert processor.metrics.state_repair_records._value.get() == 3
        [e3] = flow.verdicts_by_event()["e3"]
        assert e3["reason"] == "stopped" and e3["activeStreams"] == 2  # the rebuilt leases


async def test_a_running_owner_whose_first_writes_were_lost_replays_from_offset_zero(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        processor = running.processor
        for i in range(2):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
        await flow.wait_events("e0", "e1")
        window = verdict_ids(flow)
        await keep_only_the_epoch(redis_client, flow, 0)  # the script answers BEHIND:-1

        await flow.send("start", user, "s2", at=10, event_id="e2")
        await flow.wait_events("e2")
        await wait_until(lambda: not processor.partitions.repairing(), what="the repair to end")
        assert processor.halted_partitions == []
        assert_replayed_identical(flow, window)
        [e2] = flow.verdicts_by_event()["e2"]
        assert e2["reason"] == "started" and e2["activeStreams"] == 3


async def _committed(flow: Flow, partition: int) -> int:
    from producer_sim.verifier import committed_offsets

    s = flow.settings
    return (await committed_offsets(s.kafka_bootstrap_servers, s.consumer_group, s.events_topic))[partition]
