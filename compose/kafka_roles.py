"""Who does what in a Kafka cluster right now: which node leads which partition, which replicas
are in sync, which node coordinates a consumer group. For the tests and operators that take a
broker away on purpose (compose/kafka_cluster.py)::

    roles = await KafkaRoles.connect(cluster.bootstrap)
    victim = (await roles.busiest_leader("playback.replies"))   # leads the most partitions
    await roles.coordinator("processor-group")                  # node id
    await roles.wait_led_elsewhere(["playback.events"], victim, within=30)
    await roles.close()

Each question is one Metadata or FindCoordinator request; a node that is down is simply absent
from the answers (a partition it led shows leader -1 until the controller moves it).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


class KafkaRoles:
    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self._admin = admin

    @classmethod
    async def connect(cls, bootstrap: str, request_timeout_ms: int = 10_000) -> KafkaRoles:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
        await admin.start()
        return cls(admin)

    async def close(self) -> None:
        await self._admin.close()

    async def partitions(self, topic: str) -> dict[int, dict]:
        """partition -> {"leader": node id (-1: none), "replicas": [...], "isr": [...]}."""
        [described] = await self._admin.describe_topics([topic])
        if described["error_code"]:
            raise KafkaError(f"describing {topic} failed: error code {described['error_code']}")
        return {
            p["partition"]: {"leader": p["leader"], "replicas": list(p["replicas"]), "isr": list(p["isr"])}
            for p in described["partitions"]
        }

    async def leaders(self, topic: str) -> dict[int, int]:
        return {p: d["leader"] for p, d in (await self.partitions(topic)).items()}

    async def busiest_leader(self, topic: str) -> int:
        """The node that leads the most partitions of `topic` (lowest id on a tie)."""
        counts = Counter((await self.leaders(topic)).values())
        counts.pop(-1, None)
        return min(counts, key=lambda node: (-counts[node], node))

    async def coordinator(self, group: str) -> int:
        """The node coordinating `group` (its offsets' partition leader)."""
        return await self._admin.find_coordinator(group)

    async def wait_led_elsewhere(self, topics: list[str], node: int, within: float = 60.0) -> float:
        """Until every partition of `topics` has a leader and none is `node`; returns the
        time.monotonic() it was seen so (the moment the cluster had moved the leaderships)."""

        async def moved() -> bool:
            for topic in topics:
                leaders = (await self.leaders(topic)).values()
                if any(leader in (-1, node) for leader in leaders):
                    return False
            return True

        return await _poll(moved, within, f"{topics} led by nodes other than {node}")

    async def wait_in_sync(self, topics: list[str], replicas: int, within: float = 60.0) -> float:
        """Until every partition of `topics` has a leader and `replicas` replicas in sync."""

        async def synced() -> bool:
            for topic in topics:
                for d in (await self.partitions(topic)).values():
                    if d["leader"] < 0 or len(d["isr"]) < replicas:
                        return False
            return True

        return await _poll(synced, within, f"{topics} with {replicas} replicas in sync")


async def _poll(condition, within: float, what: str, interval: float = 0.1) -> float:
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if await condition():
                return time.monotonic()
        except (KafkaError, OSError) as exc:  # the node asked may be the one just killed
            last = exc
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {within} s waiting for {what} (last error: {last!r})")
