"""A Kafka broker failure is routine (contract, "Delivery guarantees"): on the session's 3-node
cluster, topics at replication 3 and min.insync.replicas 2, a processor (an OS process) and a
gateway under a steady stream and 8 callers ride out the kill -9 of the reply partition's
leader, the kill -9 of the group's coordinator, a rolling restart, and two brokers down at once.
Every event decided once, the verifier clean, neither process exits, verdicts and answers back
within 10 s of the leaderships' move, /health back within 30 s, every call answered as the
contract says (its verdict, or 504 and the same verdict on its retry)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from compose.kafka_roles import KafkaRoles
from tests.chaos.cluster_support import (
    REPLICATION,
    Callers,
    ClusterFlow,
    longest_verdict_gap_s,
    restored,
    verdicts_resumed_s,
)
from tests.chaos.support import assert_clean, figures
from tests.gateway_harness import running_gateway

PARTITIONS = 4
RESUME_S = 10.0  # contract: verdicts and answers resume within 10 s of the leaderships' move
HEALTH_S = 30.0  # contract: /health UP again within 30 s of the failure
OFFSETS = "__consumer_offsets"  # its partitions' leaders are the groups' coordinators
pytestmark = pytest.mark.timeout(600)


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

    def down_for_after(self, t: float) -> float:
        """Seconds after `t` of the last DOWN sample (0 when never DOWN)."""
        return max([at - t for at, _ in self.down if at >= t], default=0.0)


class Run:
    """One scenario: a processor, a gateway with 8 callers, a steady stream on fresh topics."""

    def __init__(self, cluster, flow, proc, gw, roles, callers, load, watch) -> None:
        self.cluster, self.flow, self.proc, self.gw = cluster, flow, proc, gw
        self.roles, self.callers, self.load, self.watch = roles, callers, load, watch
        s = flow.settings
        self.phases: dict[str, float] = {}  # where a scenario's seconds go (figures)
        self._phase_start = time.monotonic()
        self.replies = gw.gateway.settings.gateway_replies_topic
        self.topics = [s.events_topic, s.verdicts_topic, self.replies]

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self._phase_start, 1)
        self._phase_start = now

    async def more(self, events: int, within: float = 120.0) -> None:
        await self.load.wait_acked(self.load.stats.acked + events, within=within)

    async def kill_and_wait_moved(self, node: int) -> tuple[float, float]:
        """kill -9 `node`; (killed, moved): time.monotonic() of the kill and of every leadership
        (the topics' and the group coordinators') seen elsewhere."""
        killed = time.monotonic()
        await self.cluster.nodes[node].akill()
        moved = await self.roles.wait_led_elsewhere([*self.topics, OFFSETS], node, within=90)
        return killed, moved

    async def settle(self):
        """Stop the load and the callers (each with its verdict), wait until the group committed
        every event and the replicas are back in sync; the verifier's report."""
        self.mark("incident")
        stats = await self.load.finish(120)
        await self.callers.stop(120)
        await self.flow.wait_drained(120)
        self.mark("drain")
        await restored(self.cluster, [*self.topics, OFFSETS])
        self.mark("in_sync")
        report = await self.flow.verify()
        self.mark("verify")
        return stats, report

    async def incident_figures(self, killed: float, moved: float) -> dict:
        moved_wall = time.time() - (time.monotonic() - moved)
        return {
            "leaderships_moved_s": round(moved - killed, 1),
            "verdicts_resumed_s": round(verdicts_resumed_s(await self.flow.verdict_times(), moved_wall), 1),
            "answers_resumed_s": round(self.callers.verdict_gap_end(killed) - moved, 1),
            "calls": len(self.callers.results),
            "calls_504": sum(1 for a in self.callers.answers if a.status == 504),
            "p99_ms_incident": round(self.callers.p99_ms(killed, moved + RESUME_S), 1),
            "health_down_s": round(self.watch.down_for_after(killed), 1),
            "phase_s": self.phases,
        }

    def assert_routine(self, figs: dict) -> None:
        assert self.proc.running, self.proc.log()[-3000:]
        assert not self.callers.unexpected, self.callers.unexpected[:10]
        assert figs["answers_resumed_s"] <= RESUME_S, figs
        assert figs["verdicts_resumed_s"] <= RESUME_S, figs
        assert figs["health_down_s"] <= HEALTH_S, self.watch.down[-5:]


@contextlib.asynccontextmanager
async def incident_run(kafka_cluster, redis_url, tmp_path, seed: int):
    begun = time.monotonic()
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
                run = Run(kafka_cluster, flow, proc, gw, roles, callers, load, watch)
                run.phases["start"] = round(time.monotonic() - begun, 1)
                await run.more(600, within=90)
                yield run
            finally:
                await watch.stop()
                await roles.close()
                await callers.cancel()  # stopped already unless the test failed
                await load.close()


async def test_leader_of_the_reply_partition_killed_under_load_answers_resume_within_10_s(
    kafka_cluster, redis_url, tmp_path, record_figures
):
    async with incident_run(kafka_cluster, redis_url, tmp_path, seed=71) as run:
        victim = (await run.roles.leaders(run.replies))[run.gw.gateway.router.partition]
        events_led = list((await run.roles.leaders(run.flow.settings.events_topic)).values()).count(victim)
        killed, moved = await run.kill_and_wait_moved(victim)
        await run.more(900)
        await asyncio.to_thread(kafka_cluster.start_node, victim)
        stats, report = await run.settle()
        figs = await run.incident_figures(killed, moved)
        what = f"broker {victim} kill -9 (leads the reply partition, {events_led}/{PARTITIONS} events ones)"
        record_figures(figures(report, stats, faults=what, **figs))
        run.assert_routine(figs)
        assert_clean(report)


