"""What the chaos tests share: a steady load that rides out faults, processes with HTTP probes,
offsets, and the verifier's figures.

- `Load` produces the simulator's population (producer_sim.population) with its upstream
  faults (producer_sim.faults: duplicates, late timestamps, malformed records), paced at a
  fixed rate, through a few ordered lanes (one lane per user, so per user the log order is
  the send order). A failed send is retried until it is acknowledged: the load survives a
  broker restart.
- `ChaosFlow` is the harness's Flow without its background readers and producer: the
  chaos tests read everything afterwards with the verifier, and a reader dying during a
  broker restart must not fail the test.
- `Spawned` is a processor OS process with a known HTTP port: /health, /metrics, its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from compose.launcher import free_port
from processor.reference_model import ReferenceModel
from processor.topics import ensure_topics
from producer_sim.faults import FaultConfig, Faults, encode_event
from producer_sim.population import Population, PopulationConfig, SimEvent
from producer_sim.verifier import Verifier, VerifyReport, committed_offsets, run_verifier
from tests.harness import Flow, ProcessorProcess, wait_until

CHAOS_ENV = {"SESSION_TIMEOUT_MS": "6000", "HEARTBEAT_INTERVAL_MS": "1000"}


# --------------------------------------------------------------------------------------------
# the flow
# --------------------------------------------------------------------------------------------


class ChaosFlow(Flow):
    """Topics and group of one test, processors as OS processes; no background readers."""

    async def __aenter__(self) -> ChaosFlow:
        s = self.settings
        await ensure_topics(
            s.kafka_bootstrap_servers, [s.events_topic, s.verdicts_topic, s.dlq_topic], s.topic_partitions, 1
        )
        self.spawned: list[Spawned] = []
        return self

    def spawn(self, log_dir: Path, **env: str) -> Spawned:
        port = free_port()
        proc = self.spawn_processor(log_dir, **{**CHAOS_ENV, "HTTP_PORT": str(port), **env})
        spawned = Spawned(proc, port)
        self.spawned.append(spawned)
        return spawned

    async def load(self, seed: int, rate: float = 300.0, events: int | None = None, **faults: float) -> Load:
        """A started `Load` into this flow's events topic (see Load for the fault fractions)."""
        s = self.settings
        load = Load(s.kafka_bootstrap_servers, s.events_topic, t0=self.t0, rate=rate, seed=seed,
                    max_streams=s.max_streams, lease_ttl_ms=s.lease_ttl_ms, **faults)  # fmt: skip
        return await load.start(events)

    async def verify(self, resets: dict[int, int] | None = None, redis: bool = True) -> VerifyReport:
        return (await self.verifier(resets, redis)).report

    async def verifier(self, resets: dict[int, int] | None = None, redis: bool = True) -> Verifier:
        s = self.settings
        return await run_verifier(
            s.kafka_bootstrap_servers,
            s.events_topic,
            s.verdicts_topic,
            s.dlq_topic,
            s.redis_url if redis else None,
            max_streams=s.max_streams,
            lease_ttl_ms=s.lease_ttl_ms,
            policy=s.overflow_policy,
            event_id_memory=s.event_id_memory,
            resets=resets,
            redis_cluster=s.redis_cluster,
        )

    async def committed(self) -> dict[int, int]:
        s = self.settings
        return await committed_offsets(s.kafka_bootstrap_servers, s.consumer_group, s.events_topic)

    async def end_offsets(self) -> dict[int, int]:
        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(s.events_topic, p) for p in range(s.topic_partitions)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in ends.items()}

    async def drained(self) -> bool:
        """True when the group has committed every event in the topic (so all were decided)."""
        try:
            ends = await self.end_offsets()
            committed = await self.committed()
        except KafkaError:
            return False
        return all(committed.get(p, 0 if end == 0 else -1) >= end for p, end in ends.items())

    async def wait_drained(self, within: float = 60.0) -> None:
        await wait_until(self.drained, within, interval=0.25, what="the group to commit every event")


# --------------------------------------------------------------------------------------------
# processor processes
# --------------------------------------------------------------------------------------------


