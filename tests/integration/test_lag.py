"""The consumer lag grows while nothing is decided (issue 28): refreshed on a timer from the log
end and the committed offset, not only when a batch is decided, so a halted partition's lag
rises with every record that waits."""

from __future__ import annotations

from tests.harness import wait_until
from tests.integration.test_state_repair import users_on


async def test_a_halted_partitions_lag_grows_with_the_records_that_wait(flow_factory, redis_client):
    [user] = users_on(0, 2, 1)
    [healthy] = users_on(1, 2, 1)
    async with flow_factory(partitions=2, lag_interval_ms=200) as flow:
        running = await flow.start_processor()
        for i in range(2):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
        await flow.wait_events("e0", "e1")
        await running.stop()  # partition 0 committed at 2
        tag = f"sc:{{{flow.settings.events_topic}:0}}"
        await redis_client.delete(*[k async for k in redis_client.scan_iter(match=f"{tag}*")])  # wiped

        halted = flow.launch_processor()
        processor = halted.processor
        await wait_until(lambda: processor.halted_partitions == [0], what="the state_lost halt")

        def lag(partition: int) -> float | None:
            registry = processor.metrics.registry
            return registry.get_sample_value("concurrency_consumer_lag", {"partition": str(partition)})

        await wait_until(lambda: lag(0) == 0, what="the halted partition's lag shown")
        for i in range(2, 5):
            await flow.send("start", user, f"s{i}", at=i, event_id=f"e{i}")
        await wait_until(lambda: lag(0) == 3, what="the lag to grow by the 3 records that wait")
        await flow.send("start", healthy, "h0", at=10, event_id="h0")
        await flow.wait_events("h0")
        await wait_until(lambda: lag(1) == 0, what="the decided partition's lag back to 0")
        assert lag(0) == 3
        await halted.stop()
