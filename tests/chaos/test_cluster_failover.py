"""A Redis Cluster master killed (-9) under load, its replica made to miss the last writes.

Replication is asynchronous, so the promoted replica may miss writes the master acknowledged.
Here it always does: the replica's clients, its master link among them, are paused (CLIENT
PAUSE WRITE) before the kill, so what the master replicated after that stays unapplied in the
replica's input buffer and is dropped at the promotion. The contract's outcome: the partitions
of that shard replay their log from the replica's applied offsets; none halts, every event is
decided, every verdict equals the model's and each one decided twice is identical, the ledger
invariant holds and the leases in Redis equal the model's.
"""

from __future__ import annotations

import asyncio
import time

from compose.cluster_slots import masters_of, partition_slots, spread
from compose.launcher import RedisCluster
from tests.chaos.support import assert_clean, figures, repair_figures


def partitions_on(cluster: RedisCluster, events_topic: str, partitions: int) -> dict[int, list[int]]:
    """master port -> the events partitions whose hash tag lives on it."""
    with cluster._client(cluster.ports[0]) as client:
        return spread(masters_of(client), partition_slots(events_topic, partitions))


def pause_replication(cluster: RedisCluster, master: int, ms: int) -> int:
    """Hold the writes `master` replicates to its replica for `ms` (the replica's port)."""
    [replica] = cluster.topology()[master]
    with cluster._client(replica) as client:
        client.execute_command("CLIENT", "PAUSE", ms, "WRITE")
    return replica


def replication_gap(cluster: RedisCluster, master: int, replica: int) -> int:
    """Bytes the master replicated that its replica has not applied."""
    with cluster._client(master) as m, cluster._client(replica) as r:
        return int(m.info("replication")["master_repl_offset"]) - int(
            r.info("replication")["slave_repl_offset"]
        )


async def test_a_killed_master_whose_replica_missed_writes_is_repaired_from_the_log(
    chaos_flow, isolated_services, tmp_path, record_figures
):
    cluster = await isolated_services.cluster()
    try:
        async with chaos_flow(partitions=6, redis=cluster.url, redis_cluster=True) as flow:
            s = flow.settings
            proc = flow.spawn(tmp_path)
            await proc.wait_healthy()
            load = await flow.load(seed=21, rate=400, duplicates=0.03, late=0.05)
            await load.wait_acked(800)
            owners = partitions_on(cluster, s.events_topic, s.topic_partitions)
            victim = max(owners, key=lambda port: len(owners[port]))  # the master with most partitions
            assert owners[victim], owners
            replica = await asyncio.to_thread(pause_replication, cluster, victim, 5000)
            await load.wait_acked(load.stats.acked + 300, within=30)  # decided, replicated, not applied
            gap = await asyncio.to_thread(replication_gap, cluster, victim, replica)
            killed_at = time.monotonic()
            cluster.kill_node(victim)
            failover_s = await asyncio.to_thread(cluster.wait_serving, 30.0)
            # Back as a replica of its successor (REDIS_URL may name it: the verifier needs it).
            await asyncio.to_thread(cluster.start_node, victim)
            await load.wait_acked(load.stats.acked + 1200, within=60)
            stats = await load.finish()
            await flow.wait_drained(60)
            drained_s = time.monotonic() - killed_at
            status, body = await proc.health()
            repairs = await proc.metric("concurrency_state_repairs_total")
            report = await flow.verify()
            record_figures(
                figures(
                    report,
                    stats,
                    killed_master_partitions=owners[victim],
                    replication_gap_bytes=gap,
                    failover_seconds=round(failover_s, 2),
                    drained_after_kill_seconds=round(drained_s, 2),
                    **repair_figures(proc),
                    faults="replica paused, then SIGKILL of its Redis Cluster master under load",
                )
            )
            assert proc.running, proc.log()[-3000:]
            assert gap > 0  # the replica did miss writes ...
            assert repairs and repairs >= 1  # ... the processor found it ...
            assert status == 200 and "haltReasons" not in body, body  # ... and halted nothing
            errors = [x for x in proc.log_lines() if x.get("level") == "ERROR"]
            assert not [x for x in errors if "lost" in x.get("msg", "")], errors
            repaired = {x["partition"] for x in proc.logged("replaying its log")}
            assert repaired and repaired <= set(owners[victim]), (repaired, owners)
            assert await proc.metric("concurrency_state_repairing") == 0
            assert_clean(report)
    finally:
        await asyncio.to_thread(cluster.kill)
