"""The consumer of the events topic, tuned for batches that span several partitions."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer

from processor.config import Settings
from processor.connections import KafkaAccess
from processor.cycle import CyclePolicy

log = logging.getLogger("processor")


def events_consumer(s: Settings, kafka: KafkaAccess) -> AIOKafkaConsumer:
    return kafka.consumer(
        group_id=s.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Small per-partition fetches: one getmany then spans several partitions, whose
        # script calls overlap with the Python work of the others.
        max_partition_fetch_bytes=256 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        # Idle: a long poll that answers the first record at once; FetchPacing switches to the
        # gathering window while records flow (cycle.py).
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        fetch_min_bytes=1,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        max_poll_interval_ms=s.max_poll_interval_ms,
    )


class FetchPacing:
    """Switches the consumer's fetches between the idle long poll and the gathering window.

    aiokafka reads fetch.max.wait.ms and fetch.min.bytes from its fetcher at every request
    but has no public setter; where its fetcher does not have them (another aiokafka), the
    consumer keeps its idle settings and the cycle does not gather (logged once).
    """

    def __init__(self, consumer: AIOKafkaConsumer, policy: CyclePolicy) -> None:
        self._consumer = consumer
        self._policy = policy
        self._idle: bool | None = None

    def set(self, idle: bool) -> None:
        if idle is self._idle:
            return
        self._idle = idle
        fetcher = getattr(self._consumer, "_fetcher", None)
        if not (hasattr(fetcher, "_fetch_max_wait_ms") and hasattr(fetcher, "_fetch_min_bytes")):
            if not idle:
                log.warning("this aiokafka's fetcher cannot be paced: cycles do not gather")
            return
        fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = self._policy.fetch_wait(idle)
