"""`python -m compose.launcher up --secure`: the secured Kafka and Redis started detached, the
contract's topics and ACLs made, and the settings a processor and a gateway need printed (paths
to the password files, never a password)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from compose.kafka_acls import Topics
from compose.managed import RUN_DIR, LauncherError, port_answers
from compose.pidfiles import MARKERS, pidfile, read_pids
from compose.secure_services import start_secure_services

SECURE_KAFKA_PORT = 9094  # SASL_SSL; +1 mutual TLS, +2 hostname mismatch
SECURE_REDIS_PORT = 6380
SECURE_DIR = RUN_DIR / "secure"


def secure_dir(kafka_port: int) -> Path:
    """Where ``up --secure`` on this port keeps its CA, passwords and data (``secure/`` for the
    default port), so runs on other ports never replace each other's credentials."""
    return SECURE_DIR if kafka_port == SECURE_KAFKA_PORT else RUN_DIR / f"secure-{kafka_port}"


def cmd_up_secure(kafka_port: int | None, redis_port: int | None) -> int:
    """Start the secured Kafka and Redis detached, make the contract's topics and ACLs, and print
    the settings a processor and a gateway need (paths to the password files, never a password)."""
    kafka_port, redis_port = kafka_port or SECURE_KAFKA_PORT, redis_port or SECURE_REDIS_PORT
    folder = secure_dir(kafka_port)
    running = read_pids("kafka-secure", kafka_port, MARKERS["kafka-secure"])
    running += read_pids("redis-secure", redis_port, MARKERS["redis-secure"])
    if running:
        print(f"secured services already run (pids {running}); `make services-down` first for new ones")
        _print_secure_env(folder)
        return 0
    busy = [p for p in (kafka_port, kafka_port + 1, kafka_port + 2, redis_port) if port_answers(p)]
    if busy:
        raise LauncherError(f"ports {busy} are taken: choose others with --kafka-port / --redis-port")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)  # throwaway CA and passwords: new every start
    _, partitions = events_partitions()
    svc = start_secure_services(
        folder,
        kafka_port=kafka_port,
        mtls_port=kafka_port + 1,
        mismatch_port=kafka_port + 2,
        redis_port=redis_port,
        contract_topics=contract_topics(),
        partitions=partitions,
        detached=True,
    )
    assert svc.broker is not None and svc.redis is not None
    pidfile("kafka-secure", kafka_port).write_text(f"{svc.broker.pid} {kafka_port}\n")
    pidfile("redis-secure", redis_port).write_text(f"{svc.redis.pid} {redis_port}\n")
    svc.write_env_files()
    print(
        f"kafka (secured): SASL_SSL {svc.bootstrap} (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), mutual TLS "
        f"{svc.mtls_bootstrap}, hostname mismatch {svc.mismatch_bootstrap}; users admin, processor, "
        f"gateway, processor-nowrite; the contract's topics and ACLs made"
    )
    print(f"redis (secured): TLS only {svc.redis_url}; users admin, processor, gateway; default off")
    _print_secure_env(folder)
    return 0


def _print_secure_env(folder: Path) -> None:
    for user in ("processor", "gateway"):
        env_file = folder / f"{user}.env"
        print(f"# {user}: set -a; . {env_file}; set +a")
        with contextlib.suppress(OSError):
            print(env_file.read_text(), end="")
    print(f"# addresses, CA, client certificate and password files: {folder / 'services.json'}")


def contract_topics() -> Topics:
    """The topic and group names the processor and the gateway will use (their settings' names)."""
    env, d = os.environ, Topics()
    return Topics(
        events=env.get("EVENTS_TOPIC", d.events),
        verdicts=env.get("VERDICTS_TOPIC", d.verdicts),
        dlq=env.get("DLQ_TOPIC", d.dlq),
        policies=env.get("POLICIES_TOPIC", d.policies),
        replies=env.get("GATEWAY_REPLIES_TOPIC", d.replies),
        processor_group=env.get("CONSUMER_GROUP", d.processor_group),
        gateway_group=env.get("GATEWAY_CONSUMER_GROUP", d.gateway_group),
    )


def events_partitions() -> tuple[str, int]:
    """The events topic and partition count the processor will use (its own settings' names)."""
    return os.environ.get("EVENTS_TOPIC", "playback.events"), int(os.environ.get("TOPIC_PARTITIONS", "12"))