async def test_group_coordinator_killed_under_load_verdicts_and_answers_resume_within_10_s(
    kafka_cluster, redis_url, tmp_path, record_figures
):
    async with incident_run(kafka_cluster, redis_url, tmp_path, seed=72) as run:
        victim = await run.roles.coordinator(run.flow.settings.consumer_group)
        killed, moved = await run.kill_and_wait_moved(victim)
        await run.more(900)
        await asyncio.to_thread(kafka_cluster.start_node, victim)
        stats, report = await run.settle()
        figs = await run.incident_figures(killed, moved)
        failures = await run.proc.metric("concurrency_commit_failures_total")
        record_figures(figures(report, stats, faults=f"group coordinator {victim} kill -9",
                               commit_failures=failures, **figs))  # fmt: skip
        run.assert_routine(figs)
        assert_clean(report)


async def test_rolling_restart_under_load_never_stops_verdicts_or_answers_for_10_s(
    kafka_cluster, redis_url, tmp_path, record_figures
):
    async with incident_run(kafka_cluster, redis_url, tmp_path, seed=73) as run:
        started, started_wall = time.monotonic(), time.time()
        for node in sorted(kafka_cluster.nodes):
            await kafka_cluster.nodes[node].astop()  # SIGTERM: a controlled shutdown
            await asyncio.to_thread(kafka_cluster.start_node, node)
            await run.roles.wait_in_sync([*run.topics, OFFSETS], REPLICATION, within=120)
            await run.more(300)
        # Each SIGTERM hands the node's leaderships over before it stops: verdicts and answers
        # must never stop for longer than the contract's 10 s.
        ended, ended_wall = time.monotonic(), time.time()
        figs = {
            "restart_s": round(ended - started, 1),
            "longest_verdicts_gap_s": round(
                longest_verdict_gap_s(await run.flow.verdict_times(), started_wall, ended_wall), 1
            ),
            "longest_answers_gap_s": round(run.callers.longest_gap_s(started, ended), 1),
            "calls": len(run.callers.results),
            "calls_504": sum(1 for a in run.callers.answers if a.status == 504),
            "p99_ms_incident": round(run.callers.p99_ms(started, ended), 1),
            "health_down_s": round(run.watch.down_for_after(started), 1),
            "phase_s": run.phases,
        }
        stats, report = await run.settle()
        record_figures(figures(report, stats, faults="rolling restart (SIGTERM, in sync, next)", **figs))
        assert run.proc.running, run.proc.log()[-3000:]
        assert not run.callers.unexpected, run.callers.unexpected[:10]
        assert figs["longest_verdicts_gap_s"] <= RESUME_S, figs
        assert figs["longest_answers_gap_s"] <= RESUME_S, figs
        assert figs["health_down_s"] <= HEALTH_S, run.watch.down[-5:]
        assert_clean(report)


async def test_two_brokers_down_for_20_s_under_load_wait_visibly_and_lose_nothing(
    kafka_cluster, redis_url, tmp_path, record_figures
):
    async with incident_run(kafka_cluster, redis_url, tmp_path, seed=74) as run:
        s = run.flow.settings
        survivor = await run.roles.busiest_leader(s.events_topic)
        down = [n for n in sorted(kafka_cluster.nodes) if n != survivor]
        killed = time.monotonic()
        for node in down:
            await kafka_cluster.nodes[node].akill()
        waited, failing, health = 0.0, 0.0, None
        while time.monotonic() - killed < 20:
            for p in range(PARTITIONS):  # the longest wait of one partition (metric() sums them)
                waited = max(
                    waited, await run.proc.metric("concurrency_seconds_since_commit", partition=str(p)) or 0
                )
            failing = max(failing, await run.proc.metric("concurrency_publish_failing") or 0.0)
            got = await run.proc.health()
            health = got[1] if got is not None and "publishError" in got[1] else health
            await asyncio.sleep(0.5)
        acked_while_down = run.load.stats.acked
        await asyncio.gather(*(asyncio.to_thread(kafka_cluster.nodes[node].start) for node in down))
        await asyncio.to_thread(kafka_cluster.wait_registered, time.monotonic() + 120)
        back = time.monotonic()
        await run.more(600)
        stats, report = await run.settle()
        after = await run.proc.metric("concurrency_seconds_since_commit")
        record_figures(
            figures(report, stats, faults=f"brokers {down} kill -9 for 20 s, then back",
                    max_seconds_since_commit=round(waited, 1), publish_failing=failing,
                    health_publish_error=(health or {}).get("publishError"),
                    answers_resumed_after_return_s=round(run.callers.verdict_gap_end(back) - back, 1),
                    acked_while_down=acked_while_down, calls=len(run.callers.results),
                    phase_s=run.phases)
        )  # fmt: skip
        assert run.proc.running, run.proc.log()[-3000:]
        assert not run.callers.unexpected, run.callers.unexpected[:10]
        assert waited >= 10  # the partitions' wait is visible on /metrics...
        assert failing == 1 and health is not None  # ...and on /health (publishError)
        assert after == 0  # everything committed once the brokers were back
        assert_clean(report)  # nothing lost, nothing doubled
