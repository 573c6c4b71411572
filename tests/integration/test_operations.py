"""What operators see and do: /health, /metrics, SIGTERM, and Redis state loss."""

from __future__ import annotations

import signal

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from tests.harness import Flow, wait_until


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def test_health_is_up_while_consuming_and_metrics_count_decisions(flow: Flow):
    running = flow._running[0]
    status, body = await get(running.processor.http_port, "/health")
    assert status == 200 and '"status": "UP"' in body
    await flow.send("start", "u1", "s1", at=0, event_id="e1")
    await flow.send_raw(b"nope", at=1)
    await flow.wait_verdicts(1)
    await flow.wait_dead_letters(1)

    async def counted() -> tuple[int, str] | None:  # counted once Kafka acknowledged the records
        status, text = await get(running.processor.http_port, "/metrics")
        return (status, text) if 'concurrency_dlq_total{error="not_json"}' in text else None

    status, metrics = await wait_until(counted, 10, what="the decision and the dead letter counted")
    assert status == 200
    assert 'concurrency_events_total{decision="allow",reason="started",type="start"} 1.0' in metrics
    assert 'concurrency_dlq_total{error="not_json"} 1.0' in metrics
    assert "concurrency_consumer_lag" in metrics and "concurrency_batch_seconds_bucket" in metrics


async def test_health_is_down_but_live_is_up_on_the_instance_that_has_no_partition(flow_factory):
    async with flow_factory(partitions=1) as flow:
        first = await flow.start_processor()
        second = flow.launch_processor()
        both = (first.processor, second.processor)
        # One partition, two instances: after the rebalance exactly one owns it.
        await wait_until(
            lambda: (
                all(p._consuming and p.http_port for p in both)
                and sorted(len(p._consumer.assignment()) for p in both) == [0, 1]
            ),
            what="rebalance",
        )
        owner = next(p for p in both if p._consumer.assignment())
        idle = next(p for p in both if not p._consumer.assignment())
        status, body = await get(idle.http_port, "/health")
        assert (status, orjson.loads(body)["status"]) == (503, "DOWN")
        assert (await get(idle.http_port, "/live"))[0] == 200  # a liveness probe must not restart it
        # The owner is DOWN while it claims the partition (its epoch, the state check), then UP.
        seen: list = []

        async def owner_up() -> bool:
            status, body = await get(owner.http_port, "/health")
            seen[:] = [status, orjson.loads(body)]
            return (status, seen[1]["status"]) == (200, "UP")

        try:
            await wait_until(owner_up, 30, interval=0.1, what="the owner's /health UP")
        except TimeoutError:
            raise AssertionError(f"the owner's /health stayed {seen}") from None
        assert (await get(owner.http_port, "/live"))[0] == 200


async def test_sigterm_finishes_the_batch_commits_and_exits_zero(flow: Flow, tmp_path):
    await flow._running[0].stop()
    proc = flow.spawn_processor(tmp_path)
    for i in range(50):
        await flow.send("start", f"u{i}", "s1", at=i, event_id=f"e{i}")
    try:
        await flow.wait_verdicts(50, timeout=60)
    except TimeoutError:
        raise AssertionError(f"no verdicts from the processor process; its log:\n{proc.log()}") from None
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()
    consumer = AIOKafkaConsumer(bootstrap_servers=flow.bootstrap, group_id=flow.settings.consumer_group)
    await consumer.start()
    try:
        committed = 0
        for p in range(flow.settings.topic_partitions):
            committed += await consumer.committed(TopicPartition(flow.settings.events_topic, p)) or 0
    finally:
        await consumer.stop()
    assert committed == 50
    assert '"processor stopped"' in proc.log()


def users_on_two_partitions() -> tuple[str, str]:
    partitioner, partitions = DefaultPartitioner(), [0, 1]
    users = [f"user-{i}" for i in range(20)]
    first = next(u for u in users if partitioner(u.encode(), partitions, partitions) == 0)
    second = next(u for u in users if partitioner(u.encode(), partitions, partitions) == 1)
    return first, second


async def test_lost_redis_state_halts_the_partition_until_an_operator_accepts_it(flow_factory, redis_client):
    lost_user, healthy_user = users_on_two_partitions()  # on partitions 0 and 1
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        for i in range(3):
            await flow.send("start", lost_user, f"s{i}", at=i, event_id=f"e{i}")
        await flow.send("start", healthy_user, "s0", at=3, event_id="healthy-0")
        await flow.wait_verdicts(4)
        await running.stop()
        # Redis loses everything of partition 0 (e.g. restarted without its data).
        async for key in redis_client.scan_iter(match=f"sc:{{{flow.settings.events_topic}:0}}*"):
            await redis_client.delete(key)

        halted = flow.launch_processor()
        processor = halted.processor
        await wait_until(lambda: processor.halted_partitions and processor._consuming, what="halt")
        status, body = await get(processor.http_port, "/health")
        assert status == 503 and '"stateLostPartitions": [0]' in body
        _, metrics = await get(processor.http_port, "/metrics")
        assert 'concurrency_state_lost{partition="0",reason="state_lost"} 1.0' in metrics
        await flow.send("start", lost_user, "s-extra", at=100, event_id="while-halted")
        await flow.send("start", healthy_user, "s1", at=101, event_id="healthy-1")
        await flow.wait_verdicts(5)  # the healthy partition goes on ...
        assert "while-halted" not in flow.verdicts_by_event()  # ... the lost one is not decided
        await halted.stop()

        await flow.start_processor(accept_state_loss=True)
        verdicts = await flow.wait_verdicts(6)
        assert verdicts[-1]["eventId"] == "while-halted" and verdicts[-1]["reason"] == "started"
