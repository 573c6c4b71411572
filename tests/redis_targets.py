"""Where a test's Redis is: the session's single server, or the session's Redis Cluster.

A module runs its tests on both with ``pytestmark = ON_SINGLE_AND_CLUSTER``; the
``redis_target`` fixture (tests/conftest.py) then gives each run its URL and cluster flag, and
``flow_factory`` / ``redis_client`` follow it. Without the mark, tests get the single server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from processor.redis_client import connect

ON_SINGLE_AND_CLUSTER = pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
ON_CLUSTER = pytest.mark.parametrize("redis_target", ["cluster"], indirect=True)


@dataclass(frozen=True)
class RedisTarget:
    name: str  # "single" or "cluster"
    url: str  # REDIS_URL (one node of the cluster)
    cluster: bool  # REDIS_CLUSTER

    def connect(self, **kwargs):
        """A redis.asyncio client for the target (a RedisCluster client on the cluster)."""
        return connect(self.url, cluster=self.cluster, **kwargs)

    def env(self) -> dict[str, str]:
        """The processor's environment variables for this Redis."""
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "true" if self.cluster else "false"}
