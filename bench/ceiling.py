"""Candidate 1, the ceiling: the strongest pass-through on the same broker and data.

One consumer with large fetches; per partition batch one `create_batch` + `send_batch` to the
same partition of the output topic (key and value copied, no JSON, no Redis); offsets are
committed only after the acks. Fetching, producing and acknowledging overlap: the next
`getmany` runs while the previous batch's acks are awaited (a bounded window), commits go
in order. Producer settings match the processor's (idempotent, acks=all), so the ratio
compares work per event, not durability.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.access import bench_kafka
from processor.kafka_batches import send_in_batches

BATCH_BYTES = 900 * 1024
WINDOW = 3  # batches whose acks may be outstanding while the next one is fetched


async def run_ceiling(
    bootstrap: str,
    events_topic: str,
    out_topic: str,
    group: str,
    ends: dict[int, int],
    max_records: int = 20_000,
) -> dict:
    consumer = bench_kafka(bootstrap).consumer(
        events_topic,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    producer = bench_kafka(bootstrap).producer(
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=BATCH_BYTES,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    target = {TopicPartition(events_topic, p): end for p, end in ends.items() if end > 0}
    committed: dict[TopicPartition, int] = {}
    inflight: list[asyncio.Task] = []
    commit_lock = asyncio.Lock()
    batches = records_total = 0

    async def ack_then_commit(futures: list, offsets: dict) -> None:
        await asyncio.gather(*futures)
        async with commit_lock:  # tasks were created in order and take the lock in order
            await consumer.commit(offsets)
            for tp, meta in offsets.items():
                committed[tp] = max(committed.get(tp, 0), meta.offset)

    try:
        position: dict[TopicPartition, int] = {}
        while any(position.get(tp, 0) < end for tp, end in target.items()):
            data = await consumer.getmany(timeout_ms=500, max_records=max_records)
            if not data:
                continue
            futures = []
            offsets = {}
            for tp, recs in data.items():
                if not recs:
                    continue
                futures += await send_in_batches(
                    producer, out_topic, tp.partition, ((r.key, r.value, None) for r in recs)
                )
                offsets[tp] = OffsetAndMetadata(recs[-1].offset + 1, "")
                position[tp] = recs[-1].offset + 1
                records_total += len(recs)
            batches += 1
            inflight.append(asyncio.ensure_future(ack_then_commit(futures, offsets)))
            while len(inflight) >= WINDOW:
                await inflight.pop(0)
        for task in inflight:
            await task
        end_wall = time.time()
    finally:
        for task in inflight:
            task.cancel()
        await consumer.stop()
        await producer.stop()
    return {"records": records_total, "fetch_batches": batches, "done_wall": end_wall}
