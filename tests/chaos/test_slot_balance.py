"""The events partitions' slots moved between Redis Cluster masters while a processor decides
them under load: redirected (ASK during a move, MOVED after it), nothing lost, nothing applied
twice, and the masters end with equal shares."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis

from compose.cluster_slots import balance_partitions, masters_of, move_slot, partition_slots, spread
from compose.launcher import RedisCluster
from tests.chaos.support import assert_clean, figures


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster | None) -> str:
    return os.environ["TEST_REDIS_CLUSTER_URL"] if redis_cluster is None else redis_cluster.url


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def _pile_on_one_master(host: str, port: int, events_topic: str, partitions: int) -> int:
    """Move every partition's slot to the first master: the worst split, before the load."""
    with redis.Redis(host=host, port=port) as client:
        masters = masters_of(client)
    target = masters[0]
    for slot in set(partition_slots(events_topic, partitions).values()):
        src = next(m for m in masters if slot in m.slots)
        if src is not target:
            move_slot(slot, src, target, masters)
            src.slots.discard(slot)
            target.slots.add(slot)
    return target.port


async def test_slots_moved_under_load_lose_nothing_and_end_balanced(
    chaos_flow, cluster_url, tmp_path, record_figures
):
    host, port = _host_port(cluster_url)
    async with chaos_flow(partitions=6, redis=cluster_url, redis_cluster=True) as flow:
        s = flow.settings
        await asyncio.to_thread(_pile_on_one_master, host, port, s.events_topic, s.topic_partitions)
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=31, rate=400, duplicates=0.03, late=0.05)
        await load.wait_acked(800)  # leases written: the moves below carry keys
        after = await asyncio.to_thread(balance_partitions, host, port, s.events_topic, s.topic_partitions)
        await load.wait_acked(load.stats.acked + 800, within=60)
        stats = await load.finish()
        await flow.wait_drained()
        retries = await proc.metric("concurrency_retries_total", what="redis")
        report = await flow.verify()
        record_figures(
            figures(report, stats, faults="6 partition slots on one master, balanced under load",
                    per_master=sorted(len(p) for p in after.values()), processor_redis_retries=retries)
        )  # fmt: skip
        assert sorted(len(p) for p in after.values()) == [2, 2, 2]
        assert proc.running
        assert_clean(report)
        with redis.Redis(host=host, port=port) as client:
            assert spread(masters_of(client), partition_slots(s.events_topic, s.topic_partitions)) == after
