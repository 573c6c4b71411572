"""The decide script's fixed cost per call apart from its cost per event, from Redis's own
accounting (INFO commandstats: microseconds spent in EVALSHA).

    python -m bench.script_cost --redis redis://127.0.0.1:6379/0

Calls of 1 and of 100 events over the same kind of traffic (a steady mix of starts,
heartbeats and stops over many users, as the live rates send it); the fixed cost is what a
call costs beyond its events: cost(n) = fixed + n * per_event, solved from the two sizes.
A live cycle at low rates carries one or two events per partition, so the fixed part is
what a low rate pays per event.

commandstats counts wall time inside Redis, which a busy machine inflates. For a figure that
does not move with the machine's load, run Redis under callgrind and name its pid: the
instructions of each phase are read from a dump taken after it (callgrind_control -d).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p redis-server --port 6390 --save ''
    python -m bench.script_cost --redis redis://127.0.0.1:6390/0 --calls 400 --callgrind-pid <pid>
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import random
import re
import subprocess
import uuid

from bench.access import bench_redis
from processor.lease_store import DecideCall, LeaseStore, Rules
from processor.wire import DecodedEvent

T0 = 1_700_000_000_000
TTL = 90_000


class Traffic:
    """start -> heartbeats -> stop per session, over `users` users, 10 ms of event time apart."""

    def __init__(self, users: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self.live: dict[str, tuple[str, int]] = {}  # user -> (session, heartbeats left)
        self.n = 0

    def next(self) -> DecodedEvent:
        self.n += 1
        user = f"u{self.rng.randrange(self.users)}"
        session, beats = self.live.get(user, (None, 0))
        if session is None:
            session = f"s{self.n}"
            self.live[user] = (session, self.rng.randrange(2, 12))
            kind = "start"
        elif beats > 0:
            self.live[user] = (session, beats - 1)
            kind = "heartbeat"
        else:
            del self.live[user]
            kind = "stop"
        return DecodedEvent(kind, user, session, f"e{self.n}", "tv", None)


async def evalsha_usec(redis) -> tuple[int, float]:
    stats = await redis.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(entry["calls"]), float(entry["usec"])


def callgrind_instructions(pid: int) -> int:
    """Instructions the callgrind'ed Redis ran since its last dump (a new dump is taken)."""
    before = set(glob.glob(f"/tmp/cg.{pid}*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    (dump,) = set(glob.glob(f"/tmp/cg.{pid}*")) - before
    with open(dump) as f:
        for line in f:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no instruction total in {dump}")


async def measure(url: str, calls: int, users: int, callgrind_pid: int | None = None) -> dict:
    redis = bench_redis(url)
    store = LeaseStore(redis, f"cost-{uuid.uuid4().hex[:8]}", Rules(3, TTL, "reject", 16, 3_600_000, 2000))
    out: dict = {}
    try:
        traffic = Traffic(users)
        epoch = (await store.claim(0)).epoch
        offset, ts = 0, T0
        for size in (100, 1, 100, 1):  # each size twice: the first round warms the users up
            c0, u0 = await evalsha_usec(redis)
            if callgrind_pid:
                callgrind_instructions(callgrind_pid)  # the phase starts from a fresh dump
            for _ in range(calls if size == 1 else max(1, calls // 20)):
                events = []
                for _ in range(size):
                    events.append((offset, ts, traffic.next()))
                    offset += 1
                    ts += 10
                # committed trails by 200 offsets, as a live processor's commit interval keeps it
                await store.decide_many([DecideCall(0, epoch, max(-1, offset - 200), offset - 1, events)])
            c1, u1 = await evalsha_usec(redis)
            out[size] = {"calls": c1 - c0, "usec_per_call": round((u1 - u0) / max(1, c1 - c0), 2)}
            if callgrind_pid:
                out[size]["instructions_per_call"] = callgrind_instructions(callgrind_pid) // max(1, c1 - c0)
        return {"calls_of_1": out[1], "calls_of_100": out[100], **_split(out, "usec_per_call")} | (
            _split(out, "instructions_per_call") if callgrind_pid else {}
        )
    finally:
        await redis.aclose()


def _split(out: dict, measure: str) -> dict:
    """cost(n) = fixed + n * per_event, from the calls of 1 and of 100 events."""
    one, hundred = out[1][measure], out[100][measure]
    per_event = (hundred - one) / 99
    return {f"{measure}_per_event": round(per_event, 2), f"{measure}_fixed": round(one - per_event, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--calls", type=int, default=4000, help="calls of 1 event (calls of 100: a twentieth)")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--callgrind-pid", type=int, help="the pid of a Redis run under callgrind (see above)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(measure(args.redis, args.calls, args.users, args.callgrind_pid)), indent=1))


if __name__ == "__main__":
    main()
