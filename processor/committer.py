"""Committing consumed offsets after their verdicts are acknowledged: at most one commit in
flight, at most one started per commit interval (cycle.CyclePolicy).

The offsets of published batches accumulate in `pending`; a commit takes all of them. While
it is in flight, what is published merges into the next one, which starts when the interval
since the last start has passed (a timer, so the last offsets of a burst are committed even
when nothing follows them). Never two commits at once, so an older one cannot land after a
newer one; a failed commit folds its offsets back into the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from processor.cycle import CyclePolicy
from processor.metrics import Metrics
from processor.partitions import Partitions

log = logging.getLogger("processor")


class OffsetCommitter:
    def __init__(
        self, consumer: AIOKafkaConsumer, partitions: Partitions, metrics: Metrics, policy: CyclePolicy
    ) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self._metrics = metrics
        self._policy = policy
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._task: asyncio.Task | None = None  # the commit in flight, at most one
        self._timer: asyncio.TimerHandle | None = None  # the next commit's start
        self._last_start = float("-inf")
        self._flushing = False
        self._lag_gauges: dict[TopicPartition, object] = {}  # labels() costs microseconds: once
        # Per partition: the offset after the last record fetched, and since when (the last
        # commit that landed, or the first fetch) records fetched have waited for their commit.
        self._fetched: dict[TopicPartition, int] = {}
        self._waiting_since: dict[TopicPartition, float] = {}
        self._fetched_gauges: set[TopicPartition] = set()

    def fetched(self, tp: TopicPartition, last_offset: int) -> None:
        """Records up to `last_offset` were taken from the consumer: they wait for their commit."""
        self._fetched[tp] = last_offset + 1
        if tp not in self._waiting_since:
            if tp not in self._fetched_gauges:
                gauge = self._metrics.seconds_since_commit.labels(str(tp.partition))
                gauge.set_function(lambda tp=tp: self.seconds_since_commit(tp))
                self._fetched_gauges.add(tp)
            self._waiting_since[tp] = time.monotonic()

    def seconds_since_commit(self, tp: TopicPartition) -> float:
        since = self._waiting_since.get(tp)
        return 0.0 if since is None else time.monotonic() - since

    def _landed(self, tp: TopicPartition, offset: int) -> None:
        """A commit up to `offset` landed (or was there already): what it covers waits no more."""
        if tp not in self._waiting_since:
            return
        if offset >= self._fetched.get(tp, 0):
            del self._waiting_since[tp]
        else:
            self._waiting_since[tp] = time.monotonic()  # the last successful commit

    def published(self, tp: TopicPartition, last_offset: int) -> None:
        """The batch up to `last_offset` is decided and its verdicts acknowledged."""
        self._pending[tp] = OffsetAndMetadata(last_offset + 1, "")
        self._show_lag(tp, last_offset + 1)
        if self._task is None and self._timer is None:
            self._schedule()

    def forget(self, tps) -> None:
        """Revoked partitions: their offsets are the next owner's to commit."""
        for tp in tps:
            self._pending.pop(tp, None)
            if self._lag_gauges.pop(tp, None) is not None:
                self._metrics.committed_lag.remove(str(tp.partition))
            self._fetched.pop(tp, None)
            self._waiting_since.pop(tp, None)
            if tp in self._fetched_gauges:
                self._fetched_gauges.discard(tp)
                self._metrics.seconds_since_commit.remove(str(tp.partition))

    def _show_lag(self, tp: TopicPartition, published: int) -> None:
        gauge = self._lag_gauges.get(tp)
        if gauge is None:
            gauge = self._lag_gauges[tp] = self._metrics.committed_lag.labels(str(tp.partition))
        state = self._partitions.get(tp)
        gauge.set(max(0, published - state.committed) if state is not None and state.committed >= 0 else 0)

    @property
    def in_flight(self) -> bool:
        return self._task is not None

    def _schedule(self) -> None:
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        delay = self._policy.commit_delay(self._last_start, loop.time())
        if delay <= 0:
            self._start()
        else:
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._task is None:
            self._start()

    def _start(self) -> None:
        offsets, self._pending = self._pending, {}
        self._last_start = asyncio.get_running_loop().time()
        task = self._task = asyncio.create_task(self._commit(offsets))
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        if self._task is task:
            self._task = None
            if self._timer is None and not self._flushing:
                self._schedule()

    async def flush(self) -> None:
        """Commit everything published so far, now, and wait for it (a stop, a revocation)."""
        self._flushing = True  # the done callback starts no commit meanwhile: this one does
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            task = self._task
            if task is not None:
                await asyncio.wait({task})
                if self._task is task:
                    self._task = None
            if self._pending:
                offsets, self._pending = self._pending, {}
                self._last_start = asyncio.get_running_loop().time()
                await self._commit(offsets)  # failed: the next owner replays from the last that landed
        finally:
            self._flushing = False

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        """One commit; False when it failed and its offsets went back to `pending`."""
        # A repair replays offsets Kafka has committed already (repair.py): never commit backwards.
        # (One commit at a time, so `committed` holds every commit that landed before this one.)
        wanted, offsets = (
            offsets,
            {tp: m for tp, m in offsets.items() if m.offset > self._partitions.committed(tp)},
        )
        for tp in wanted.keys() - offsets.keys():
            self._landed(tp, self._partitions.committed(tp))
        if not offsets:
            return True
        started = time.perf_counter()
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on: the new owner replays these offsets and gets the stored verdicts.
            log.warning("commit refused after a rebalance", extra={"error": repr(exc)})
            self._metrics.commit_failures.labels("rebalance").inc()
            return True
        except KafkaError as exc:
            # Kafka away for a moment: these offsets go out with the next commit.
            log.warning("commit failed; retried with the next commit", extra={"error": repr(exc)})
            self._metrics.retries.labels("commit").inc()
            self._metrics.commit_failures.labels("retriable").inc()
            for tp, meta in offsets.items():
                later = self._pending.get(tp)
                if later is None or later.offset < meta.offset:
                    self._pending[tp] = meta
            return False
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        for tp, meta in offsets.items():
            self._landed(tp, meta.offset)
            state = self._partitions.get(tp)
            if state is not None:
                state.committed_up_to(meta.offset)
            if tp in self._lag_gauges:
                later = self._pending.get(tp)
                self._show_lag(tp, meta.offset if later is None else later.offset)
        return True