@dataclass
class Spawned:
    proc: ProcessorProcess
    port: int

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def alive(self) -> bool:
        return self.proc.popen.poll() is None

    async def _get(self, path: str) -> tuple[int, str] | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(f"http://127.0.0.1:{self.port}{path}") as resp,
            ):
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def health(self) -> tuple[int, dict] | None:
        got = await self._get("/health")
        return None if got is None else (got[0], orjson.loads(got[1]))

    async def healthy(self) -> bool:
        if not self.alive():
            raise AssertionError(f"processor {self.pid} exited:\n{self.proc.log()[-3000:]}")
        got = await self.health()
        return got is not None and got[0] == 200

    async def wait_healthy(self, within: float = 45.0) -> None:
        await wait_until(self.healthy, within, interval=0.1, what=f"processor {self.pid} healthy")

    async def assigned(self) -> int:
        got = await self.health()
        return -1 if got is None else int(got[1].get("assignedPartitions", 0))

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels`; None if unreachable."""
        got = await self._get("/metrics")
        if got is None:
            return None
        return metric_value(got[1], name, **labels)

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.proc.log().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                obj = orjson.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def logged(self, fragment: str) -> list[dict]:
        return [x for x in self.log_lines() if fragment in str(x.get("msg", ""))]


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# --------------------------------------------------------------------------------------------
# the load
# --------------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    generated: int = 0  # records handed to the lanes
    acked: int = 0  # records acknowledged by the broker
    send_retries: int = 0  # sends that failed and were tried again
    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    without_event_id: int = 0
    errors: list[str] = field(default_factory=list)


class Load:
    """The simulator's players at `rate` records/s into the events topic, until stopped or `events` sent."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        t0: int,
        rate: float = 300.0,
        users: int = 200,
        seed: int = 1,
        duplicates: float = 0.0,
        late: float = 0.0,
        malformed: float = 0.0,
        without_event_id: float = 0.0,
        max_streams: int = 3,
        lease_ttl_ms: int = 90_000,
        lanes: int = 8,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.stats = LoadStats()
        self._population = Population(
            PopulationConfig(
                users=users, seed=seed, start_ms=t0, sharers=0.15, families=0.3,
                max_streams=max_streams, run_id=f"r{seed}",
            )
        )  # fmt: skip
        self._faults = Faults(FaultConfig(duplicates, late, malformed), seed)
        self._model = ReferenceModel(max_streams, lease_ttl_ms)  # the players' view, for their feedback
        self._rng = random.Random(f"no-event-id/{seed}")
        self._without_event_id = without_event_id
        self._queues: list[asyncio.Queue] = [asyncio.Queue(maxsize=500) for _ in range(lanes)]
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task] = []
        self._generator: asyncio.Task | None = None
        self._limit: int | None = None

    # life cycle ------------------------------------------------------------------------------
    async def start(self, events: int | None = None) -> Load:
        self._limit = events
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=5000,
            retry_backoff_ms=200,
            linger_ms=2,
        )
        await self._producer.start()
        self._tasks = [asyncio.create_task(self._lane(q)) for q in self._queues]
        self._generator = asyncio.create_task(self._generate())
        return self

    async def wait_acked(self, count: int, within: float = 60.0) -> None:
        await wait_until(
            lambda: self._check() or self.stats.acked >= count, within, interval=0.05,
            what=f"{count} events acknowledged (have {self.stats.acked})",
        )  # fmt: skip

    def _check(self) -> bool:
        if self._generator is not None and self._generator.done() and not self._generator.cancelled():
            self._generator.result()
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.result()
        return False

    async def finish(self, within: float = 90.0) -> LoadStats:
        """Stop generating (or wait for the `events` limit) and wait until every record is acknowledged."""
        if self._limit is None and self._generator is not None:
            self._generator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._generator
        elif self._generator is not None:
            await asyncio.wait_for(self._generator, within)
        await wait_until(
            lambda: self._check() or self.stats.acked >= self.stats.generated, within, interval=0.05,
            what=f"all {self.stats.generated} records acknowledged (have {self.stats.acked})",
        )  # fmt: skip
        await self.close()
        return self.stats

    async def close(self) -> None:
        for task in [*self._tasks, *([self._generator] if self._generator else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await task
        self._tasks = []
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # producing -------------------------------------------------------------------------------
    async def _put(self, user_id: str, value: bytes | None, key: bytes | None, ts: int) -> None:
        lane = zlib.crc32(user_id.encode()) % len(self._queues)
        await self._queues[lane].put((key, value, ts))
        self.stats.generated += 1
        t_due = self._t_start + self.stats.generated / self.rate
        ahead = t_due - time.monotonic()
        if ahead > 0.005:
            await asyncio.sleep(ahead)

    def _encode(self, ev: SimEvent) -> tuple[bytes, str | None]:
        if self._without_event_id and self._rng.random() < self._without_event_id:
            self.stats.without_event_id += 1
            obj = orjson.loads(encode_event(ev))
            del obj["eventId"]
            return orjson.dumps(obj), None
        return encode_event(ev), ev.event_id

    async def _generate(self) -> None:
        self._t_start = time.monotonic()
        pop, faults, model, stats = self._population, self._faults, self._model, self.stats
        while self._limit is None or stats.generated < self._limit:
            ev = pop.next_event()
            for due, dup, value in faults.due_duplicates(ev.ts):
                user = model.users.get(dup.user_id)
                if user is None or dup.event_id not in user.seen:
                    continue  # beyond the eventId memory a re-send is a new event, not a duplicate
                model.apply(dup.user_id, dup.session_id, dup.type, due, dup.event_id)
                await self._put(dup.user_id, value, dup.user_id.encode(), due)
                stats.duplicates += 1
            bad = faults.maybe_malformed(ev)
            if bad is not None:
                await self._put(ev.user_id, bad.value, bad.key, ev.ts)
                stats.malformed += 1
            record_ts, late = faults.record_timestamp(ev)
            stats.late += late
            value, event_id = self._encode(ev)
            decision = model.apply(
                ev.user_id, ev.session_id, ev.type, record_ts, event_id, ev.device_id, ev.content_id
            )
            pop.feedback(ev, decision.decision == "allow")
            await self._put(ev.user_id, value, ev.user_id.encode(), record_ts)
            if event_id is not None:
                faults.maybe_duplicate(ev, value)

    async def _lane(self, queue: asyncio.Queue) -> None:
        assert self._producer is not None
        while True:
            key, value, ts = await queue.get()
            attempt = 0
            while True:
                try:
                    await self._producer.send_and_wait(self.topic, value=value, key=key, timestamp_ms=ts)
                    break
                except KafkaError as exc:
                    attempt += 1
                    self.stats.send_retries += 1
                    if len(self.stats.errors) < 5:
                        self.stats.errors.append(repr(exc))
                    await asyncio.sleep(min(1.0, 0.1 * attempt))
            self.stats.acked += 1


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def figures(report: VerifyReport, load: LoadStats | None = None, **extra: object) -> dict:
    out = {
        "events": report.events,
        "valid": report.valid_events,
        "verdicts": report.verdicts,
        "lost": report.lost,
        "applied_twice": report.applied_twice,
        "redelivered": report.redelivered,
        "mismatches": report.mismatches,
        "dlq": report.dlq,
        "bad": report.bad_records,
        "upstream_dups": report.upstream_duplicates,
        "state_mismatches": report.state_mismatches,
        "clean": report.clean,
    }
    if load is not None:
        out["send_retries"] = load.send_retries
    out.update(extra)
    return out


class LostVerdicts(AssertionError):
    """Valid events without a verdict: the first thing a run can get wrong, reported apart."""


def assert_clean(report: VerifyReport) -> None:
    detail = f"{report.summary()}\nkinds={dict(report.mismatch_kinds)}\nexamples={report.examples[:8]}"
    if report.lost:
        raise LostVerdicts(detail)
    assert report.applied_twice == 0, detail
    assert report.mismatches == 0, detail
    assert report.clean, detail


# --------------------------------------------------------------------------------------------
# a Redis proxy that loses replies
# --------------------------------------------------------------------------------------------


class RedisReplyDropper:
    """A TCP proxy in front of Redis that, when told, loses the reply of one script call
    (and, with `slow`, holds back requests that contain a marker: a slow Redis).

    After `drop_next_reply()`, the next request containing `marker` (the decide script's
    SHA, so EVALSHA of that script) is forwarded to Redis whole; when Redis starts answering
    (so the script ran, atomically, and its writes are in), the proxy cuts both connections
    instead of passing the reply on. The client sees a connection error after a call that
    did take effect: the ambiguous failure that a retry must resolve without applying twice.
    """

    def __init__(self, upstream_port: int, marker: bytes, slow: dict[bytes, float] | None = None) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.slow = dict(slow or {})  # request marker -> seconds to hold such a request back
        self.delayed = 0
        self.port = 0
        self.dropped = 0
        self.connections = 0
        self._to_drop = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._aborts: set = set()

    def drop_next_reply(self) -> None:
        self._to_drop += 1

    async def __aenter__(self) -> RedisReplyDropper:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for abort in list(self._aborts):
            abort()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            self._tasks.discard(task)
            return
        armed = asyncio.Event()

        def cut() -> None:
            client_w.transport.abort()
            up_w.transport.abort()

        self._aborts.add(cut)

        async def requests() -> None:
            tail = b""
            while data := await client_r.read(65536):
                if self._to_drop > 0 and not armed.is_set() and self.marker in tail + data:
                    self._to_drop -= 1
                    armed.set()
                tail = data[-len(self.marker) :]
                for marker, seconds in self.slow.items():
                    if marker in data:
                        self.delayed += 1
                        await asyncio.sleep(seconds)  # a slow Redis, for this kind of call
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def replies() -> None:
            while data := await up_r.read(65536):
                if armed.is_set():
                    self.dropped += 1
                    cut()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        try:
            await asyncio.gather(requests(), replies())
        except (OSError, ConnectionError):
            cut()
        finally:
            for writer in (client_w, up_w):
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            self._aborts.discard(cut)
            self._tasks.discard(task)
