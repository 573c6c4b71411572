"""The Docker variant of the secured services (compose/secure_docker.py, profile ``secure``) is
written without an engine at hand: check what can be checked without one. Every file the
containers are told to read exists, the broker's properties are the local broker's with the
container's paths and fixed ports, the setup script grants exactly the contract's ACLs, and the
files a user sources hold no password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compose.kafka_acls import Topics, render_acl_commands
from compose.secure_docker import MOUNT, write_docker_files
from compose.secure_services import contract_acls

pytestmark = pytest.mark.unit

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_docker_files(tmp_path_factory.mktemp("secure-docker"))


def _host_path(folder: Path, container_path: str) -> Path:
    return folder / Path(container_path).relative_to(MOUNT)


def test_every_secure_path_the_containers_read_exists(folder: Path) -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    text = " ".join(
        str(services[name].get(key, ""))
        for name in ("kafka-secure", "kafka-secure-setup", "redis-secure")
        for key in ("command", "entrypoint", "healthcheck")
    )
    text += (folder / "kafka" / "server.properties").read_text() + (folder / "kafka" / "setup.sh").read_text()
    used = set(re.findall(r"/secure/[\w./-]+", text))
    assert len(used) > 8
    missing = [p for p in used if not _host_path(folder, p).is_file()]
    assert not missing


def test_the_broker_listens_on_the_documented_ports_with_acls_on(folder: Path) -> None:
    props = dict(
        line.split("=", 1) for line in (folder / "kafka" / "server.properties").read_text().splitlines()
    )
    assert props["listeners"] == (
        "SASL_SSL://127.0.0.1:9094,MTLS://127.0.0.1:9095,MISMATCH://127.0.0.1:9096,CONTROLLER://127.0.0.1:9097"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["log.dirs"].startswith("/var/lib/kafka/data")
    scram = (folder / "kafka" / "format-args").read_text().split()
    assert scram.count("--add-scram") == 8  # 4 users x 2 SCRAM mechanisms


def test_the_setup_script_grants_exactly_the_contract_acls(folder: Path) -> None:
    lines = (folder / "kafka" / "setup.sh").read_text().splitlines()
    acl_lines = [line for line in lines if line.startswith("kafka-acls.sh")]
    expected = render_acl_commands(
        contract_acls(Topics()),
        bootstrap="127.0.0.1:9094",
        command_config="/secure/kafka/admin.properties",
    )
    assert acl_lines == expected
    created = [re.search(r"--topic (\S+)", line).group(1) for line in lines if "kafka-topics.sh" in line]
    t = Topics()
    assert created == [t.events, t.verdicts, t.dlq, t.policies, t.replies]


def test_the_env_files_and_the_acl_file_hold_no_password(folder: Path) -> None:
    passwords = [p.read_text() for p in (folder / "secrets").glob("*.password")]
    assert len(passwords) == 7
    for name in ("processor.env", "gateway.env", "redis/users.acl"):
        text = (folder / name).read_text()
        assert not [p for p in passwords if p in text], name
