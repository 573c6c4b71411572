"""The consumer of the events topic, tuned for batches that span several partitions."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from processor.config import Settings


def events_consumer(s: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=s.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Small per-partition fetches: one getmany then spans several partitions, whose
        # script calls overlap with the Python work of the others.
        max_partition_fetch_bytes=256 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        # A long-poll fetch holds back partitions whose records were just consumed until it
        # returns: keep it short so those partitions are asked again soon (latency).
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        max_poll_interval_ms=s.max_poll_interval_ms,
    )
