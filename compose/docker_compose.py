"""The Docker path: ``docker compose`` on compose/docker-compose.yml when an engine answers."""

from __future__ import annotations

import shutil
import subprocess

from compose.managed import COMPOSE_DIR

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"


def docker_engine_available(timeout: float = 10.0) -> bool:
    """True when the docker CLI exists and ``docker info`` reaches an engine quickly."""
    if shutil.which("docker") is None:
        return False
    try:
        res = subprocess.run(
            ["docker", "info"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def docker_compose(*args: str) -> int:
    cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), *args]
    print("$", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
