"""The consumer lag of every owned partition: its log end minus its committed offset (as
kafka-exporter computes it), refreshed on a timer.

A gauge set only when a batch is decided freezes exactly when it matters: a halted partition,
or one whose calls are retried, decides nothing. Refreshed here, the lag grows while nothing is
decided. The log end costs nothing for a partition being fetched (each fetch response carries
its high watermark); a paused one (halted, or its claim not done) is asked with one
ListOffsets request per refresh for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from processor.metrics import Metrics
from processor.partitions import Partitions

log = logging.getLogger("processor")


class LagWatch:
    def __init__(
        self, consumer: AIOKafkaConsumer, partitions: Partitions, metrics: Metrics, interval_s: float
    ) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self._metrics = metrics
        self._interval_s = interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except KafkaError as exc:  # the broker away: the next refresh tries again
                log.warning("reading the log ends for the lag failed", extra={"error": repr(exc)})

    async def refresh(self) -> None:
        """Set the lag gauge of every owned partition."""
        states = list(self._partitions)
        paused = self._consumer.paused()
        ends: dict = {}
        ask = []
        for state in states:
            end = None if state.tp in paused else self._consumer.highwater(state.tp)
            if end is None:
                ask.append(state.tp)
            else:
                ends[state.tp] = end
        if ask:
            ends.update(await self._consumer.end_offsets(ask))
        for state in states:
            end = ends.get(state.tp)
            if end is None or self._partitions.get(state.tp) is not state:
                continue  # revoked meanwhile: its new owner shows it
            committed = max(state.committed, 0)  # none committed yet: counted from offset 0
            self._metrics.lag.labels(str(state.tp.partition)).set(max(0, end - committed))
