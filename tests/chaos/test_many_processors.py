"""Three processor processes share the events partitions on a Redis Cluster while the simulator
checks every verdict live; one of them is killed (-9) midway and started again.

The simulator's checker (producer_sim) compares each verdict with the reference model as it
arrives; afterwards the offline verifier replays the whole events topic and compares the
leases in the cluster with the model's.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from compose.launcher import RedisCluster
from producer_sim.runner import Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig
from tests.chaos.support import assert_clean, figures
from tests.harness import TEST_SECRET, wait_until


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster | None) -> str:
    return os.environ["TEST_REDIS_CLUSTER_URL"] if redis_cluster is None else redis_cluster.url


async def test_three_processors_on_a_redis_cluster_one_killed_and_restarted_every_verdict_matches(
    chaos_flow, cluster_url, tmp_path, record_figures
):
    async with chaos_flow(partitions=6, redis=cluster_url, redis_cluster=True) as flow:
        s = flow.settings
        procs = [flow.spawn(tmp_path) for _ in range(3)]
        for proc in procs:
            await proc.wait_healthy()

        async def three_share() -> bool:
            counts = [await p.assigned() for p in procs]
            return all(c > 0 for c in counts) and sum(counts) == s.topic_partitions

        await wait_until(three_share, 45, interval=0.2, what="three processors sharing the partitions")
        sim_settings = SimSettings(
            _env_file=None,
            **s.model_dump(include=set(SimSettings.model_fields) - {"jwt_secret"}),
            jwt_secret=TEST_SECRET,
        )
        config = SimConfig(
            rate=400, duration=9, users=300, speed=30, sharers=0.2, duplicates=0.03, late=0.03,
            drain_timeout=60, progress=False,
        )  # fmt: skip
        sim = Simulation(config, sim_settings)
        run = asyncio.create_task(sim.run())
        await asyncio.sleep(3)
        assert not run.done(), run.result()
        victim = procs[1]
        victim.kill()
        restarted = flow.spawn(tmp_path)
        await restarted.wait_healthy()
        report = await run
        await flow.wait_drained()
        verified = await flow.verify()
        check = report["check"]
        record_figures(
            figures(
                verified,
                live_checked=report["verdicts"]["unique"],
                live_redelivered=report["verdicts"]["redelivered_identical"],
                live_mismatches=check["mismatches"],
                live_missing=check["missing"],
                faults="3 processors on a Redis Cluster, 1 x SIGKILL + restart",
            )
        )
        assert (check["mismatches"], check["missing"], check["malformed_verdicts"]) == (0, 0, 0), check
        assert report["verdicts"]["unique"] > 1000
        assert report["ok"], check
        assert all(p.running for p in (procs[0], procs[2], restarted))
        assert_clean(verified)
