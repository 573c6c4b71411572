"""The benchmark's data set: a realistic playback event mix, generated once and produced fast.

Per user: one or more sessions starting close together (a household), each a `start`,
heartbeats every 30 s of event time, and usually a `stop`; some users open more sessions
than the limit (denied starts, then heartbeats without a lease), some send a start twice,
some let a session lapse. With `plans=True` the same events (same seed, same draws) are
generated, and half of the users, chosen by a separate seeded RNG, carry `plan` (basic,
standard, premium) and the `deviceClass` of their device (tv, mobile, web) on every event;
`PLAN_POLICIES` are the policy records that go with them. Record timestamps are explicit
event time inside the last hour (Kafka refuses timestamps more than an hour ahead and keeps
these), and the log of every partition is in event-time order.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import orjson

from bench.access import bench_kafka
from bench.kafka_util import partition_of
from processor.kafka_batches import send_in_batches

DEVICES = ("tv-livingroom", "tv-bedroom", "phone", "tablet", "web", "console")
DEVICE_CLASSES = {
    "tv-livingroom": "tv",
    "tv-bedroom": "tv",
    "console": "tv",
    "phone": "mobile",
    "tablet": "mobile",
    "web": "web",
}
PLANS = ("basic", "standard", "premium")
# The policies topic of a `--plans` run (key -> value), written before the processor starts.
PLAN_POLICIES = {
    "plan:basic": {"maxStreams": 1},
    "plan:standard": {"maxStreams": 2, "deviceClasses": {"tv": 1}},
    "plan:premium": {"maxStreams": 4, "deviceClasses": {"tv": 2}},
}
HEARTBEAT_MS = 30_000
PRODUCE_BATCH_BYTES = 900 * 1024  # under the broker's default message.max.bytes (1 MiB)


@dataclass
class DataSet:
    topic: str
    events: int
    users: int
    partitions: int
    per_partition: dict[int, int]
    types: dict[str, int]
    plans: dict[str, int]  # events per plan ('-' = none)
    device_classes: dict[str, int]  # events per deviceClass ('-' = none)
    plan_users: int
    first_ts: int
    last_ts: int
    value_bytes_avg: float
    generate_s: float
    produce_s: float

    def summary(self) -> dict:
        return {
            "topic": self.topic,
            "events": self.events,
            "users": self.users,
            "partitions": self.partitions,
            "events_per_partition_min_max": [
                min(self.per_partition.values()),
                max(self.per_partition.values()),
            ],
            "types": self.types,
            "variant": "plans" if self.plan_users else "plain",
            "plan_users": self.plan_users,
            "plan_events": self.plans,
            "device_class_events": self.device_classes,
            "event_time_span_s": round((self.last_ts - self.first_ts) / 1000, 1),
            "value_bytes_avg": round(self.value_bytes_avg, 1),
            "generate_s": round(self.generate_s, 2),
            "produce_s": round(self.produce_s, 2),
            "produce_events_per_s": round(self.events / self.produce_s) if self.produce_s else None,
        }


def _sessions_of_user(rng: random.Random) -> int:
    x = rng.random()
    if x < 0.55:
        return 1
    if x < 0.80:
        return 2
    if x < 0.90:
        return 3
    if x < 0.96:
        return 4  # over the default limit of 3
    return rng.randint(5, 7)


def plans_of_users(users: int, seed: int = 7) -> dict[int, str]:
    """Half of the users (index -> plan), drawn by an RNG of their own: the event draws are untouched."""
    rng = random.Random(f"bench-plans-{seed}")
    return {u: rng.choice(PLANS) for u in sorted(rng.sample(range(users), users // 2))}


def generate(
    events: int, users: int, seed: int = 7, span_ms: int = 50 * 60_000, plans: bool = False
) -> list[tuple[int, bytes, bytes]]:
    """`events` records (timestamp ms, key, value), sorted by event time, all within the last hour.

    `plans`: half of the users carry `plan` and `deviceClass` (the same events otherwise).
    """
    factor = 1.08
    user_plans = plans_of_users(users, seed) if plans else None
    while True:
        out = _generate(events, users, seed, span_ms, factor, user_plans)
        if len(out) >= events:
            return out[:events]  # the latest events are trimmed: sessions still playing at the end
        factor *= events / max(1, len(out)) * 1.03


def _generate(
    events: int,
    users: int,
    seed: int,
    span_ms: int,
    factor: float,
    user_plans: dict[int, str] | None = None,
) -> list[tuple[int, bytes, bytes]]:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    base = int(time.time() * 1000) - 58 * 60_000  # the whole span ends a few minutes before now
    per_user = events / users
    # Each session is 1 start + h heartbeats + (usually) 1 stop; aim ~8% over, trim the latest.
    mean_sessions = 1.0 * 0.55 + 2 * 0.25 + 3 * 0.10 + 4 * 0.06 + 6 * 0.04
    hb_mean = max(0.0, per_user * factor / mean_sessions - 1.9)
    out: list[tuple[int, bytes, bytes]] = []
    seq = 0
    for u in range(users):
        user_id = f"u-{u}"
        key = user_id.encode()
        plan = user_plans.get(u) if user_plans else None
        household_start = base + rng.randrange(0, max(1, span_ms - 10 * 60_000))
        for s in range(_sessions_of_user(rng)):
            session_id = f"s-{u}-{s}"
            device = DEVICES[(u + s) % len(DEVICES)]
            content = f"c-{rng.randrange(5000)}"
            t = household_start + rng.randrange(0, 120_000)
            beats = int(rng.expovariate(1 / hb_mean)) if hb_mean > 0 else 0
            kinds = ["start"] + ["heartbeat"] * beats
            if rng.random() < 0.03 and beats:
                kinds.insert(1 + rng.randrange(beats), "start")  # a player retrying its start
            if rng.random() < 0.85:
                kinds.append("stop")  # else the session lapses: the lease expires
            for kind in kinds:
                if t - base > span_ms:
                    break
                seq += 1
                body = {
                    "type": kind,
                    "userId": user_id,
                    "sessionId": session_id,
                    "deviceId": device,
                    "contentId": content,
                    "eventId": f"e-{run}-{seq}",
                    "ts": t,
                }
                if plan is not None:  # appended: without plans the bytes are what they always were
                    body["plan"] = plan
                    body["deviceClass"] = DEVICE_CLASSES[device]
                out.append((t, key, orjson.dumps(body)))
                t += HEARTBEAT_MS + rng.randrange(-500, 500)
    out.sort(key=lambda r: r[0])  # stable: one user's events keep their order
    return out


async def produce(
    bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]], partitions: int
) -> float:
    """Produce the records keyed, with explicit timestamps, one send_batch per full batch; return seconds."""
    by_partition: dict[int, list[tuple[int, bytes, bytes]]] = {}
    cache: dict[bytes, int] = {}
    for rec in records:
        key = rec[1]
        p = cache.get(key)
        if p is None:
            p = cache[key] = partition_of(key, partitions)
        by_partition.setdefault(p, []).append(rec)
    producer = bench_kafka(bootstrap).producer(
        acks="all",
        linger_ms=0,
        max_batch_size=PRODUCE_BATCH_BYTES,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        lists = await asyncio.gather(
            *(
                send_in_batches(producer, topic, p, ((key, value, ts) for ts, key, value in recs))
                for p, recs in by_partition.items()
            )
        )
        await asyncio.gather(*(f for fl in lists for f in fl))  # every delivery result checked
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def describe(
    topic: str,
    records: list[tuple[int, bytes, bytes]],
    users: int,
    partitions: int,
    generate_s: float,
    produce_s: float,
) -> DataSet:
    cache: dict[bytes, int] = {}
    per_partition = Counter(
        cache.get(k) if k in cache else cache.setdefault(k, partition_of(k, partitions))
        for _t, k, _v in records
    )
    types: Counter = Counter()
    plans: Counter = Counter()
    classes: Counter = Counter()
    plan_users = set()
    for _t, k, v in records:
        obj = orjson.loads(v)
        types[obj["type"]] += 1
        plan = obj.get("plan")
        plans[plan or "-"] += 1
        classes[obj.get("deviceClass") or "-"] += 1
        if plan is not None:
            plan_users.add(k)
    return DataSet(
        topic=topic,
        events=len(records),
        users=users,
        partitions=partitions,
        per_partition={p: per_partition.get(p, 0) for p in range(partitions)},
        types=dict(types),
        plans=dict(plans),
        device_classes=dict(classes),
        plan_users=len(plan_users),
        first_ts=records[0][0],
        last_ts=records[-1][0],
        value_bytes_avg=sum(len(v) for _t, _k, v in records) / len(records),
        generate_s=generate_s,
        produce_s=produce_s,
    )
