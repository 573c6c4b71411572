"""Waiting out a Redis that is away, and the backoff every retry loop of the processor shares.

The backoff sleeps on the processor's stop event, so a stop cuts any wait short: the work
in hand is abandoned (StopRequested) and nothing of it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as redis_errors

from processor.metrics import Metrics

log = logging.getLogger("processor")

T = TypeVar("T")

# Failures worth waiting out: the service is away, not the data wrong.
TRANSIENT_REDIS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    # A Redis Cluster failing over: no master for a slot yet (the client retried a few times).
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    OSError,
)
MAX_BACKOFF_S = 5.0


class StopRequested(Exception):
    """The batch was abandoned because the processor is stopping; nothing was committed."""


class Retrier:
    def __init__(self, metrics: Metrics, stopping: asyncio.Event) -> None:
        self._metrics = metrics
        self._stopping = stopping

    async def retry_redis(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Await call() until it does not fail with a transient Redis error."""
        attempt = 0
        while True:
            try:
                return await call()
            except TRANSIENT_REDIS as exc:
                attempt += 1
                self._metrics.retries.labels("redis").inc()
                log.warning(
                    "Redis unavailable; retrying",
                    extra={"what": what, "error": repr(exc), "attempt": attempt},
                )
                await self.backoff(attempt)

    async def backoff(self, attempt: int) -> None:
        """Sleep an exponential, jittered delay; raise StopRequested if the processor stops."""
        delay = min(MAX_BACKOFF_S, 0.05 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise StopRequested
