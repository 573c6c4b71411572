"""A claim is complete only when every step of it succeeded; every halt pauses its partition
and shows in the halted gauge with its reason; a position out of the log's range is the
"records gone" halt, never a silent reset (issue 28, correctness).

A claim is made to fail with a real fault: the processor connects as a Redis ACL user that may
not SCRIPT LOAD, so the first call of a script Redis does not hold is refused (NOSCRIPT, then
NOPERM); loading that script as the admin heals it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from processor.lease_store import _load_lua
from tests.harness import Flow, wait_until
from tests.integration.test_state_repair import users_on

SCRIPTS = ("decide_batch.lua", "claim_partition.lua", "accept_state_loss.lua")


@contextlib.asynccontextmanager
async def user_without_script_load(redis, flow: Flow, missing: str) -> AsyncIterator[str]:
    """A REDIS_URL whose user may do anything but SCRIPT LOAD, with every script loaded but
    `missing`."""
    name, password = f"noload-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all")
    await redis.execute_command("ACL", "SETUSER", name, "-script|load")
    await redis.script_flush()
    for script in SCRIPTS:
        if script != missing:
            await redis.script_load(_load_lua(script))
    try:
        yield flow.redis_url.replace("redis://", f"redis://{name}:{password}@", 1)
    finally:
        await redis.execute_command("ACL", "DELUSER", name)


def halted_gauge(processor) -> dict[tuple[str, str], float]:
    """The halted gauge's series: (partition, reason) -> value."""
    [metric] = [m for m in processor.metrics.registry.collect() if m.name == "concurrency_state_lost"]
    return {(s.labels["partition"], s.labels["reason"]): s.value for s in metric.samples}


async def test_a_claim_whose_last_step_fails_stays_halted_paused_and_shown_until_every_step_succeeds(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    async with flow_factory(partitions=2, accept_state_loss=True) as flow:
        tp = TopicPartition(flow.settings.events_topic, 0)
        async with user_without_script_load(redis_client, flow, "accept_state_loss.lua") as url:
            running = await flow.start_processor(redis_url=url)
            processor = running.processor
            await flow.send("start", user, "s0", at=0, event_id="e0")
            await flow.wait_events("e0")
            await wait_until(lambda: processor.partitions.get(tp).committed == 1, what="the commit")
            # Redis loses the partition's state under its running owner: its next call is fenced
            # (no epoch), the claim again finds it wiped, and accepting that (the flag is set)
            # needs the script this user cannot load: the claim fails after its first steps.
            tag = f"sc:{{{flow.settings.events_topic}:0}}"
            await redis_client.delete(*[k async for k in redis_client.scan_iter(match=f"{tag}*")])
            await flow.send("start", user, "s1", at=1, event_id="e1")

            def halted() -> bool:
                ok, body = processor.health()
                return not ok and body.get("haltReasons") == {"0": "claim_failed"}

            await wait_until(halted, what="the claim_failed halt")
            # Several retries claim an epoch each and fail at the same step: the partition stays
            # halted and paused, and e1 is not decided on a state nobody accepted.
            epoch = tag + ":p"
            await wait_until(lambda: _epoch_at_least(redis_client, epoch, 4), what="three claim retries")
            assert halted() and "e1" not in flow.verdicts_by_event()
            assert tp in processor._consumer.paused()
            assert halted_gauge(processor) == {("0", "claim_failed"): 1.0}

            await redis_client.script_load(_load_lua("accept_state_loss.lua"))  # the fault heals
            await flow.wait_events("e1")
            [e1] = flow.verdicts_by_event()["e1"]
            assert e1["reason"] == "started" and e1["activeStreams"] == 1  # the accepted empty state
            assert processor.health()[0]
            assert halted_gauge(processor) == {}
            await running.stop()


async def _epoch_at_least(redis, key: str, epoch: int) -> bool:
    value = await redis.hget(key, "epoch")
    return value is not None and int(value) >= epoch


async def test_records_deleted_below_a_halted_partitions_position_halt_it_as_gone_not_skipped(
    flow_factory, redis_client
):
    [user] = users_on(0, 2, 1)
    [healthy] = users_on(1, 2, 1)
    async with flow_factory(partitions=2) as flow:
        tp = TopicPartition(flow.settings.events_topic, 0)
        running = await flow.start_processor()
        await flow.send("start", user, "s0", at=0, event_id="e0")
        await flow.wait_events("e0")
        await running.stop()  # partition 0 committed at 1
        async with user_without_script_load(redis_client, flow, "claim_partition.lua") as url:
            halted = flow.launch_processor(redis_url=url)
            processor = halted.processor
            await wait_until(
                lambda: (
                    processor.health()[1].get("haltReasons") == {"0": "claim_failed", "1": "claim_failed"}
                ),
                what="both claims failed",
            )
            assert halted_gauge(processor) == {("0", "claim_failed"): 1.0, ("1", "claim_failed"): 1.0}
            assert processor._consumer.paused() == {tp, TopicPartition(tp.topic, 1)}
            # While it is halted, records arrive and the first of them are deleted: its position
            # (1) now lies below the log start (3).
            for i in (1, 2, 3):
                await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
            admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
            await admin.start()
            try:
                await admin.delete_records({tp: RecordsToDelete(before_offset=3)})
            finally:
                await admin.close()

            await redis_client.script_load(_load_lua("claim_partition.lua"))  # the claims complete
            await wait_until(
                lambda: processor.health()[1].get("haltReasons") == {"0": "state_lost"},
                what="the records-gone halt",
            )
            await flow.send("start", healthy, "h0", at=10, event_id="h0")
            await flow.wait_events("h0")  # the other partition goes on
            assert "e3" not in flow.verdicts_by_event()  # not decided past the gap on a stale state
            assert halted_gauge(processor) == {("0", "state_lost"): 1.0}
            assert tp in processor._consumer.paused()
            await halted.stop()
