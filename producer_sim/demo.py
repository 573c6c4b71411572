"""`make demo` / `python -m producer_sim.demo`: the whole system on this machine, checked.

1. Kafka on localhost:9092 and Redis on localhost:6379: whatever already answers there is
   used as is; otherwise Docker (`docker compose up -d kafka redis`) when an engine answers,
   else local processes from compose/launcher.py (Apache Kafka's jars, redis-server).
2. The processor, `python -m processor`, with a random JWT_SECRET and a free HTTP port,
   until GET /health answers 200.
3. The simulator, in this process, for about 30 s: normal viewers, families, account
   sharers on basic, standard and premium plans (their policies written to the policies
   topic before the processor starts), on TVs, phones and computers; some stop a session
   from another device when denied; with duplicates, late and malformed records. Every
   verdict is checked, deny advice and terminates included.
4. The report.
5. The HTTP gateway, `python -m gateway`, and a short curl session through it (start x4
   with the fourth denied and its advice, heartbeat, stop, terminate, the listing); the
   support console's address on that gateway and a support token for trying it
   (docs/console.md; `--hold 600` keeps everything up ten minutes for a look).
6. The session ledger read back from the verdicts topic (`producer_sim.ledger`):
   concurrent streams over time, per device class, and its plot.
7. Everything the demo started is stopped (also on Ctrl-C or errors).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from aiokafka.errors import KafkaError
from rich.console import Console

from compose.launcher import RUN_DIR, LauncherError, docker_engine_available, free_port, start_services
from gateway import demo_session
from gateway.console.support_auth import support_token
from gateway.settings import load_gateway_settings
from producer_sim.cli import finish
from producer_sim.kafka_io import install_policies
from producer_sim.ledger import main as ledger_main
from producer_sim.plans import PLANS, policy_records
from producer_sim.processor_proc import ProcessorError, ProcessorProcess
from producer_sim.runner import DeliveryError, Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig

KAFKA_PORT = 9092
REDIS_PORT = 6379


def demo_config(duration: float) -> SimConfig:
    return SimConfig(
        rate=300,
        duration=duration,
        users=300,
        speed=20,
        sharers=0.15,
        plans=True,
        terminates=0.4,
        duplicates=0.02,
        late=0.02,
        malformed=0.01,
        drain_timeout=30,
    )


def start_demo_services(stack: contextlib.ExitStack, console: Console) -> tuple[str, str]:
    """Kafka and Redis on their usual ports; what the demo starts is stopped by `stack`."""
    backend = "compose" if docker_engine_available() else "local"
    console.print(
        f"services: Kafka on 127.0.0.1:{KAFKA_PORT}, Redis on 127.0.0.1:{REDIS_PORT} "
        f"({'docker compose' if backend == 'compose' else 'local processes'}; what answers there is used) ..."
    )
    svc = start_services(kafka_port=KAFKA_PORT, redis_port=REDIS_PORT, reuse=True, backend=backend)
    stack.callback(svc.stop)
    for note in svc.notes:
        console.print(note)
    assert svc.bootstrap is not None and svc.redis_url is not None
    return svc.bootstrap, svc.redis_url


def run_gateway_session(
    stack: contextlib.ExitStack, console: Console, bootstrap: str, redis_url: str, jwt_secret: str
) -> int:
    """Start `python -m gateway` on a free port and run the curl session through it."""
    auth_secret = secrets.token_urlsafe(32)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "JWT_SECRET": jwt_secret,
        "GATEWAY_AUTH_SECRET": auth_secret,
        "GATEWAY_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    log_path = RUN_DIR / "demo-gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    stack.callback(_stop, gateway)
    console.print(f"\ngateway: `python -m gateway` on http://127.0.0.1:{port} (log: {log_path})")
    # The support console (docs/console.md): its address and a support token for trying it.
    token = support_token(load_gateway_settings(gateway_auth_secret=auth_secret), "demo-agent", 3600)
    console.print(f"support console: http://127.0.0.1:{port}/console", soft_wrap=True)
    console.print(f"support token (role=support, 1 h): {token}", soft_wrap=True)
    # The token command reads the same GATEWAY_AUTH_SECRET from the environment as the gateway.
    return demo_session.run(f"http://127.0.0.1:{port}", f"demo-{secrets.token_hex(3)}", auth_secret)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producer_sim.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of simulated load (30)")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--ledger-plot", type=Path, default=RUN_DIR / "demo-ledger.png", help="the ledger's PNG plot"
    )
    parser.add_argument(
        "--hold", type=float, default=0.0, help="seconds to keep the services up at the end (the console)"
    )
    args = parser.parse_args(argv)
    console = Console()
    secret = secrets.token_urlsafe(32)
    try:
        with contextlib.ExitStack() as stack:
            bootstrap, redis_url = start_demo_services(stack, console)

            settings = SimSettings(kafka_bootstrap_servers=bootstrap, redis_url=redis_url, jwt_secret=secret)
            # The plans' policies go in first: the processor reads them all before its first event.
            asyncio.run(install_policies(settings, policy_records(), grace_s=0))
            plans = ", ".join(f"{p.name} {p.max_streams}" for p in PLANS.values())
            console.print(
                f"policies: plans ({plans} streams; premium at most 2 on TVs) in {settings.policies_topic}"
            )

            env = {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "REDIS_URL": redis_url,
                "JWT_SECRET": secret,
                "POLICIES_TOPIC": settings.policies_topic,
            }
            processor = ProcessorProcess(env, RUN_DIR / "demo-processor.log")
            console.print(f"processor: starting `python -m processor` (log: {processor.log_path}) ...")
            stack.enter_context(processor)  # started now, stopped (SIGTERM) at the end
            asyncio.run(processor.wait_healthy(90))
            console.print(f"processor: healthy on http://127.0.0.1:{processor.http_port}/health")

            sim = Simulation(demo_config(args.duration), settings, console)
            console.print(
                f"simulator: {sim.cfg.users} users ({sim.cfg.sharers:.0%} account sharers), "
                f"{sim.cfg.rate:.0f} records/s for {args.duration:.0f} s, "
                f"{sim.cfg.speed:.0f}x simulated time, "
                f"limits by plan ({settings.overflow_policy})"
            )
            report = asyncio.run(sim.run())
            status = finish(sim, report, console, args.report, None)
            if not processor.running:
                console.print(f"[red]the processor exited during the run[/red]:\n{processor.log_tail()}")
                status = status or 1
            denied_sharers = report["verdicts"]["by_user_kind"].get("sharer", {}).get("deny", 0)
            console.print(f"account sharers denied: {denied_sharers} starts")
            pol = report["policies"]
            console.print(
                f"class-cap denies: {pol['denies']['device_class_limit']}, limit denies: "
                f"{pol['denies']['limit_exceeded']}, sessions terminated from another device: "
                f"{pol['terminates']['terminated']}"
            )
            status = run_gateway_session(stack, console, bootstrap, redis_url, secret) or status
            if args.hold > 0:  # the services stay up for a look at the support console
                console.print(f"holding for {args.hold:.0f} s (Ctrl-C ends the demo) ...")
                time.sleep(args.hold)
            # The first consumer of the ledger: concurrent streams over time, from the verdicts alone.
            console.print(f"\nthe session ledger ({settings.verdicts_topic}), plot: {args.ledger_plot}")
            ledger = ledger_main(
                [
                    "--bootstrap",
                    bootstrap,
                    "--verdicts-topic",
                    settings.verdicts_topic,
                    "--plot",
                    str(args.ledger_plot),
                ]
            )
            return ledger or status
    except KeyboardInterrupt:
        console.print("interrupted: everything the demo started has been stopped")
        return 130
    except (LauncherError, ProcessorError, KafkaError, DeliveryError, OSError, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
