"""Processors that crash, come and go, freeze, or are told to stop, while players keep playing.

Every test runs the processor as OS processes under a steady load from the simulator's
population and ends with the verifier (producer_sim/verifier.py) replaying the whole
events topic through the reference model: nothing lost, nothing applied twice, every
verdict equal to the model's, the leases in Redis equal to the model's.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

from processor.lease_store import _load_lua
from producer_sim.verifier import Verifier
from tests.chaos.redis_proxy import RedisReplyDropper
from tests.chaos.support import assert_clean, figures
from tests.harness import wait_until


# Strict. Run 10 times in a row (2026-12-01, docs/chaos-10x-runs.txt): 75,634 events,
# 0 lost, 0 applied twice, 4,115 redelivered. The losses earlier comments reported were not
# reproduced: 5 more runs of the three tests on the code before the fetch-generation check
# (processor/partitions.py) were clean too (docs/chaos-10x-runs.txt).
async def test_processor_killed_three_times_under_load_loses_nothing_and_applies_nothing_twice(
    chaos_flow, tmp_path, record_figures
):
    rng = random.Random(1001)
    async with chaos_flow(partitions=4) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=11, duplicates=0.03, late=0.05, without_event_id=0.05)
        kills = 0
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.5, 3.0))  # a random moment, under load
            assert proc.running
            proc.kill()
            kills += 1
            proc = flow.spawn(tmp_path)
            await proc.wait_healthy()
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        stats = await load.finish()
        await flow.wait_drained()
        report = await flow.verify()
        record_figures(figures(report, stats, faults=f"{kills} x SIGKILL + restart"))
        assert_clean(report)


# Strict. Run 10 times in a row (2026-12-01, docs/chaos-10x-runs.txt): 36,951 events,
# 0 lost, 0 applied twice, 957 redelivered.
async def test_rebalance_churn_one_to_three_to_one_processors_under_load_decides_every_event_once(
    chaos_flow, tmp_path, record_figures
):
    async with chaos_flow(partitions=6) as flow:
        s = flow.settings
        first = flow.spawn(tmp_path)
        await first.wait_healthy()
        load = await flow.load(seed=12, duplicates=0.03, late=0.05)
        await load.wait_acked(600)
        more = [flow.spawn(tmp_path), flow.spawn(tmp_path)]

        async def three_share() -> bool:
            counts = [await p.assigned() for p in (first, *more)]
            return all(c > 0 for c in counts) and sum(counts) == s.topic_partitions

        await wait_until(three_share, 45, interval=0.2, what="three processors sharing the partitions")
        await load.wait_acked(load.stats.acked + 900)
        codes = [p.terminate(30) for p in more]
        await wait_until(
            lambda: _owns_all(first, s.topic_partitions),
            30,
            interval=0.2,
            what="the first processor owning every partition again",
        )
        await load.wait_acked(load.stats.acked + 600)
        stats = await load.finish()
        await flow.wait_drained()
        report = await flow.verify()
        record_figures(figures(report, stats, faults="1 -> 3 -> 1 processors (2 joins, 2 SIGTERM leaves)"))
        assert codes == [0, 0]
        assert_clean(report)


async def _owns_all(proc, partitions: int) -> bool:
    return await proc.assigned() == partitions


# Strict. Run 10 times in a row (2026-12-01, docs/chaos-10x-runs.txt): 39,368 events,
# 0 lost, 0 applied twice; the zombie had a batch fenced in 7 of the 10 runs.
async def test_zombie_processor_paused_past_its_session_is_fenced_and_causes_no_double_effect(
    chaos_flow, tmp_path, record_figures
):
    rng = random.Random(1003)
    async with chaos_flow(partitions=4) as flow:
        s = flow.settings
        live, zombie = flow.spawn(tmp_path), flow.spawn(tmp_path)
        await live.wait_healthy()
        await zombie.wait_healthy()
        load = await flow.load(seed=13, duplicates=0.03, late=0.05)
        await load.wait_acked(rng.randint(300, 900))
        zombie.pause()  # SIGSTOP
        paused_at = asyncio.get_running_loop().time()
        await wait_until(
            lambda: _owns_all(live, s.topic_partitions),
            45,
            interval=0.2,
            what="the live processor taking the zombie's partitions",
        )
        await load.wait_acked(load.stats.acked + 600)  # the group moved on: more events decided meanwhile
        paused_for = asyncio.get_running_loop().time() - paused_at
        zombie.resume()  # SIGCONT
        # The zombie wakes up with its old assignment and whatever it had fetched; let it act,
        # rejoin and share the partitions again.
        await zombie.wait_healthy(45)  # the zombie rejoining the group
        await load.wait_acked(load.stats.acked + 600)
        stats = await load.finish()
        await flow.wait_drained()
        fenced = await zombie.metric("concurrency_fenced_total")
        fenced_logs = zombie.logged("fenced")
        refused_commits = zombie.logged("commit refused")
        report = await flow.verify()
        record_figures(
            figures(
                report, stats, faults=f"SIGSTOP {paused_for:.1f} s (session 6 s), SIGCONT",
                zombie_fenced_batches=fenced, zombie_fenced_log_lines=len(fenced_logs),
                zombie_refused_commits=len(refused_commits),
            )
        )  # fmt: skip
        assert_clean(report)
        # If the zombie tried to write with its old epoch, it was refused and said so.
        assert (fenced or 0) == 0 or fenced_logs, "fenced batches counted but not logged"
        if fenced == 0:
            print("the zombie never tried to write with its old epoch (nothing in flight on wake-up)")


async def test_sigterm_under_load_exits_zero_within_5_s_and_commits_exactly_what_it_published(
    chaos_flow, tmp_path, record_figures
):
    rng = random.Random(1004)
    async with chaos_flow(partitions=4) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=14, rate=500.0, late=0.05, without_event_id=0.05, malformed=0.01)
        await load.wait_acked(rng.randint(1500, 2500))
        asked = time.monotonic()
        code = proc.terminate(30)
        exit_s = time.monotonic() - asked
        assert code == 0, proc.log()[-3000:]
        # An orchestrator's grace period (30 s by default) must never run out: the batch in
        # hand, one commit, leave the group. The bound is the issue's, not a benchmark.
        assert exit_s <= 5.0, f"SIGTERM took {exit_s:.1f} s to exit"
        # What the stopped processor left: committed offsets and the verdicts it published.
        committed = await flow.committed()
        at_stop = await flow.verifier(redis=False)
        report_partial = _published_vs_committed(at_stop, committed)
        # The load goes on; a new processor picks up exactly where the old one committed.
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        await load.wait_acked(load.stats.acked + 600)
        stats = await load.finish()
        await flow.wait_drained()
        report = await flow.verify()
        record_figures(
            figures(report, stats, faults="SIGTERM under load, restart", exit_code=code,
                    exit_s=round(exit_s, 2), committed_at_stop=sum(committed.values()), **report_partial)
        )  # fmt: skip
        assert report_partial["decided_beyond_commit"] == 0
        assert report_partial["undecided_below_commit"] == 0
        assert report.redelivered == 0  # nothing was published twice: the commit covered all of it
        assert_clean(report)


def _published_vs_committed(verifier: Verifier, committed: dict[int, int]) -> dict[str, int]:
    """Events decided at or after the committed offset, and events below it without a verdict."""
    beyond = below = 0
    for exp in verifier.expected.values():
        mark = committed.get(exp.partition, 0)
        if exp.main_ids and exp.offset >= mark:
            beyond += 1
        elif not exp.main_ids and exp.offset < mark:
            below += 1
    return {"decided_beyond_commit": beyond, "undecided_below_commit": below}


async def test_records_fetched_before_a_new_partition_is_claimed_are_decided_not_skipped(
    chaos_flow, redis_url, tmp_path, record_figures
):
    """A backlog waits; the processor starts while Redis answers the partition claims slowly.

    aiokafka fetches for newly assigned partitions while on_partitions_assigned is still
    running, so getmany can hand over records of a partition whose epoch is not taken yet.
    """
    claim_sha = hashlib.sha1(_load_lua("claim_partition.lua").encode()).hexdigest().encode()
    decide_sha = hashlib.sha1(_load_lua("decide_batch.lua").encode()).hexdigest().encode()
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        RedisReplyDropper(port, decide_sha, slow={claim_sha: 0.5}) as proxy,
        chaos_flow(partitions=4) as flow,
    ):
        backlog = await flow.load(seed=15, rate=2000, events=800, late=0.05)
        stats = await backlog.finish()
        proc = flow.spawn(tmp_path, REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0")
        await proc.wait_healthy(45)
        # Ready means consuming: not UP while the claims (2 s here) are still being taken.
        assert proc.logged("partitions assigned"), "/health was UP before the partitions were claimed"
        tail = await flow.load(seed=16, rate=1000, events=200)  # later events: commits move on
        await tail.finish()
        await flow.wait_drained(30)
        report = await flow.verify()
        record_figures(figures(report, stats, faults="backlog; partition claims answered 0.5 s late",
                               slowed_claims=proxy.delayed))  # fmt: skip
        assert_clean(report)
