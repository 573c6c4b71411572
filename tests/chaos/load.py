"""The chaos tests' steady load: the simulator's population (producer_sim.population) with its
upstream faults (producer_sim.faults: duplicates, late timestamps, malformed records), paced at
a fixed rate, through a few ordered lanes (one lane per user, so per user the log order is the
send order). A failed send is retried until it is acknowledged: the load survives a broker
restart."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from processor.reference_model import ReferenceModel
from producer_sim.faults import FaultConfig, Faults, encode_event
from producer_sim.population import Population, PopulationConfig, SimEvent
from tests.harness import wait_until


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
