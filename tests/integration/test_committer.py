"""The offset committer against a real broker and consumer group: what flush() promises
(everything published is committed when it returns, nothing left in flight)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor.committer import OffsetCommitter
from processor.cycle import CyclePolicy
from processor.metrics import Metrics
from processor.partitions import Partitions
from producer_sim.kafka_io import committed_offsets
from tests.harness import wait_until


async def test_flush_returns_only_after_every_published_offset_is_committed_and_none_in_flight(
    kafka_bootstrap, topic_factory
):
    topic = await topic_factory(partitions=1)
    group = f"group-{uuid.uuid4().hex[:10]}"
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    consumer.subscribe([topic])
    await consumer.start()
    try:

        async def assigned() -> bool:
            await consumer.getmany(timeout_ms=50)
            return tp in consumer.assignment()

        await wait_until(assigned, what="the partition assigned")
        partitions = Partitions()
        partitions.assign(tp).claimed(1, -1)
        # COMMIT_INTERVAL_MS=0 (allowed by the settings): a commit may start whenever none is in flight.
        committer = OffsetCommitter(
            consumer,
            partitions,
            Metrics(),
            CyclePolicy(gather_ms=20, gather_bytes=32 * 1024, idle_wait_ms=500, commit_interval_s=0.0),
        )
        committer.published(tp, 9)  # starts a commit of 10 at once
        assert committer.in_flight
        committer.published(tp, 19)  # waits for it: at most one commit in flight
        await committer.flush()
        # flush() is what a stop and a revocation rely on: it commits what was published and
        # waits for it, so the consumer may leave the group the moment it returns.
        running = [t for t in asyncio.all_tasks() if "OffsetCommitter._commit" in repr(t.get_coro())]
        assert not running, f"flush returned with a commit still running: {running}"
        assert partitions.committed(tp) == 20
        # As Processor.close() does next: leave the group. The offsets must be in Kafka.
        await consumer.stop()
        assert (await committed_offsets(kafka_bootstrap, group, topic)).get(0) == 20
    finally:
        await consumer.stop()
