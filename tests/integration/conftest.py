from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from tests.harness import Flow


@pytest.fixture
def flow_factory(kafka_bootstrap: str, redis_url: str) -> Callable[..., AbstractAsyncContextManager[Flow]]:
    """Fresh topics and group: `async with flow_factory(partitions=4, overflow_policy="reject") as f:`."""

    def make(partitions: int = 4, **overrides: object) -> Flow:
        return Flow(kafka_bootstrap, redis_url, partitions, overrides)

    return make


@pytest.fixture
async def flow(flow_factory) -> AsyncIterator[Flow]:
    """A flow with default rules (3 streams, 90 s TTL, reject) and one processor running."""
    async with flow_factory() as f:
        await f.start_processor()
        yield f
