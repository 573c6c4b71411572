"""`producer-sim` / `python -m producer_sim`: load the processor and check every verdict.

Kafka, topics and the lease rules come from the environment (KAFKA_BOOTSTRAP_SERVERS,
EVENTS_TOPIC, VERDICTS_TOPIC, POLICIES_TOPIC, MAX_STREAMS, LEASE_TTL_SECONDS,
OVERFLOW_POLICY, EVENT_ID_MEMORY, and JWT_SECRET to verify tokens), the same names the
processor reads. `--plans` writes the plans' policies to the policies topic first.
Exit status: 0 when every verdict matched, 1 on mismatches, missing or malformed verdicts,
2 when the run could not be done.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console

from producer_sim import report as report_mod
from producer_sim.runner import DeliveryError, Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="producer-sim",
        description="Simulated players: produce start/heartbeat/stop/terminate events, check every "
        "verdict against the reference model of the lease rules and policies.",
    )
    p.add_argument("--rate", type=_positive, help="records per second (default: no cap)")
    how_long = p.add_mutually_exclusive_group()
    how_long.add_argument("--duration", type=_positive, help="seconds of producing (default 60)")
    how_long.add_argument("--events", type=int, help="records to produce")
    p.add_argument("--users", type=int, default=1000, help="simulated accounts (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the population and the faults (default 1)")
    p.add_argument(
        "--speed", type=_positive,
        help="simulated seconds per wall second (1 = real time; default: not tied to the wall clock)",
    )  # fmt: skip
    p.add_argument(
        "--heartbeat-interval", type=_positive, default=30.0, help="seconds between heartbeats (30)"
    )
    p.add_argument("--sharers", type=_fraction, default=0.05, help="fraction of account sharers (0.05)")
    p.add_argument(
        "--families", type=_fraction, default=0.2, help="fraction of families near the limit (0.2)"
    )
    p.add_argument("--duplicates", type=_fraction, default=0.0, help="fraction of events sent twice")
    p.add_argument(
        "--late", type=_fraction, default=0.0, help="fraction of events with a late record timestamp"
    )
    p.add_argument("--malformed", type=_fraction, default=0.0, help="malformed records per event")
    p.add_argument(
        "--plans", action="store_true",
        help="users get plans (basic 1 stream, standard 2, premium 4 with 2 on TVs), written to the "
        "policies topic (POLICIES_TOPIC) before the run; events carry plan and deviceClass",
    )  # fmt: skip
    p.add_argument(
        "--terminates", type=_fraction, default=0.0,
        help="chance that a denied player first terminates the oldest session the deny names (0)",
    )  # fmt: skip
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to wait for the last verdicts (30)"
    )
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--plot", type=Path, help="write a PNG of rates and latency here (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument("--run-id", help="tag of this run in user ids (default: random)")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    extra = {"run_id": args.run_id} if args.run_id else {}
    return SimConfig(
        rate=args.rate,
        duration=args.duration,
        events=args.events,
        users=args.users,
        seed=args.seed,
        speed=args.speed,
        heartbeat_interval_s=args.heartbeat_interval,
        sharers=args.sharers,
        families=args.families,
        duplicates=args.duplicates,
        late=args.late,
        malformed=args.malformed,
        plans=args.plans,
        terminates=args.terminates,
        drain_timeout=args.drain_timeout,
        progress=not args.no_progress,
        **extra,
    )


def finish(
    sim: Simulation, report: dict, console: Console, report_path: Path | None, plot_path: Path | None
) -> int:
    """Print the report, write the files asked for; the exit status."""
    report_mod.render(report, console)
    if report_path is not None:
        report_mod.write_json(report, report_path)
        console.print(f"report written to {report_path}")
    if plot_path is not None:
        from producer_sim.plot import write_plot

        write_plot(sim.timeline, sim.checker.latency_times, sim.checker.latencies_ms, plot_path)
        console.print(f"plot written to {plot_path}")
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console()
    try:
        cfg = config_from_args(args)
        settings = SimSettings()
    except (ValueError, ValidationError) as exc:
        parser.error(str(exc))
    sim = Simulation(cfg, settings, console)
    try:
        report = asyncio.run(sim.run())
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except (KafkaError, DeliveryError, OSError, RuntimeError, TimeoutError) as exc:
        console.print(
            f"[red]error:[/red] {exc!r}\nIs Kafka reachable at {settings.kafka_bootstrap_servers}? "
            "(`make services` starts it on localhost:9092)"
        )
        return 2
    return finish(sim, report, console, args.report, args.plot)


if __name__ == "__main__":
    sys.exit(main())
