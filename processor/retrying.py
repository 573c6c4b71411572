"""Waiting out a Redis that is away, and the backoff every retry loop of the processor shares.

The backoff sleeps on the processor's stop event, so a stop cuts any wait short: the work
in hand is abandoned (StopRequested) and nothing of it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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


def utc_iso(wall: float) -> str:
    """A wall-clock time as /health shows it: ISO 8601 UTC, milliseconds."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Retrier:
    def __init__(self, metrics: Metrics, stopping: asyncio.Event) -> None:
        self._metrics = metrics
        self._stopping = stopping
        # The Redis calls being retried now (several: the loop's, a claim's in the background),
        # for /health: what, since when (wall clock), attempts so far.
        self._retrying: dict[object, tuple[str, float, int]] = {}

    def in_progress(self) -> list[dict]:
        """The retries in progress, oldest first, as /health names them."""
        return [
            {"what": f"redis: {what}", "since": utc_iso(since), "attempts": attempts}
            for what, since, attempts in sorted(self._retrying.values(), key=lambda r: r[1])
        ]

    async def retry_redis(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Await call() until it does not fail with a transient Redis error."""
        try:
            return await call()  # the usual case: no bookkeeping
        except TRANSIENT_REDIS as exc:
            error = exc
        key = object()
        since = time.time()
        try:
            attempt = 0
            while True:
                attempt += 1
                self._retrying[key] = (what, since, attempt)
                self._metrics.retries.labels("redis").inc()
                log.warning(
                    "Redis unavailable; retrying",
                    extra={"what": what, "error": repr(error), "attempt": attempt},
                )
                await self.backoff(attempt)
                try:
                    return await call()
                except TRANSIENT_REDIS as exc:
                    error = exc
        finally:
            self._retrying.pop(key, None)

    async def backoff(self, attempt: int) -> None:
        """Sleep an exponential, jittered delay; raise StopRequested if the processor stops."""
        delay = min(MAX_BACKOFF_S, 0.05 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise StopRequested
