"""The gateway under load: starts at a fixed offered rate over HTTP, and the same straight on Kafka.

    python -m bench.gateway_load --url http://127.0.0.1:8000 --rate 500 --seconds 10 \
        [--pid GATEWAY_PID] [--floor-url http://127.0.0.1:8001 --floor-pid FLOOR_PID]

Open loop: request i is due at t0 + i/rate whatever the earlier ones do, and its latency is
counted from when it was due (no coordinated omission), over many concurrent connections
(aiohttp). Every start names a new user, so every answer is a `started` verdict. The same
rate is then driven straight on Kafka: a start event with reply headers naming a partition
of a reply topic this process reads, timed to its reply. The difference of the two is the
gateway's own cost (HTTP, auth, validation, its own produce and reply routing).
With a server's pid, its CPU per call is read from /proc over the run (robust on a shared
machine, where wall times are not); with a floor (bench/floor_app.py: a bare ASGI app on the
same server) the same generator drives it too, and the report gives the gateway's CPU per
call over the floor's.
Prints a JSON report; `measure()` returns it for bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import aiohttp
import jwt
import orjson
from aiokafka import TopicPartition

from bench.access import bench_kafka
from bench.kafka_util import events_producer_partitioner
from gateway.auth import auth_secret
from gateway.settings import load_gateway_settings
from processor.replies import PARTITION_HEADER, TOPIC_HEADER
from processor.topics import ensure_topics

WARMUP_FRACTION = 0.2  # the first part of each run is not counted (connections, JIT-free warm caches)
TARGET_ADDED_P99_MS = 10.0  # issue 22: the gateway adds at most this to the p99 at 500 starts/s
TARGET_CPU_RATIO = 1.5  # issue 22: the gateway's CPU per call over the bare ASGI floor's
_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads) so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK  # utime, stime (fields 14, 15)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


async def _paced(rate: float, seconds: float, one) -> tuple[list[float], int, float]:
    """Run `one(i)` at `rate`/s for `seconds`; (latencies of counted calls from due time, errors, elapsed)."""
    total = int(rate * seconds)
    warm = int(total * WARMUP_FRACTION)
    latencies: list[float] = []
    errors = 0
    t0 = time.perf_counter()

    async def run(i: int, due: float) -> None:
        nonlocal errors
        ok = await one(i)
        if not ok:
            errors += 1
        elif i >= warm:
            latencies.append(time.perf_counter() - due)

    tasks = []
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run(i, due)))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - t0


async def over_http(
    url: str, secret: bytes, rate: float, seconds: float, connections: int, pid: int | None = None
) -> dict:
    """Starts over HTTP; with the server's `pid`, its CPU per call over the whole run (warm-up too)."""
    tag = uuid.uuid4().hex[:8]
    total = int(rate * seconds)
    now = int(time.time())
    # Signed before the run: the generator's CPU goes to the calls, not to tokens.
    tokens = [
        "Bearer "
        + jwt.encode({"sub": f"gl-{tag}-{i}", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")
        for i in range(total)
    ]
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as http:
        async with http.get("/health") as r:
            if r.status != 200:
                raise SystemExit(f"the gateway at {url} is not healthy ({r.status})")

        async def one(i: int) -> bool:
            headers = {"Authorization": tokens[i], "Content-Type": "application/json"}
            try:
                async with http.post("/v1/sessions", data=b'{"deviceId":"bench"}', headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    return r.status == 200
            except aiohttp.ClientError:
                statuses[-1] = statuses.get(-1, 0) + 1
                return False

        cpu = time.process_time()
        server_before = process_cpu_seconds(pid) if pid else (0.0, 0.0)
        latencies, errors, elapsed = await _paced(rate, seconds, one)
        server_user = server_sys = server_cpu = None
        if pid:
            user, system = process_cpu_seconds(pid)
            server_user, server_sys = user - server_before[0], system - server_before[1]
            server_cpu = server_user + server_sys
        cpu = time.process_time() - cpu
    return {
        "offered_per_s": rate,
        "starts_per_s": round((total - errors) / elapsed, 1),
        "calls": total,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        # The generator shares the machine: its own CPU per call, to weigh the figures.
        "generator_cpu_ms_per_call": round(cpu / total * 1000, 3),
        "server_cpu_ms_per_call": None if server_cpu is None else round(server_cpu / total * 1000, 3),
        # System time is mostly the sockets' (loopback TCP is processed in the sender's syscall).
        "server_sys_ms_per_call": None if server_sys is None else round(server_sys / total * 1000, 3),
        "server_cpu_share_of_core": None if server_cpu is None else round(server_cpu / elapsed, 3),
        # Offered rate not met or a median over 100 ms: the machine (or the server) was saturated and
        # this run's figures, CPU per call too (batches grow), are not those of the live rate.
        "saturated": (total - errors) / elapsed < 0.97 * rate
        or sorted(latencies or [0])[len(latencies) // 2] > 0.1,
        **percentiles(latencies),
    }


async def over_kafka(bootstrap: str, events_topic: str, rate: float, seconds: float) -> dict:
    """The same starts produced straight to the events topic, each timed to its reply."""
    tag = uuid.uuid4().hex[:8]
    replies = f"bench-replies-{tag}"
    await ensure_topics(bootstrap, [replies], 1, 1)
    waiters: dict[str, asyncio.Future] = {}
    producer = bench_kafka(bootstrap).producer(
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        partitioner=events_producer_partitioner(),
    )
    consumer = bench_kafka(bootstrap).consumer(enable_auto_commit=False, fetch_max_wait_ms=100)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(replies, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    verdict = orjson.loads(record.value)
                    future = waiters.pop(verdict["eventId"], None)
                    if future is not None and not future.done() and verdict["decision"] != "revoke":
                        future.set_result(None)

    reader = asyncio.create_task(read())
    headers = [(TOPIC_HEADER, replies.encode()), (PARTITION_HEADER, b"0")]

    async def one(i: int) -> bool:
        user, event = f"gk-{tag}-{i}", f"gk-{tag}-{i}"
        value = orjson.dumps({"type": "start", "userId": user, "sessionId": "s", "eventId": event})
        future = waiters[event] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(10):
                ack = await producer.send(events_topic, value, key=user.encode(), headers=headers)
                await ack
                await future
            return True
        except TimeoutError:
            waiters.pop(event, None)
            return False

    cpu = time.process_time()
    try:
        latencies, errors, elapsed = await _paced(rate, seconds, one)
        cpu = time.process_time() - cpu
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    total = int(rate * seconds)
    return {
        "offered_per_s": rate,
        "starts_per_s": round((total - errors) / elapsed, 1),
        "calls": total,
        "errors": errors,
        "generator_cpu_ms_per_call": round(cpu / total * 1000, 3),
        **percentiles(latencies),
    }


async def measure(
    url: str,
    bootstrap: str,
    events_topic: str,
    secret: bytes,
    rate: float,
    seconds: float,
    connections: int,
    pid: int | None = None,
    floor_url: str | None = None,
    floor_pid: int | None = None,
    idle_pids: dict[str, int | None] | None = None,
) -> dict:
    """At one rate: the floor (if given), straight on Kafka, then the gateway, one after the other."""
    floor = None
    if floor_url is not None:
        floor = await over_http(floor_url, secret, rate, seconds, connections, floor_pid)
    # The servers get no calls meanwhile: their fixed cost (reply polls, group heartbeats, timers).
    idle = {name: p for name, p in (idle_pids or {}).items() if p}
    idle_before = {name: sum(process_cpu_seconds(p)) for name, p in idle.items()}
    idle_t0 = time.perf_counter()
    kafka = await over_kafka(bootstrap, events_topic, rate, seconds)
    idle_span = time.perf_counter() - idle_t0
    kafka["idle_cpu_share_of_core"] = {
        name: round((sum(process_cpu_seconds(p)) - idle_before[name]) / idle_span, 4)
        for name, p in idle.items()
    }
    http = await over_http(url, secret, rate, seconds, connections, pid)
    overhead = None
    if http["p99_ms"] is not None and kafka["p99_ms"] is not None:
        overhead = round(http["p99_ms"] - kafka["p99_ms"], 2)
    ratio = None
    if floor and floor["server_cpu_ms_per_call"] and http["server_cpu_ms_per_call"] is not None:
        ratio = round(http["server_cpu_ms_per_call"] / floor["server_cpu_ms_per_call"], 2)
    return {
        "gateway": http,
        "kafka_direct": kafka,
        "floor": floor,
        "gateway_added_p99_ms": overhead,
        "gateway_added_p50_ms": None
        if http["p50_ms"] is None or kafka["p50_ms"] is None
        else round(http["p50_ms"] - kafka["p50_ms"], 2),
        "target_added_p99_ms": TARGET_ADDED_P99_MS,
        "cpu_ratio_to_floor": ratio,
        "target_cpu_ratio": TARGET_CPU_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    settings = load_gateway_settings(allow_insecure_dev_secret=True)
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.gateway_port}")
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--events-topic", default=settings.events_topic)
    parser.add_argument("--secret", default=None, help="GATEWAY_AUTH_SECRET (default: the configured one)")
    parser.add_argument("--rate", type=float, default=500.0, help="offered starts per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=256, help="concurrent HTTP connections at most")
    parser.add_argument("--pid", type=int, default=None, help="the gateway's pid: its CPU per call")
    parser.add_argument("--floor-url", default=None, help="a bench.floor_app to drive first (the floor)")
    parser.add_argument("--floor-pid", type=int, default=None, help="the floor's pid: its CPU per call")
    args = parser.parse_args(argv)
    secret = args.secret.encode() if args.secret else auth_secret(settings)
    report = asyncio.run(
        measure(
            args.url.rstrip("/"),
            args.bootstrap,
            args.events_topic,
            secret,
            args.rate,
            args.seconds,
            args.connections,
            args.pid,
            args.floor_url and args.floor_url.rstrip("/"),
            args.floor_pid,
        )
    )
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
