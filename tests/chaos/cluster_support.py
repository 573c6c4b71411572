"""What the 3-broker chaos tests share: a flow on the session's Kafka cluster (topics at
replication 3, min.insync.replicas 2), gateway callers that retry a 504 with the same
Idempotency-Key as the contract tells clients to, and when verdicts and answers came back after
a broker was taken away."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from compose.kafka_cluster import KafkaCluster
from compose.kafka_roles import KafkaRoles
from processor.topics import ensure_topics
from tests.chaos.support import ChaosFlow
from tests.gateway_harness import bearer

REPLICATION = 3
# Verdicts stamped by the broker at append: when they were written, whoever reads them when.
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
CLUSTER_ENV = {"TOPIC_REPLICATION_FACTOR": str(REPLICATION)}
# What a call may answer during a broker incident (contract): its verdict, or the 504 a client
# retries with the same Idempotency-Key.
VERDICT_STATUSES = {200, 409, 410}


class ClusterFlow(ChaosFlow):
    """A ChaosFlow whose topics are replicated on the cluster, verdicts stamped at append."""

    async def __aenter__(self) -> ClusterFlow:
        s = self.settings
        topics = [s.events_topic, s.verdicts_topic, s.dlq_topic]
        configs = {s.verdicts_topic: APPEND_TIME}
        await ensure_topics(
            s.kafka_bootstrap_servers, topics, s.topic_partitions, REPLICATION, configs=configs
        )
        return self

    def spawn(self, log_dir, **env: str):
        return super().spawn(log_dir, **{**CLUSTER_ENV, **env})

    async def verdict_times(self) -> dict[int, list[float]]:
        """Per verdicts partition, the wall-clock seconds at which each verdict was appended."""
        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(s.verdicts_topic, p) for p in range(s.topic_partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            times: dict[int, list[float]] = {tp.partition: [] for tp in tps}
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    times[tp.partition] += [r.timestamp / 1000 for r in records]
            return times
        finally:
            await consumer.stop()


async def restored(cluster: KafkaCluster, topics: list[str] | None = None, within: float = 120.0) -> None:
    """Every node running and registered, and (for `topics`) every replica back in sync."""
    for node_id in [i for i in cluster.nodes if i not in cluster.running_nodes()]:
        await asyncio.to_thread(cluster.start_node, node_id)
    await asyncio.to_thread(cluster.wait_registered, time.monotonic() + within)
    if topics:
        roles = await KafkaRoles.connect(cluster.bootstrap)
        try:
            await roles.wait_in_sync(topics, REPLICATION, within)
        finally:
            await roles.close()


def verdicts_resumed_s(times: dict[int, list[float]], moved_wall: float) -> float:
    """Seconds from the leaderships' move until every verdicts partition had a verdict appended
    again (each partition's first append after the move, the latest of them)."""
    firsts = []
    for stamps in times.values():
        after = [t for t in stamps if t >= moved_wall]
        if after:
            firsts.append(min(after))
    return max(firsts) - moved_wall if firsts else float("inf")


def longest_verdict_gap_s(times: dict[int, list[float]], start_wall: float, end_wall: float) -> float:
    """The longest stretch in [start, end] (wall clock) a verdicts partition went without an append."""
    gaps = []
    for stamps in times.values():
        inside = sorted(t for t in stamps if start_wall <= t <= end_wall)
        gaps.append(max(b - a for a, b in itertools.pairwise([start_wall, *inside, end_wall])))
    return max(gaps)


@dataclass
class Answer:
    at: float  # time.monotonic() the answer came
    status: int
    seconds: float  # this attempt's round trip


@dataclass
class Callers:
    """`count` clients calling the gateway in a loop: a start, then its stop, each retried on
    504 with its Idempotency-Key until it gets its verdict. Other statuses are kept for the test."""

    url: str
    count: int = 8
    prefix: str = "gw"
    answers: list[Answer] = field(default_factory=list)
    results: dict[str, tuple[int, dict]] = field(default_factory=dict)  # key -> final status, body
    unexpected: list[tuple[str, int, str]] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopping: bool = False

    def start(self) -> Callers:
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(self.count)]
        return self

    async def stop(self, within: float = 60.0) -> None:
        """Let every call in progress get its verdict, then stop."""
        self._stopping = True
        done, pending = await asyncio.wait(self._tasks, timeout=within)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
        assert not pending, f"{len(pending)} callers still without a verdict after {within} s"

    async def cancel(self) -> None:
        """Stop at once (a test that failed): calls in progress are abandoned."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _caller(self, i: int) -> None:
        user = f"{self.prefix}-user-{i}"
        async with httpx.AsyncClient(base_url=self.url, timeout=60, headers=bearer(user)) as http:
            n = 0
            while not self._stopping:
                key = f"{self.prefix}-{i}-{n}"
                status, body = await self._until_verdict(http, "POST", "/v1/sessions", f"{key}-start")
                if status == 200:
                    await self._until_verdict(
                        http, "DELETE", f"/v1/sessions/{body['sessionId']}", f"{key}-stop"
                    )
                n += 1

    async def _until_verdict(
        self, http: httpx.AsyncClient, method: str, path: str, key: str
    ) -> tuple[int, dict]:
        while True:
            t0 = time.monotonic()
            r = await http.request(
                method, path, json={} if method == "POST" else None, headers={"Idempotency-Key": key}
            )
            self.answers.append(Answer(time.monotonic(), r.status_code, time.monotonic() - t0))
            if r.status_code in VERDICT_STATUSES:
                body = r.json()
                earlier = self.results.get(key)
                if earlier is not None and earlier[1].get("verdictId") != body.get("verdictId"):
                    self.unexpected.append((key, r.status_code, "a second verdict for one key"))
                self.results[key] = (r.status_code, body)
                return r.status_code, body
            if r.status_code != 504:
                self.unexpected.append((key, r.status_code, r.text[:200]))
            with contextlib.suppress(ValueError):
                await asyncio.sleep(min(1.0, float(r.headers.get("retry-after", "0.2"))))

    def verdict_gap_end(self, since: float) -> float:
        """The end (time.monotonic()) of the longest stretch after `since` without a verdict answered."""
        stamps = sorted(a.at for a in self.answers if a.status in VERDICT_STATUSES and a.at >= since)
        points = [since, *stamps]
        gaps = [(b - a, b) for a, b in itertools.pairwise(points)]
        return max(gaps)[1] if gaps else float("inf")

    def longest_gap_s(self, start: float, end: float) -> float:
        """The longest stretch in [start, end] without a verdict answered, in seconds."""
        stamps = sorted(a.at for a in self.answers if a.status in VERDICT_STATUSES and start <= a.at <= end)
        return max(b - a for a, b in itertools.pairwise([start, *stamps, end]))

    def p99_ms(self, start: float, end: float) -> float:
        """p99 of the attempts answered in [start, end], in ms."""
        seconds = sorted(a.seconds for a in self.answers if start <= a.at <= end)
        if not seconds:
            return float("nan")
        return 1000 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))]
