"""The benchmark's gateway part: one processor and one `python -m gateway` process, driven
over HTTP at fixed offered rates and, at the same rates, straight on Kafka with reply headers
(bench/gateway_load.py), so the gateway's own share of a start's latency is visible."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import urllib.request

from bench.gateway_load import measure
from bench.kafka_util import create_topics
from bench.procs import JWT_SECRET, processor_process
from compose.launcher import REPO_ROOT, free_port

PARTITIONS = 12


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _spawn_gateway(env: dict, log_path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def gateway_bench(bench, rates: list[int], seconds: float, connections: int = 256) -> dict:
    """`bench` is the running bench.run.Bench (its services, topic names and output folder)."""
    topic = f"bench.{bench.run_id}.gateway.events"
    bench.created_topics.append(topic)
    await create_topics(bench.bootstrap, [topic], PARTITIONS)
    names = bench.names("gateway")
    await bench.output_topic(names.verdicts)
    logs = bench.out_dir / "logs"
    # The gateway's replies topic and bench.gateway_load's own (straight on Kafka).
    replies = rf"bench\.{bench.run_id}\.replies|bench-replies-[0-9a-f]+"
    proc_log = logs / "gateway-processor.log"
    proc = processor_process(bench.bootstrap, bench.redis_url, topic, names, proc_log, REPLY_TOPICS=replies)
    proc.start()
    auth = secrets.token_urlsafe(32)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bench.bootstrap,
        "REDIS_URL": bench.redis_url,
        "EVENTS_TOPIC": topic,
        "VERDICTS_TOPIC": names.verdicts,
        "JWT_SECRET": JWT_SECRET,
        "GATEWAY_AUTH_SECRET": auth,
        "GATEWAY_PORT": str(port),
        "GATEWAY_REPLIES_TOPIC": f"bench.{bench.run_id}.replies",
        "GATEWAY_CONSUMER_GROUP": f"bench.{bench.run_id}.gateway",
        "LOG_LEVEL": "WARNING",
    }
    bench.created_topics.append(env["GATEWAY_REPLIES_TOPIC"])
    url = f"http://127.0.0.1:{port}"
    log_path = logs / "gateway.log"
    gateway = _spawn_gateway(env, log_path)
    try:
        await proc.wait_healthy()
        for _ in range(300):
            if await asyncio.to_thread(_healthy, url):
                break
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited with {gateway.returncode}; see {log_path}")
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"the gateway is not healthy after 60 s; see {log_path}")
        runs = []
        for rate in rates:
            row = await measure(url, bench.bootstrap, topic, auth.encode(), rate, seconds, connections)
            runs.append({"rate": rate, **row})
        return {
            "seconds_per_rate": seconds,
            "connections": connections,
            "runs": runs,
            "method": "open loop (latency from each request's due time), new user per start; the same "
            "rate straight on Kafka: a start with reply headers, timed to its reply",
        }
    finally:
        gateway.terminate()
        try:
            await asyncio.to_thread(gateway.wait, 20)
        except subprocess.TimeoutExpired:
            gateway.kill()
        await proc.astop(30)
