"""Topics, partitioning and the one timing method every candidate shares.

The loaders place each key where the bench's processors look for it: EVENT_PARTITIONER of
the bench's environment, which the processors it starts inherit (processor/partitioning.py).

Every output topic is created with `message.timestamp.type=LogAppendTime`: the broker stamps
each record when it appends it, so a candidate's throughput is its output count over the
span from its first to its last append, measured by the same clock for everyone.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, for_code

from bench.access import bench_kafka
from processor.config import CommonSettings
from processor.partitioning import ProducerPartitioner, partition_for

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
_ALREADY_EXISTS = 36


@functools.cache
def events_partitioner() -> str:
    """EVENT_PARTITIONER of the bench's environment (default murmur2, as aiokafka and Java)."""
    return CommonSettings().event_partitioner


def partition_of(key: bytes, partitions: int) -> int:
    """The events partition the bench's processors expect `key` in."""
    return partition_for(events_partitioner(), key, partitions)


def events_producer_partitioner() -> ProducerPartitioner:
    """aiokafka's `partitioner=` for a bench producer of events (same placement as partition_of)."""
    return ProducerPartitioner(events_partitioner())


async def create_topics(
    bootstrap: str, names: list[str], partitions: int, configs: dict | None = None
) -> None:
    admin = bench_kafka(bootstrap).admin()
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs=dict(configs or {})) for n in names]
        )
        for err in resp.topic_errors:
            if err[1] not in (0, _ALREADY_EXISTS):
                raise for_code(err[1])(f"cannot create topic {err[0]}: {err[2:]}")
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics(names)
            ready = [
                d
                for d in described
                if d["error_code"] == 0 and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
            ]
            if len(ready) == len(names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have no leaders after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = bench_kafka(bootstrap).admin()
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = bench_kafka(bootstrap).consumer()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def wait_group_done(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    timeout_s: float,
    poll_s: float = 0.25,
    alive=lambda: True,
) -> float:
    """Poll the group's committed offsets until they reach `ends`; return the wall time seen done."""
    admin = bench_kafka(bootstrap).admin()
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group does not exist yet (its members are starting up)
                offsets = {}
            done = all(
                (m := offsets.get(TopicPartition(topic, p))) is not None and m.offset >= end
                for p, end in ends.items()
                if end > 0
            )
            if done:
                return time.time()
            if not alive():
                raise RuntimeError(f"the candidate of group {group} exited before finishing")
            if time.monotonic() > deadline:
                got = sum(max(0, m.offset) for tp, m in offsets.items() if tp.topic == topic)
                raise TimeoutError(
                    f"group {group} committed {got} of {sum(ends.values())} offsets within {timeout_s:.0f} s"
                )
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()


@dataclass
class OutputTiming:
    records: int
    first_ms: int
    last_ms: int
    log_append_time: bool

    @property
    def seconds(self) -> float:
        return max(1e-3, (self.last_ms - self.first_ms) / 1000)

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds


async def read_output_timing(bootstrap: str, topic: str) -> OutputTiming:
    """Read the whole output topic: record count and the first/last append timestamps."""
    consumer = bench_kafka(bootstrap).consumer(
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        count, first, last, lat = 0, None, None, True
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=100_000)
            for tp, recs in batch.items():
                if not recs:
                    continue
                count += len(recs)
                lo = min(r.timestamp for r in recs)
                hi = max(r.timestamp for r in recs)
                first = lo if first is None else min(first, lo)
                last = hi if last is None else max(last, hi)
                lat = lat and recs[0].timestamp_type == 1
                if recs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return OutputTiming(count, first or 0, last or 0, lat)
    finally:
        await consumer.stop()
