"""The consumer of the events topic, tuned for batches that span several partitions."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer

from processor.config import Settings
from processor.connections import KafkaAccess, kafka_access
from processor.cycle import CyclePolicy
from processor.kafka_checks import AUTHORIZATION_ERRORS, refusal
from processor.retrying import StopRequested

log = logging.getLogger("processor")


def events_consumer(s: Settings, kafka: KafkaAccess | None = None) -> AIOKafkaConsumer:
    """The events consumer, with the settings' security (or `kafka`'s, made from them once)."""
    return (kafka or kafka_access(s)).consumer(
        group_id=s.consumer_group,
        enable_auto_commit=False,
        # Never a silent reset: a position out of the log's range raises (OffsetOutOfRangeError,
        # the claimer's position_lost: the "records gone" halt), and a partition with no committed
        # offset is started at its earliest retained record by its claim.
        auto_offset_reset="none",
        isolation_level="read_committed",  # an aborted transaction's events did not happen
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


class RefusedFetches:
    """A fetch Kafka refuses at run time (Read revoked on the events topic): held, not fatal.

    Nothing of a refused fetch is decided or committed, the position stays where it was; the
    refusal is said on /health (`consumeError`) and in the log at each attempt, and the fetch is
    tried again with backoff, so a grant back lets the processor go on where it stopped.
    """

    def __init__(self, kafka: KafkaAccess, uses: dict[str, str], backoff) -> None:
        self._kafka = kafka
        self._uses = uses
        self._backoff = backoff
        self._attempt = 0
        self.detail: str | None = None  # the refusal being held, for /health

    async def getmany(self, consumer: AIOKafkaConsumer, **kwargs) -> dict:
        try:
            records = await consumer.getmany(**kwargs)
        except AUTHORIZATION_ERRORS as exc:
            self._attempt += 1
            self.detail = str(refusal(exc, self._kafka, self._uses))
            log.error(
                "fetching events refused; nothing decided or committed, retrying",
                extra={"detail": self.detail, "attempt": self._attempt},
            )
            try:
                await self._backoff(self._attempt)
            except StopRequested:
                pass  # the loop sees the stop
            return {}
        if self.detail is not None:
            log.info("fetching events works again", extra={"after_attempts": self._attempt})
        self.detail, self._attempt = None, 0
        return records
