"""The benchmark's gateway part: one processor and one `python -m gateway` process, driven
over HTTP at fixed offered rates and, at the same rates, straight on Kafka with reply headers
(bench/gateway_load.py), so the gateway's own share of a start's latency is visible. The floor
(bench/floor_app.py, a bare ASGI app on the same uvicorn settings) is driven by the same
generator at each rate first: each row has the floor's and the gateway's CPU per call (from
/proc) and their ratio, and each server's idle CPU (taken while the straight-on-Kafka run gives
it no calls). With `profile_dir`, one more run of each server at each rate is sampled by py-spy
(raw collapsed stacks, --nonblocking), apart from the measured runs so the sampler's cost does
not touch their figures."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.gateway_load import measure, over_http
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


def _spawn(args: list[str], env: dict, log_path, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _wait_healthy(server: subprocess.Popen, url: str, log_path) -> None:
    for _ in range(300):
        if await asyncio.to_thread(_healthy, url):
            return
        if server.poll() is not None:
            raise RuntimeError(f"{url} exited with {server.returncode}; see {log_path}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} is not healthy after 60 s; see {log_path}")


async def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        await asyncio.to_thread(server.wait, 20)
    except subprocess.TimeoutExpired:
        server.kill()


async def _profiled(pid: int, out: Path, seconds: float, load) -> dict:
    """Run `load` while py-spy samples `pid` (raw collapsed stacks to `out`)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    sampler = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
        "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await load
    finally:
        await sampler.wait()


async def gateway_bench(
    bench,
    rates: list[int],
    seconds: float,
    connections: int = 256,
    profile_dir: Path | None = None,
    baseline: Path | None = None,
) -> dict:
    """`bench` is the running bench.run.Bench (its services, topic names and output folder).

    `baseline`: a checkout of other code (e.g. `git archive main | tar -x -C /tmp/base`) whose
    `python -m gateway` runs beside this one (own replies topic and group) and is driven right
    before it at each rate: before and after, alternating, in one run on the same services.
    """
    topic = f"bench.{bench.run_id}.gateway.events"
    bench.created_topics.append(topic)
    await create_topics(bench.bootstrap, [topic], PARTITIONS)
    names = bench.names("gateway")
    await bench.output_topic(names.verdicts)
    logs = bench.out_dir / "logs"
    # The gateway's replies topic and bench.gateway_load's own (straight on Kafka).
    replies = rf"bench\.{bench.run_id}\.replies(\.base)?|bench-replies-[0-9a-f]+"
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
    gateway = _spawn(["-m", "gateway"], env, log_path)
    floor_port = free_port()
    floor_url = f"http://127.0.0.1:{floor_port}"
    floor_log = logs / "floor.log"
    floor = _spawn(["-m", "bench.floor_app", "--port", str(floor_port)], env, floor_log)
    base = base_url = None
    if baseline is not None:
        base_port = free_port()
        base_url = f"http://127.0.0.1:{base_port}"
        base_env = {
            **env,
            "GATEWAY_PORT": str(base_port),
            "GATEWAY_REPLIES_TOPIC": f"bench.{bench.run_id}.replies.base",
            "GATEWAY_CONSUMER_GROUP": f"bench.{bench.run_id}.gateway.base",
            "PYTHONPATH": str(baseline),
        }
        bench.created_topics.append(base_env["GATEWAY_REPLIES_TOPIC"])
        base = _spawn(["-m", "gateway"], base_env, logs / "gateway-baseline.log", cwd=baseline)
    try:
        await proc.wait_healthy()
        await _wait_healthy(gateway, url, log_path)
        await _wait_healthy(floor, floor_url, floor_log)
        if base is not None:
            await _wait_healthy(base, base_url, logs / "gateway-baseline.log")
        runs = []
        for rate in rates:
            before = None
            if base is not None:
                before = await over_http(base_url, auth.encode(), rate, seconds, connections, base.pid)
            idle_pids = {"gateway": gateway.pid, "floor": floor.pid, "baseline": base and base.pid}
            row = await measure(
                url, bench.bootstrap, topic, auth.encode(), rate, seconds, connections,
                gateway.pid, floor_url, floor.pid, idle_pids,
            )  # fmt: skip
            if before is not None:
                row["baseline"] = before
                if row["floor"] and row["floor"]["server_cpu_ms_per_call"]:
                    ratio = before["server_cpu_ms_per_call"] / row["floor"]["server_cpu_ms_per_call"]
                    row["baseline_cpu_ratio_to_floor"] = round(ratio, 2)
            runs.append({"rate": rate, **row})
        profiles = {}
        if profile_dir is not None:
            await asyncio.to_thread(profile_dir.mkdir, parents=True, exist_ok=True)
            servers = [("floor", floor, floor_url), ("gateway", gateway, url)]
            if base is not None:
                servers.append(("baseline", base, base_url))
            for rate in rates:
                for name, server, server_url in servers:
                    out = profile_dir / f"{name}-{rate}.txt"
                    load = over_http(server_url, auth.encode(), rate, seconds, connections, server.pid)
                    row = await _profiled(server.pid, out, seconds, load)
                    profiles[f"{name}-{rate}"] = {"rate": rate, "stacks": str(out), "run": row}
        return {
            "seconds_per_rate": seconds,
            "connections": connections,
            "runs": runs,
            "profiles": profiles,
            "method": "open loop (latency from each request's due time), new user per start; at each rate "
            "the floor (bench.floor_app: bare ASGI on the same uvicorn settings), then the same starts "
            "straight on Kafka (reply headers, timed to the reply), then the gateway; CPU per call = the "
            "server process's utime+stime from /proc over the run / calls offered",
        }
    finally:
        await _stop(gateway)
        await _stop(floor)
        if base is not None:
            await _stop(base)
        await proc.astop(30)
