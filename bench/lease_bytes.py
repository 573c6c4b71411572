"""`python -m bench.lease_bytes`: what one lease costs in Redis, in bytes.

Against a fresh Redis (its own, or `--redis-url`, which gets FLUSHALL), N users get k starts
each through `LeaseStore.decide` (the processor's script, called directly), k = 0..K, then one
`stop` of a session without a lease each, under a committed offset past the starts: every user
key then holds its k leases and exactly one stored result, no eventIds (the events have none).
Per k it reads the mean per user key of
- the value: STRLEN of the MessagePack state (what the script reads and writes per event),
- MEMORY USAGE (SAMPLES 0): key, value and allocator overhead of the key,
- INFO used_memory delta / N (also the expiry entry of the key, PX idle TTL),
and the bytes per lease are the least-squares slope over k. Run once with leases without a
deviceClass (events without one) and once with (the device's class: tv, mobile, web). The
sessions, devices and contents are those of the benchmark's data set. The fields of the
stored leases are reported too: the bytes of `s` (startedAt) and `k` (deviceClass) per lease.

Works with the code from before issue 13 too (no policies, no deviceClass: that variant is
skipped): run it in both trees for a before/after figure. Prints JSON; `--out` writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import msgpack  # noqa: E402
import orjson  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from bench.access import bench_redis  # noqa: E402
from bench.data import DEVICE_CLASSES, DEVICES  # noqa: E402
from compose.launcher import start_services  # noqa: E402
from processor import rules as codes  # noqa: E402
from processor.lease_store import LeaseStore, Rules  # noqa: E402
from processor.wire import DecodedEvent  # noqa: E402

# The code from before issue 13 has no policies. Looked up as a file of this tree's package: in
# a worktree of an old commit the editable install would import the main checkout's module.
if (Path(codes.__file__).parent / "policies.py").is_file():
    from processor.policies import Policy
else:  # pragma: no cover - only in an old tree
    Policy = None  # type: ignore[assignment,misc]

TOPIC = "bench.lease-bytes"
BASE_MS = 1_763_800_000_000  # a present-day event time (13 digits: a uint64 in MessagePack)
CHUNK = 2000  # events per decide call
MAX_STREAMS = 64  # no start is denied: every start is a lease


def event(kind: str, u: int, j: int, with_class: bool) -> DecodedEvent:
    device = DEVICES[(u + j) % len(DEVICES)]
    fields = {
        "type": kind,
        "user_id": f"u-{u}",
        "session_id": f"s-{u}-{j}",
        "event_id": None,
        "device_id": device,
        "content_id": f"c-{(u * 7919 + j) % 5000}",
        "plan": "premium" if with_class else None,
        "device_class": DEVICE_CLASSES[device] if with_class else None,
    }
    return DecodedEvent(**{k: v for k, v in fields.items() if k in DecodedEvent._fields})


class Decider:
    def __init__(self, redis: Redis) -> None:
        rules = Rules(
            max_streams=MAX_STREAMS,
            lease_ttl_ms=90_000,
            overflow_policy="reject",
            event_id_memory=16,
            idle_user_ttl_ms=86_400_000,
        )
        self.store = LeaseStore(redis, TOPIC, rules)
        self.takes_policies = "policies" in inspect.signature(self.store.decide).parameters
        self.policy = (
            Policy("p", MAX_STREAMS, False, {"tv": MAX_STREAMS, "mobile": MAX_STREAMS, "web": MAX_STREAMS})
            if Policy is not None
            else None
        )
        self.offset = 0
        self.epoch: int | None = None

    async def claim(self) -> None:
        self.epoch = (await self.store.claim(0)).epoch

    async def decide(self, batch: list[DecodedEvent], ts: int, expect: int) -> None:
        """Decide `batch` in chunks, each committed up to its own first offset (as the processor does)."""
        for i in range(0, len(batch), CHUNK):
            chunk = batch[i : i + CHUNK]
            events = [(self.offset + n, ts + n, ev) for n, ev in enumerate(chunk)]
            committed = self.offset
            self.offset += len(chunk)
            kwargs = {"policies": [self.policy] * len(events)} if self.takes_policies and self.policy else {}
            results = await self.store.decide(0, self.epoch, committed, self.offset - 1, events, **kwargs)
            bad = [r for r in results if r.code != expect]
            if bad:
                raise RuntimeError(f"expected result code {expect}, got {bad[0]}")


async def measure(redis: Redis, users: int, leases: int, with_class: bool) -> dict:
    await redis.flushall()
    d = Decider(redis)
    await d.claim()
    before = (await redis.info("memory"))["used_memory"]
    starts = [event("start", u, j, with_class) for u in range(users) for j in range(leases)]
    await d.decide(starts, BASE_MS, codes.STARTED)
    # One event per user past the starts: their stored results are trimmed, one result stays.
    stops = [event("stop", u, 999, with_class) for u in range(users)]
    await d.decide(stops, BASE_MS + 60_000, codes.NOT_ACTIVE)
    after = (await redis.info("memory"))["used_memory"]
    keys = [d.store.user_key(0, f"u-{u}") for u in range(users)]
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.strlen(key)
        pipe.memory_usage(key, samples=0)
    got = await pipe.execute()
    strlens, usages = got[0::2], got[1::2]
    if any(not n for n in strlens):
        raise RuntimeError("a user key is missing")
    s_bytes = k_bytes = lease_count = 0
    lease_bytes_values = []
    for raw in await redis.mget(keys[: min(users, 200)]):
        state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        lmap = state.get("l") or {}
        if len(lmap) != leases:
            raise RuntimeError(f"expected {leases} leases per user, found {len(lmap)}")
        for sid, lease in lmap.items():
            lease_count += 1
            lease_bytes_values.append(len(msgpack.packb(sid)) + len(msgpack.packb(lease)))
            if "s" in lease:
                s_bytes += len(msgpack.packb("s")) + len(msgpack.packb(lease["s"]))
            if "k" in lease:
                k_bytes += len(msgpack.packb("k")) + len(msgpack.packb(lease["k"]))
    return {
        "leases_per_user": leases,
        "value_bytes_per_user_key": round(sum(strlens) / users, 1),
        "memory_usage_per_user_key": round(sum(usages) / users, 1),
        "used_memory_per_user_key": round((after - before) / users, 1),
        "lease_entry_bytes": round(sum(lease_bytes_values) / lease_count, 1) if lease_count else None,
        "startedAt_bytes_per_lease": round(s_bytes / lease_count, 1) if lease_count else None,
        "deviceClass_bytes_per_lease": round(k_bytes / lease_count, 1) if lease_count else None,
    }


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var


async def run(redis_url: str, users: int, max_leases: int) -> dict:
    redis = bench_redis(redis_url)
    try:
        info = await redis.info("server")
        supports_class = "device_class" in DecodedEvent._fields
        out: dict = {
            "code": "policies (issue 13)" if Policy is not None else "before policies",
            "redis_version": info.get("redis_version"),
            "users": users,
            "leases_per_user": list(range(max_leases + 1)),
            "method": "N users x k starts via LeaseStore.decide, then one stop each under a later "
            "committed offset (one stored result per key, no eventIds); per lease = slope over k",
            "variants": {},
        }
        for with_class in (False, True):
            name = "with_deviceClass" if with_class else "without_deviceClass"
            if with_class and not supports_class:
                out["variants"][name] = {"skipped": "this code has no deviceClass"}
                continue
            rows = [await measure(redis, users, k, with_class) for k in range(max_leases + 1)]
            per_lease = {
                metric: round(slope([(r["leases_per_user"], r[f"{metric}_per_user_key"]) for r in rows]), 1)
                for metric in ("value_bytes", "memory_usage", "used_memory")
            }
            with_leases = [r for r in rows if r["leases_per_user"]]
            per_lease["lease_entry_bytes"] = round(
                sum(r["lease_entry_bytes"] for r in with_leases) / len(with_leases), 1
            )
            per_lease["startedAt_bytes"] = with_leases[-1]["startedAt_bytes_per_lease"]
            per_lease["deviceClass_bytes"] = with_leases[-1]["deviceClass_bytes_per_lease"]
            out["variants"][name] = {"per_lease": per_lease, "by_leases": rows}
        return out
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lease_bytes", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=2000, help="users per measurement (default 2000)")
    p.add_argument("--max-leases", type=int, default=4, help="leases per user up to (default 4)")
    p.add_argument("--redis-url", help="use this Redis instead of starting one (it gets FLUSHALL!)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    # Its own Redis (free port, temp dir) unless one is given.
    with start_services(kafka=False, redis_url=a.redis_url) as svc:
        assert svc.redis_url is not None
        report = asyncio.run(run(svc.redis_url, a.users, a.max_leases))
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_bytes(text)
    print(text.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
