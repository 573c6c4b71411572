"""Producing many records to one partition with `send_batch` instead of one `send` each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer


async def send_in_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Iterable[tuple[bytes | None, bytes | None, int | None]],
) -> list[asyncio.Future]:
    """Send (key, value, timestamp) records to `topic`/`partition`, in order; return the futures.

    A batch is sent whenever it is full, then a new one is started. Per-record `send` costs
    more (partitioner, one future per record) than encoding the record itself.
    """
    futures = []
    batch = producer.create_batch()
    for key, value, timestamp in records:
        if batch.append(key=key, value=value, timestamp=timestamp) is None:
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=timestamp)
    batch.close()
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
