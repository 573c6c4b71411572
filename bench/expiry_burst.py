"""The longest script call when a silent partition's leases all expire at its next record.

    python -m bench.expiry_burst --redis redis://127.0.0.1:6379/0 --leases 50000 --bound 0
    python -m bench.expiry_burst --redis redis://127.0.0.1:6379/0 --leases 50000 --bound 2000

`--bound` is MAX_EXPIRIES_PER_CALL (0: none). A Redis serves nobody else while one call runs,
so the longest call is what other partitions on that Redis (and a cluster's failure detector)
wait through.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from bench.access import bench_redis
from processor.lease_store import LeaseStore, Rules
from processor.wire import DecodedEvent

TTL = 90_000
T0 = 1_700_000_000_000


def start(user: str) -> DecodedEvent:
    return DecodedEvent("start", user, "s1", None, None, None, None, None, None)


async def measure(url: str, leases: int, bound: int) -> dict:
    redis = bench_redis(url)
    store = LeaseStore(redis, f"burst-{uuid.uuid4().hex}", Rules(3, TTL, "reject", 16, 3_600_000, bound))
    try:
        epoch = (await store.claim(0)).epoch
        offset = 0
        for first in range(0, leases, 2000):
            events = [
                (offset + i, T0 + first + i, start(f"u{first + i}")) for i in range(min(2000, leases - first))
            ]
            await store.decide(0, epoch, offset, offset + len(events) - 1, events)
            offset += len(events)
        calls: list[float] = []
        call = store._decide

        async def timed(**kwargs):
            t = time.perf_counter()
            reply = await call(**kwargs)
            calls.append(time.perf_counter() - t)
            return reply

        store._decide = timed
        t = time.perf_counter()
        [late] = await store.decide(0, epoch, offset, offset, [(offset, T0 + 10 * TTL, start("late"))])
        total = time.perf_counter() - t
        return {
            "leases": leases,
            "bound": bound,
            "expired": len(late.expired),
            "calls": len(calls),
            "longest_call_ms": round(max(calls) * 1000, 1),
            "total_ms": round(total * 1000, 1),
        }
    finally:
        await redis.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--leases", type=int, default=50_000)
    p.add_argument("--bound", type=int, default=2000)
    a = p.parse_args()
    print(asyncio.run(measure(a.redis, a.leases, a.bound)))


if __name__ == "__main__":
    main()
