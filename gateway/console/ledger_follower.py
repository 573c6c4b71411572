"""Following the verdicts topic (the session ledger) into the console's LedgerIndex.

Read by assignment from the earliest retained verdict, without a consumer group or commits
(nothing to coordinate: every gateway instance keeps its own index; the ACL it needs is Read +
Describe on the verdicts topic). The consumer is built like the processor's policies reader
(`whole_topic_reader`). aiokafka's fetch loop says nothing when the broker is away (a fetch
just returns empty), so the follower asks Kafka for the topic's end every CONSOLE_CHECK_SECONDS:
an answer proves Kafka answers and says how far behind the index is; the page calls the live
picture stale when no answer came for CONSOLE_STALE_AFTER_SECONDS, or while the index is still
reading the topic's backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from gateway.console.ledger import LedgerIndex
from processor.connections import KafkaAccess
from processor.policies import whole_topic_reader

log = logging.getLogger("gateway.console")

FETCH_MAX_RECORDS = 10_000
CHECK_TIMEOUT_SECONDS = 5.0


class LedgerFollower:
    def __init__(
        self, kafka: KafkaAccess | str, topic: str, index: LedgerIndex, check_seconds: float = 2.0
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self.index = index
        self._check_seconds = check_seconds
        self._consumer = None
        self._tps: list[TopicPartition] = []
        self._task: asyncio.Task | None = None
        self.checked_at: float | None = None  # time.monotonic() of Kafka's last answer
        self.behind: int | None = None  # verdicts between the index and the topic's end then
        self.caught_up = False  # the index reached the topic's end once
        self.error: str | None = None

    async def start(self, partitions: int) -> None:
        consumer = whole_topic_reader(self._kafka)
        await consumer.start()
        self._consumer = consumer
        self._tps = [TopicPartition(self._topic, p) for p in range(partitions)]
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._task = asyncio.create_task(self._follow(), name="console-ledger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        next_check = 0.0
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=FETCH_MAX_RECORDS)
                add = self.index.add
                for records in batch.values():
                    for rec in records:
                        add(rec.value)
                if loop.time() >= next_check:
                    await asyncio.wait_for(self._check(), CHECK_TIMEOUT_SECONDS)
                    next_check = loop.time() + self._check_seconds
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                # Kept going: the page shows the picture as stale until Kafka answers again.
                self.error = repr(exc)
                log.warning("console: reading the ledger failed; retrying", extra={"error": self.error})
                await asyncio.sleep(1)

    async def _check(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(self._tps)
        behind = 0
        for tp, end in ends.items():
            behind += max(0, end - await consumer.position(tp))
        self.behind = behind
        self.checked_at = time.monotonic()
        self.error = None
        if behind == 0 and not self.caught_up:
            self.caught_up = True
            log.info("console: ledger read to its end", extra=self.index.stats())

    def staleness(self, stale_after: float) -> str | None:
        """Why the index cannot be shown as live now, None when it can."""
        if self.checked_at is None or time.monotonic() - self.checked_at > stale_after:
            since = "yet" if self.checked_at is None else f"for {time.monotonic() - self.checked_at:.0f} s"
            return f"Kafka has not answered {since}" + (f" ({self.error})" if self.error else "")
        if not self.caught_up:
            return f"reading the ledger: {self.behind} verdicts to go"
        return None
