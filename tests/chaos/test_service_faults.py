"""Kafka and Redis misbehaving under a running processor: restarts, crashes, lost state,
lost replies, an unwritable verdicts topic. The processor runs as an OS process; the
services that are killed are private to the test (isolated_services)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.lease_store import _load_lua
from tests.chaos.redis_proxy import RedisReplyDropper
from tests.chaos.support import assert_clean, figures
from tests.harness import wait_until


async def test_broker_restart_under_load_is_ridden_out_by_processor_and_producer(
    chaos_flow, isolated_services, tmp_path, record_figures
):
    broker = await isolated_services.kafka()
    async with chaos_flow(partitions=4, bootstrap=broker.bootstrap) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=21, duplicates=0.03, late=0.05, without_event_id=0.05)
        await load.wait_acked(900)
        await broker.arestart()  # SIGTERM, then start again on the same port with the same data
        await load.wait_acked(load.stats.acked + 900, within=90)
        stats = await load.finish()
        await flow.wait_drained(90)
        assert proc.running, proc.log()[-3000:]
        retries = await proc.metric("concurrency_retries_total")
        report = await flow.verify()
        record_figures(figures(report, stats, faults="broker stop + start", processor_retries=retries))
        assert_clean(report)


async def test_redis_killed_under_load_and_restarted_with_its_aof_loses_nothing(
    chaos_flow, isolated_services, tmp_path, record_figures
):
    rng = random.Random(2002)
    redis = await isolated_services.redis()
    async with chaos_flow(partitions=4, redis=redis.url) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=22, duplicates=0.03, late=0.05, without_event_id=0.05)
        await load.wait_acked(rng.randint(600, 1200))
        await redis.akill()  # SIGKILL: no shutdown, AOF (everysec) as it was
        await asyncio.sleep(rng.uniform(1.0, 2.5))  # down for a random while, under load
        await redis.astart()  # same port, same data directory
        await load.wait_acked(load.stats.acked + 900)
        stats = await load.finish()
        await flow.wait_drained()
        assert proc.running, proc.log()[-3000:]
        retries = await proc.metric("concurrency_retries_total", what="redis")
        report = await flow.verify()
        record_figures(figures(report, stats, faults="redis SIGKILL + restart",
                               processor_redis_retries=retries))  # fmt: skip
        assert retries and retries > 0
        assert_clean(report)


async def test_redis_state_loss_halts_deciding_until_an_operator_accepts_it(
    chaos_flow, isolated_services, tmp_path, record_figures
):
    redis = await isolated_services.redis()
    async with chaos_flow(partitions=4, redis=redis.url) as flow:
        parts = flow.settings.topic_partitions
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        first = await flow.load(seed=23, rate=500, events=1500, late=0.05)
        await first.finish()
        await flow.wait_drained()
        decided = await flow.end_offsets()

        await redis.arestart(wipe_data=True)  # Redis comes back empty
        second = await flow.load(seed=24, rate=500, events=600, late=0.05)
        await second.finish()

        async def all_halted() -> bool:
            got = await proc.health()
            return got is not None and len(got[1].get("stateLostPartitions", [])) == parts

        await wait_until(all_halted, 30, interval=0.2, what="every partition halted for lost state")
        status, body = await proc.health()
        lost_metric = [await proc.metric("concurrency_state_lost", partition=str(p)) for p in range(parts)]
        error_lines = [x for x in proc.logged("Redis lost the lease state") if x.get("level") == "ERROR"]
        committed = await flow.committed()
        assert status == 503 and body["status"] == "DOWN", body
        assert lost_metric == [1.0] * parts
        assert sorted(x["partition"] for x in error_lines) == list(range(parts))
        assert committed == decided  # not one event decided against the empty state

        code = proc.terminate(30)
        accepted = flow.spawn(tmp_path, ACCEPT_STATE_LOSS="true")
        await accepted.wait_healthy()
        await flow.wait_drained()
        accepts = accepted.logged("accepting lost Redis state")
        report = await flow.verify(resets=decided)
        record_figures(
            figures(report, faults="redis restarted empty; halted; restarted with ACCEPT_STATE_LOSS",
                    halted_partitions=parts, undecided_while_halted=second.stats.acked,
                    halted_exit_code=code, accepted_partitions=len(accepts))
        )  # fmt: skip
        assert code == 0
        assert len(accepts) == parts
        assert_clean(report)


async def test_lost_redis_replies_are_retried_and_return_the_stored_verdicts(
    chaos_flow, redis_url, tmp_path, record_figures
):
    rng = random.Random(2004)
    decide_sha = hashlib.sha1(_load_lua("decide_batch.lua").encode()).hexdigest().encode()
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with RedisReplyDropper(port, decide_sha) as proxy, chaos_flow(partitions=4) as flow:
        proc = flow.spawn(tmp_path, REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0")
        await proc.wait_healthy()
        load = await flow.load(seed=25, duplicates=0.03, late=0.05, without_event_id=0.05)
        for _ in range(3):
            await load.wait_acked(load.stats.acked + rng.randint(200, 600))
            wanted = proxy.dropped + 1
            proxy.drop_next_reply()
            await wait_until(lambda wanted=wanted: proxy.dropped >= wanted, 20, what="a decide reply dropped")
        stats = await load.finish()
        await flow.wait_drained()
        retries = await proc.metric("concurrency_retries_total", what="redis")
        report = await flow.verify()
        what = f"{proxy.dropped} decide replies lost after the script ran"
        record_figures(figures(report, stats, faults=what, processor_redis_retries=retries))
        assert proxy.dropped == 3
        assert retries is not None and retries >= 3
        assert_clean(report)


async def test_unwritable_verdicts_topic_holds_offsets_until_it_is_writable_again(
    chaos_flow, tmp_path, record_figures
):
    async with chaos_flow(partitions=4) as flow:
        s = flow.settings
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=26, duplicates=0.03, late=0.05, malformed=0.01)
        await load.wait_acked(900)
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
        await admin.start()
        try:
            await _set_topic_config(admin, s.verdicts_topic, {"max.message.bytes": "64"})
            await wait_until(lambda: _at_least(proc, "concurrency_retries_total", 3, what="produce"), 30,
                             interval=0.2, what="the processor failing to publish")  # fmt: skip
            # The commit of the last batch published before the change may still be in flight.
            held = await _settled_commits(flow)
            await load.wait_acked(load.stats.acked + 600)  # more events while nothing can be published
            await wait_until(lambda: _at_least(proc, "concurrency_retries_total", 6, what="produce"), 30,
                             interval=0.2, what="more failed publishes")  # fmt: skip
            still = await flow.committed()
            ends = await flow.end_offsets()
            snapshot = await flow.verifier(redis=False)
            await _set_topic_config(admin, s.verdicts_topic, {})  # back to the broker's defaults
        finally:
            await admin.close()
        stats = await load.finish()
        await flow.wait_drained()
        retries = await proc.metric("concurrency_retries_total", what="produce")
        report = await flow.verify()
        beyond = sum(
            1 for e in snapshot.expected.values() if e.main_ids and e.offset >= still.get(e.partition, 0)
        )
        waiting = sum(ends[p] - still.get(p, 0) for p in ends)
        record_figures(
            figures(report, stats, faults="verdicts topic max.message.bytes=64, then restored",
                    publish_retries=retries, events_waiting_while_unwritable=waiting,
                    verdicts_beyond_commit_while_unwritable=beyond)
        )  # fmt: skip
        assert still == held  # the committed offsets did not move
        assert waiting > 0 and beyond == 0  # events were waiting, none of them got a verdict
        assert_clean(report)


async def _settled_commits(flow, quiet_s: float = 1.5, timeout_s: float = 20.0) -> dict[int, int]:
    """The group's committed offsets once they have stopped moving for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last = await flow.committed()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = await flow.committed()
        if now == last:
            return now
        last = now
    raise AssertionError(f"committed offsets still moving after {timeout_s} s: {last}")


async def _at_least(proc, name: str, value: float, **labels: str) -> bool:
    got = await proc.metric(name, **labels)
    return got is not None and got >= value


async def _set_topic_config(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    [response] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    errors = [r for r in response.resources if r[0] != 0]
    assert not errors, errors
