"""Files for the Docker variant of the secured services (compose/docker-compose.yml, profile
``secure``): the same CA, users, broker properties, Redis ACL file and ACL commands as
``make services-secure``, written on the host for containers that mount the folder at /secure::

    python -m compose.secure_docker                      # -> compose/.run/secure-docker/
    docker compose -f compose/docker-compose.yml --profile secure up -d --wait kafka-secure redis-secure
    docker compose -f compose/docker-compose.yml --profile secure run --rm kafka-secure-setup
    set -a; . compose/.run/secure-docker/processor.env; set +a

The containers run with host networking (like the cluster profile), so the addresses are the
local launcher's: Kafka SASL_SSL 127.0.0.1:9094 (mutual TLS 9095, mismatch 9096, controller
9097), Redis TLS 127.0.0.1:6380. Written without a Docker engine at hand: the files are checked
by tests/unit/test_secure_docker_files.py, the containers are not.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from compose.certs import Pki, make_pki
from compose.kafka_acls import Topics, render_acl_commands
from compose.kafka_secure import ADMIN, SecureKafkaBroker
from compose.managed import RUN_DIR
from compose.redis_acls import acl_file
from compose.secure_services import KAFKA_USERS, REDIS_USERS, TOPIC_CONFIGS, contract_acls, write_passwords

MOUNT = Path("/secure")  # where the containers see the folder
KAFKA_PORT, MTLS_PORT, MISMATCH_PORT, CONTROLLER_PORT, REDIS_PORT = 9094, 9095, 9096, 9097, 6380
KAFKA_DATA = "/var/lib/kafka/data"  # a tmpfs in the container: formatted afresh on every start


def _in_container(pki: Pki) -> Pki:
    """The same PKI, its paths as the containers see them."""
    moved = {
        f.name: MOUNT / "pki" / getattr(pki, f.name).name
        for f in dataclasses.fields(pki)
        if isinstance(getattr(pki, f.name), Path) and f.name != "folder"
    }
    return dataclasses.replace(pki, folder=MOUNT / "pki", **moved)


def _setup_script(topics: Topics, partitions: int) -> str:
    """Topics and ACLs, created as admin with Kafka's own tools (the image's /opt/kafka/bin)."""
    bootstrap, config = f"127.0.0.1:{KAFKA_PORT}", str(MOUNT / "kafka" / "admin.properties")
    roles = {"events": topics.events, "verdicts": topics.verdicts, "dlq": topics.dlq}
    roles |= {"policies": topics.policies, "replies": topics.replies}
    lines = ["#!/bin/sh", "set -eu", "export PATH=/opt/kafka/bin:$PATH"]
    for role, name in roles.items():
        configs = "".join(f" --config {k}={v}" for k, v in TOPIC_CONFIGS.get(role, {}).items())
        lines.append(
            f"kafka-topics.sh --bootstrap-server {bootstrap} --command-config {config} --create "
            f"--if-not-exists --topic {name} --partitions {partitions} --replication-factor 1{configs}"
        )
    lines += render_acl_commands(contract_acls(topics), bootstrap=bootstrap, command_config=config)
    return "\n".join(lines) + "\n"


def write_docker_files(folder: Path, topics: Topics = Topics(), partitions: int = 12) -> Path:  # noqa: B008
    """Write everything the ``secure`` profile mounts into ``folder`` (a new CA and passwords)."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = make_pki(folder / "pki")
    kafka_pw = write_passwords(folder, "kafka", KAFKA_USERS)
    redis_pw = write_passwords(folder, "redis", REDIS_USERS)
    broker = SecureKafkaBroker(
        _in_container(pki),
        kafka_pw,
        port=KAFKA_PORT,
        mtls_port=MTLS_PORT,
        mismatch_port=MISMATCH_PORT,
        controller_port=CONTROLLER_PORT,
        data_dir=KAFKA_DATA,
    )
    kafka = folder / "kafka"
    kafka.mkdir(exist_ok=True)
    (kafka / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in broker._properties().items()))
    (kafka / "format-args").write_text(" ".join(broker._format_args()) + "\n")
    (kafka / "admin.properties").write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN}" password="{kafka_pw[ADMIN]}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={MOUNT / 'pki' / 'ca.pem'}\n"
    )
    (kafka / "setup.sh").write_text(_setup_script(topics, partitions))
    redis = folder / "redis"
    redis.mkdir(exist_ok=True)
    (redis / "users.acl").write_text(acl_file(redis_pw))
    for user in ("processor", "gateway"):
        (folder / f"{user}.env").write_text(_host_env(folder, user))
    # The containers run as their images' own users: they must read these throwaway files.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _host_env(folder: Path, user: str) -> str:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{KAFKA_PORT}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(folder / "secrets" / f"kafka-{user}.password"),
        "KAFKA_SSL_CA_FILE": str(folder / "pki" / "ca.pem"),
        "REDIS_URL": f"rediss://{user}@127.0.0.1:{REDIS_PORT}/0",
        "REDIS_PASSWORD_FILE": str(folder / "secrets" / f"redis-{user}.password"),
        "REDIS_SSL_CA_FILE": str(folder / "pki" / "ca.pem"),
    }
    return "".join(f"{k}={v}\n" for k, v in env.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compose.secure_docker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", nargs="?", type=Path, default=RUN_DIR / "secure-docker")
    args = parser.parse_args(argv)
    folder = write_docker_files(args.folder.resolve())
    print(
        f"wrote the secure profile's files to {folder} (mounted at {MOUNT}); see compose/docker-compose.yml"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
