"""A Kafka broker failure is routine (contract, "Delivery guarantees"): on the session's 3-node
cluster, topics at replication 3 and min.insync.replicas 2, a processor (an OS process) and a
gateway under a steady stream and calls ride out a leader's kill -9, the group coordinator's
kill -9, a rolling restart, and two brokers down at once (below min.insync.replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from compose.kafka_roles import KafkaRoles
from tests.chaos.cluster_support import REPLICATION, Callers, ClusterFlow, restored, verdicts_resumed_s
from tests.chaos.support import assert_clean, figures
from tests.gateway_harness import running_gateway

PARTITIONS = 4
pytestmark = pytest.mark.timeout(600)
RESUME_S = 10.0  # contract: verdicts and answers resume within 10 s of the leaderships' move
HEALTH_S = 30.0  # contract: /health UP again within 30 s of the failure


class HealthWatch:
    """Samples the processor's and the gateway's /health every half second: when were they DOWN."""

    def __init__(self, proc, gateway) -> None:
        self._proc, self._gateway = proc, gateway
        self.down: list[tuple[float, str]] = []
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            got = await self._proc.health()
            if got is None or got[0] != 200:
                self.down.append((time.monotonic(), f"processor {got}"))
            ok, body = self._gateway.health()
            if not ok:
                self.down.append((time.monotonic(), f"gateway {body}"))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def last_down_after(self, t: float) -> float:
        """Seconds after `t` of the last DOWN sample (0 when never DOWN)."""
        return max([at - t for at, _ in self.down if at >= t], default=0.0)


@contextlib.asynccontextmanager
async def incident_run(kafka_cluster, redis_url, tmp_path, seed: int):
    """A processor, a gateway with 8 callers and a steady stream on fresh replicated topics."""
    await restored(kafka_cluster)
    overrides = {"topic_replication_factor": REPLICATION}
    async with ClusterFlow(kafka_cluster.bootstrap, redis_url, PARTITIONS, overrides) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy(90)
        async with running_gateway(flow, topic_replication_factor=REPLICATION) as gw:
            roles = await KafkaRoles.connect(kafka_cluster.bootstrap)
            callers = Callers(gw.url, prefix=f"gw{seed}").start()
            load = await flow.load(seed=seed, rate=300, duplicates=0.02, late=0.03)
            watch = HealthWatch(proc, gw.gateway)
            try:
                yield flow, proc, gw, roles, callers, load, watch
            finally:
                await watch.stop()
                await roles.close()


async def _settle(flow, proc, gw, callers, load, kafka_cluster):
    """Everything back: stop the load and the callers (each with its verdict), wait for the
    group to commit every event; the topics back in sync for the next test."""
    stats = await load.finish(120)
    await callers.stop(90)
    await flow.wait_drained(120)
    s = flow.settings
    await restored(
        kafka_cluster, [s.events_topic, s.verdicts_topic, gw.gateway.settings.gateway_replies_topic]
    )
    return stats


async def test_leader_of_the_reply_partition_killed_under_load_answers_resume_within_10_s(
    kafka_cluster, redis_url, tmp_path, record_figures
):
    async with incident_run(kafka_cluster, redis_url, tmp_path, seed=71) as (
        flow, proc, gw, roles, callers, load, watch,
    ):  # fmt: skip
        s, replies = flow.settings, gw.gateway.settings.gateway_replies_topic
        await load.wait_acked(600, within=90)
        victim = (await roles.leaders(replies))[gw.gateway.router.partition]
        events_led = sum(1 for leader in (await roles.leaders(s.events_topic)).values() if leader == victim)
        killed = time.monotonic()
        await kafka_cluster.nodes[victim].akill()
        moved = await roles.wait_led_elsewhere([s.events_topic, s.verdicts_topic, replies], victim, within=60)
        moved_wall = time.time() - (time.monotonic() - moved)
        await load.wait_acked(load.stats.acked + 1500, within=120)
        await asyncio.to_thread(kafka_cluster.start_node, victim)
        await load.wait_acked(load.stats.acked + 300, within=60)
        stats = await _settle(flow, proc, gw, callers, load, kafka_cluster)
        answers_resumed = callers.verdict_gap_end(killed) - moved
        verdicts_resumed = verdicts_resumed_s(await flow.verdict_times(), moved_wall)
        running = proc.running
        report = await flow.verify()
        record_figures(
            figures(report, stats, faults=f"broker {victim} (leads the reply partition, {events_led} of "
                    f"{PARTITIONS} events partitions) kill -9, restarted",
                    leaderships_moved_s=round(moved - killed, 1),
                    verdicts_resumed_s=round(verdicts_resumed, 1),
                    answers_resumed_s=round(answers_resumed, 1), calls=len(callers.results),
                    calls_504=sum(1 for a in callers.answers if a.status == 504),
                    p99_ms_incident=round(callers.p99_ms(killed, moved + 15), 1),
                    health_down_s=round(watch.last_down_after(killed), 1))
        )  # fmt: skip
        assert running, proc.log()[-3000:]
        assert not callers.unexpected, callers.unexpected[:10]
        assert answers_resumed <= RESUME_S
        assert verdicts_resumed <= RESUME_S
        assert watch.last_down_after(killed) <= HEALTH_S, watch.down[-5:]
        assert_clean(report)
