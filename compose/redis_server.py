"""``redis-server`` from PATH (Debian's package when missing and root), AOF everysec."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from compose.managed import RUN_DIR, LauncherError, ManagedProcess, free_port

log = logging.getLogger("compose.launcher")


def ensure_redis_server() -> str:
    """Path of ``redis-server``; installs the Debian package when missing and running as root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log.info("redis-server not found: installing the Debian package redis-server")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"],
        ):
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise LauncherError(f"`{' '.join(cmd)}` failed:\n{(res.stdout + res.stderr)[-3000:]}")
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if found:
            return found
    raise LauncherError(
        "redis-server (7.x) not found on PATH. Install it, e.g. "
        "`sudo apt-get update && sudo apt-get install -y redis-server` (Debian/Ubuntu) or "
        "`brew install redis` (macOS), or run with a Docker engine."
    )


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when Redis answers PING with PONG (False while it loads its AOF/RDB)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ManagedProcess):
    """``redis-server`` with AOF persistence (appendfsync everysec), no RDB snapshots."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | str = RUN_DIR / "redis",
        detached: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(data_dir, detached)
        self.port = port or free_port()
        self.binary: str | None = None
        # e.g. the cluster-mode options of one Redis Cluster node (compose/redis_cluster.py)
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def version(self) -> str:
        binary = self.binary or shutil.which("redis-server")
        if not binary:
            return "unknown"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"v=(\S+)", out)
        return m.group(1) if m else "unknown"

    def _prepare(self) -> None:
        self.binary = ensure_redis_server()

    def _listen_args(self) -> list[str]:
        """Where clients connect (a TLS-only server replaces this with ``--port 0 --tls-port``)."""
        return ["--port", str(self.port)]

    def _command(self) -> list[str]:
        assert self.binary is not None
        return [
            self.binary,
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.running:
                raise LauncherError("redis-server exited during start-up")
            if redis_ping("127.0.0.1", self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"Redis on 127.0.0.1:{self.port} did not answer PING in time")

    def wipe_data(self) -> None:
        """Delete the AOF and RDB files (only while stopped): Redis then starts empty."""
        if self.running:
            raise LauncherError("stop Redis before wiping its data")
        shutil.rmtree(self.data_dir / "appendonlydir", ignore_errors=True)
        for name in ("dump.rdb", "appendonly.aof"):
            (self.data_dir / name).unlink(missing_ok=True)

    def restart(self, timeout: float = 90.0, wipe_data: bool = False) -> None:
        """Stop cleanly and start again; ``wipe_data=True`` simulates losing Redis' state."""
        self.stop()
        if wipe_data:
            self.wipe_data()
        self.start(timeout)

    async def arestart(self, within: float = 90.0, wipe_data: bool = False) -> None:
        await asyncio.to_thread(self.restart, within, wipe_data)

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)
        log.info(
            "Redis %s on %s started in %.2f s (pid %s)",
            self.version,
            self.url,
            self.start_seconds or 0.0,
            self.pid,
        )
