"""The simulator's and the verifier's Kafka plumbing: topics, verdict consumers, whole-topic
reads, committed offsets, and the policies topic (written before a run, read into a table).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processor.connections import KafkaAccess, kafka_access
from processor.policies import PolicyTable, ensure_policies_topic, read_policies
from processor.topics import EVENTS_TOPIC_CONFIGS, ensure_topics
from producer_sim.plans import policy_table
from producer_sim.settings import SimSettings

log = logging.getLogger(__name__)

POLICY_GRACE_S = 3.0  # a running processor applies a policy change "normally within a second"


async def ensure_sim_topics(settings: SimSettings) -> dict[str, int]:
    """Create the events and verdicts topics if missing (as the processor would); their partition counts."""
    kafka = kafka_access(settings)
    admin = kafka.admin()
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()
    return await ensure_topics(
        kafka,
        [settings.events_topic, settings.verdicts_topic],
        settings.topic_partitions,
        max(1, min(3, brokers)),
        configs={settings.events_topic: EVENTS_TOPIC_CONFIGS},
    )


async def topic_partitions(kafka: KafkaAccess | str, topic: str) -> int:
    admin = KafkaAccess.of(kafka).admin()
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise RuntimeError(f"topic {topic} does not exist (error code {described['error_code']})")
    return len(described["partitions"])


async def start_verdict_consumer(
    kafka: KafkaAccess | str, topic: str, partitions: int | None = None, from_end: bool = True
) -> AIOKafkaConsumer:
    """A group-less consumer with every partition of `topic` assigned, positioned at the end."""
    if partitions is None:
        partitions = await topic_partitions(kafka, topic)
    consumer = KafkaAccess.of(kafka).consumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest" if from_end else "earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        if from_end:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve now, before anything is produced
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def read_topic(kafka: KafkaAccess | str, topic: str, timeout_s: float = 120.0) -> list[ConsumerRecord]:
    """Every record of `topic`, from the beginning to the end offsets seen at the start.
    RuntimeError when the topic does not exist."""
    partitions = await topic_partitions(kafka, topic)
    consumer = KafkaAccess.of(kafka).consumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets in {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for tp, recs in batch.items():
                out.extend(r for r in recs if r.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


async def committed_offsets(kafka: KafkaAccess | str, group: str, topic: str) -> dict[int, int]:
    """partition -> committed offset of `group` on `topic` (partitions without one are left out)."""
    admin = KafkaAccess.of(kafka).admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }


# --------------------------------------------------------------------------------------------
# the policies topic
# --------------------------------------------------------------------------------------------


async def read_policy_table(
    kafka: KafkaAccess | str, topic: str, max_streams: int, overflow: str
) -> PolicyTable:
    """The policies in force, as the processor reads them: every record of `topic` in order
    (a missing topic: the settings alone). Malformed records are skipped, as it skips them."""
    try:
        partitions = await topic_partitions(kafka, topic)
    except RuntimeError:  # no such topic: no policies
        return PolicyTable(max_streams, overflow)
    return await read_policies(kafka, topic, partitions, max_streams, overflow)


async def install_policies(
    settings: SimSettings, records: list[tuple[bytes, bytes]], grace_s: float = POLICY_GRACE_S
) -> PolicyTable:
    """Make `records` the policies in force for their keys, and return the whole table.

    Records already in force are not written again. When some had to be written, a running
    processor needs a moment to read them: the run waits `grace_s` before it starts (zero
    when the processor starts afterwards, as in the demo: it reads the topic before deciding).
    """
    await ensure_policies_topic(settings, needs=("Write",))  # type: ignore[arg-type]  # SimSettings has what it reads
    kafka, topic = kafka_access(settings), settings.policies_topic
    limits = (settings.max_streams, settings.overflow_policy)
    current = (await read_policy_table(kafka, topic, *limits)).listing()
    wanted = policy_table(*limits, list(records)).listing()
    stale = [(key, value) for key, value in records if current.get(key.decode()) != wanted[key.decode()]]
    if stale:
        producer = kafka.producer(enable_idempotence=True, acks="all")
        await producer.start()
        try:
            for key, value in stale:
                await producer.send_and_wait(topic, key=key, value=value)
        finally:
            await producer.stop()
        log.info("wrote %d policy records to %s", len(stale), topic)
        if grace_s > 0:
            await asyncio.sleep(grace_s)
    return await read_policy_table(kafka, topic, *limits)
