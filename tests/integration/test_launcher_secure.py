"""`make services-secure` (`python -m compose.launcher up --secure`) starts what a processor needs
and prints only file paths; `down` stops it. The real command line, on free ports, so a
developer's own secured services (9094, 6380, compose/.run/secure) are never touched."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.helpers import create_ssl_context

from compose.launcher import REPO_ROOT, secure_dir
from compose.managed import free_port, port_answers
from compose.secure_services import KAFKA_USERS


def _free_port_run(length: int) -> int:
    """A port P with P .. P+length-1 all free now (the secured broker's three listeners)."""
    while True:
        port = free_port()
        if port + length < 65536 and not any(port_answers(port + i) for i in range(length)):
            return port


async def _launcher(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "compose.launcher", *args,
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode()


def _settings(folder: Path, printed: str) -> dict[str, str]:
    """processor.env as printed, after checking that no password was."""
    passwords = [p.read_text() for p in (folder / "secrets").glob("*.password")]
    assert len(passwords) == len(KAFKA_USERS) + 3
    assert not [p for p in passwords if p in printed]
    env_file = folder / "processor.env"
    assert str(env_file) in printed
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    env["password"] = Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text()
    return env


async def test_up_secure_prints_no_password_grants_the_contract_and_down_stops_it() -> None:
    kafka_port, redis_port = _free_port_run(3), free_port()
    ports = ["--kafka-port", str(kafka_port), "--redis-port", str(redis_port)]
    folder = secure_dir(kafka_port)
    try:
        env = _settings(folder, await _launcher("up", "--secure", *ports))
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{kafka_port}"
        assert env["REDIS_URL"] == f"rediss://processor@127.0.0.1:{redis_port}/0"
        # the processor's settings work as printed, with the contract's ACLs on the default topics
        producer = AIOKafkaProducer(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
            sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
            sasl_plain_username=env["KAFKA_SASL_USERNAME"],
            sasl_plain_password=env["password"],
            ssl_context=create_ssl_context(cafile=env["KAFKA_SSL_CA_FILE"]),
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait("playback.verdicts", b"v", key=b"u")
            assert sent.topic == "playback.verdicts"
            with pytest.raises(TopicAuthorizationFailedError):  # read-only for the processor
                await producer.send_and_wait("playback.policies", b"p", key=b"default")
        finally:
            await producer.stop()
    finally:
        stopped = await _launcher("down", "--local", *ports)
        shutil.rmtree(folder, ignore_errors=True)
    assert "kafka-secure: stopping" in stopped and "redis-secure: stopping" in stopped
    assert not port_answers(kafka_port)
    assert not port_answers(redis_port)
