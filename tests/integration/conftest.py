from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from tests.harness import Flow
from tests.redis_targets import RedisTarget


@pytest.fixture
def flow_factory(
    kafka_bootstrap: str, redis_target: RedisTarget
) -> Callable[..., AbstractAsyncContextManager[Flow]]:
    """Fresh topics and group: `async with flow_factory(partitions=4, overflow_policy="reject") as f:`.
    On the test's Redis (redis_target: the single server unless parametrised)."""

    def make(partitions: int = 4, **overrides: object) -> Flow:
        return Flow(
            kafka_bootstrap,
            redis_target.url,
            partitions,
            {"redis_cluster": redis_target.cluster, **overrides},
        )

    return make


@pytest.fixture
async def flow(flow_factory) -> AsyncIterator[Flow]:
    """A flow with default rules (3 streams, 90 s TTL, reject) and one processor running."""
    async with flow_factory() as f:
        await f.start_processor()
        yield f
