"""Live traffic at a fixed offered rate: a paced producer and a verdict consumer matching by eventId.

Used for end-to-end latency (event handed to the producer -> its verdict consumed, wall clock
of this process) and for the memory run. Record timestamps are the send time (CreateTime).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.access import bench_kafka
from bench.data import DEVICES
from bench.kafka_util import partition_of
from processor.kafka_batches import send_in_batches

TICK_S = 0.005


class LiveSource:
    """An endless, realistic-enough event stream: a ring of playing sessions, each start ->
    heartbeats -> stop (sometimes a lapse), replaced by a new session when it ends; now and
    then a household member opens another session at once (some users exceed the limit).

    `beats_mean` (of an exponential draw, floored) and `stop_chance` (a session ends with a stop,
    else with one last heartbeat: a lapse) set the mix; `mix()` picks them for a start:heartbeat:stop
    ratio. The defaults are the latency and memory parts' mix since they were written."""

    def __init__(
        self,
        tag: str,
        users: int,
        ring: int = 3000,
        seed: int = 11,
        beats_mean: float = 8.0,
        stop_chance: float = 0.85,
    ) -> None:
        self.tag = tag
        self.users = users
        self.beats_mean = beats_mean
        self.stop_chance = stop_chance
        self.rng = random.Random(seed)
        self.seq = 0
        self.sessions = 0
        self.target = ring
        self.ring: deque[list] = deque(self._new_session() for _ in range(ring))

    def _new_session(self, user: int | None = None) -> list:
        self.sessions += 1
        if user is None:
            user = self.rng.randrange(self.users)
        beats = int(self.rng.expovariate(1 / self.beats_mean))
        return [f"lu-{self.tag}-{user}", f"ls-{self.tag}-{self.sessions}", beats, False, user]

    @classmethod
    def mix(cls, tag: str, users: int, start: float, heartbeat: float, stop: float, **kw) -> LiveSource:
        """A source whose events come as start:heartbeat:stop (e.g. 2:7:1). Per session: one
        start, floor(Exp(m)) heartbeats plus one for a lapse, a stop with chance s; so
        s = stop/start and E[floor(Exp(m))] = 1/(e^(1/m) - 1) = heartbeat/start - (1 - s)."""
        s = stop / start
        beats = heartbeat / start - (1 - s)
        if not 0 < s <= 1 or beats <= 0:
            raise ValueError(f"no session shape gives start:heartbeat:stop {start}:{heartbeat}:{stop}")
        return cls(tag, users, beats_mean=1 / math.log(1 + 1 / beats), stop_chance=s, **kw)

    def next(self) -> tuple[bytes, str, bytes]:
        """(key, eventId, value)"""
        s = self.ring.popleft()
        user_id, session_id, beats, started, user = s
        if not started:
            kind = "start"
            s[3] = True
            self.ring.append(s)
            if self.rng.random() < 0.06 and len(self.ring) < self.target * 1.1:
                self.ring.append(self._new_session(user))  # another screen of the same household
        elif beats > 0:
            kind = "heartbeat"
            s[2] = beats - 1
            self.ring.append(s)
        else:
            # a stop, else its last heartbeat: a lapse
            kind = "stop" if self.rng.random() < self.stop_chance else "heartbeat"
            if len(self.ring) < self.target:
                self.ring.append(self._new_session())
        self.seq += 1
        event_id = f"le-{self.tag}-{self.seq}"
        value = orjson.dumps(
            {
                "type": kind,
                "userId": user_id,
                "sessionId": session_id,
                "deviceId": DEVICES[user % len(DEVICES)],
                "eventId": event_id,
                "ts": int(time.time() * 1000),
            }
        )
        return user_id.encode(), event_id, value


class VerdictWatcher:
    """Consumes the verdicts topic from its end and records when each eventId's first verdict arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.received: dict[str, float] = {}
        self.count = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._consumer = bench_kafka(self.bootstrap).consumer(
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        assert self._consumer is not None
        received = self.received
        while True:
            data = await self._consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.time()
            for recs in data.values():
                self.count += len(recs)
                for r in recs:
                    eid = orjson.loads(r.value).get("eventId")
                    if eid not in received:
                        received[eid] = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()


async def paced_produce(
    producer: AIOKafkaProducer,
    topic: str,
    partitions: int,
    source: LiveSource,
    rate: float,
    seconds: float,
    sent: dict[str, float],
) -> dict:
    """Offer `rate` events/s for `seconds`: every tick, the events now due go out with one
    send_batch per partition; each eventId's send time is taken just before its batch is built."""
    cache: dict[bytes, int] = {}
    pending: list[asyncio.Future] = []
    t0 = time.monotonic()
    n = 0
    late_ticks = 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= seconds:
            break
        due = int(rate * elapsed) - n
        if due > 0:
            if due > rate * 0.05:
                late_ticks += 1  # this process fell behind the schedule by over 50 ms
            now = time.time()
            by_p: dict[int, list] = {}
            for _ in range(due):
                key, eid, value = source.next()
                p = cache.get(key)
                if p is None:
                    p = cache[key] = partition_of(key, partitions)
                by_p.setdefault(p, []).append((key, value, None))
                sent[eid] = now
            for p, recs in by_p.items():
                pending += await send_in_batches(producer, topic, p, recs)
            n += due
            if len(pending) > 2000:
                done = [f for f in pending if f.done()]
                for f in done:
                    f.result()  # a failed delivery fails the benchmark, loudly
                pending = [f for f in pending if not f.done()]
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*pending)
    duration = time.monotonic() - t0
    return {
        "sent": n,
        "seconds": round(duration, 2),
        "achieved_rate": round(n / duration, 1),
        "late_ticks": late_ticks,
    }


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    v = sorted(values)

    def pct(q: float) -> float:
        return v[min(len(v) - 1, max(0, round(q / 100 * len(v) + 0.5) - 1))]

    return {
        "count": len(v),
        "p50_ms": round(pct(50), 2),
        "p95_ms": round(pct(95), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(v[-1], 2),
        "mean_ms": round(sum(v) / len(v), 2),
    }


async def drain(watcher: VerdictWatcher, sent: dict[str, float], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        if all(eid in watcher.received for eid in sent):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


def latencies(
    sent: dict[str, float], received: dict[str, float], skip_before: float
) -> tuple[list[float], int]:
    out = []
    missing = 0
    for eid, t in sent.items():
        r = received.get(eid)
        if r is None:
            missing += 1
        elif t >= skip_before:
            out.append((r - t) * 1000)
    return out, missing
