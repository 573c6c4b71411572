"""Committing consumed offsets after their verdicts are acknowledged, one commit at a time.

A checkpoint per batch: the offsets of published batches accumulate, then go out in one
commit that runs while the next batch is decided. Commits are chained (never two at once,
so an older one cannot land after a newer one); a failed commit folds its offsets into
the next one.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from processor.metrics import Metrics
from processor.partitions import Partitions

log = logging.getLogger("processor")


class OffsetCommitter:
    def __init__(self, consumer: AIOKafkaConsumer, partitions: Partitions, metrics: Metrics) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self._metrics = metrics
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._task: asyncio.Task | None = None  # the latest commit

    def published(self, tp: TopicPartition, last_offset: int) -> None:
        """The batch up to `last_offset` is decided and its verdicts acknowledged."""
        self._pending[tp] = OffsetAndMetadata(last_offset + 1, "")

    def start(self) -> None:
        """Commit what was published, after (never beside) the commit before it."""
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        self._task = asyncio.create_task(self._commit(offsets, self._task))

    async def flush(self) -> None:
        """Commit everything published so far and wait for it."""
        self.start()
        if self._task is not None:
            await self._task

    async def _commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], previous: asyncio.Task | None
    ) -> None:
        if previous is not None:
            await previous
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner replays these offsets and gets the stored verdicts.
            log.warning("commit refused after a rebalance", extra={"error": repr(exc)})
            return
        except KafkaError as exc:
            # Kafka away for a moment: these offsets go out with the next commit.
            log.warning("commit failed; retried with the next batch", extra={"error": repr(exc)})
            self._metrics.retries.labels("commit").inc()
            for tp, meta in offsets.items():
                later = self._pending.get(tp)
                if later is None or later.offset < meta.offset:
                    self._pending[tp] = meta
            return
        for tp, meta in offsets.items():
            state = self._partitions.get(tp)
            if state is not None:
                state.committed_up_to(meta.offset)
