"""What every local service shares: paths, free ports, and a managed server process.

A ``ManagedProcess`` runs in its own process group with start/stop/kill/restart, so a
SIGKILL takes its children too and a test run that dies leaves no server behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path

log = logging.getLogger("compose.launcher")

COMPOSE_DIR = Path(__file__).resolve().parent
REPO_ROOT = COMPOSE_DIR.parent
RUN_DIR = COMPOSE_DIR / ".run"


class LauncherError(RuntimeError):
    """A service could not be prepared or started; the message says what to do next."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail_log(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie (an orphan may wait for a reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # state is the field after the ")" that closes the command name
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# managed processes
# --------------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort: a test run that dies between start and stop leaves no JVM behind."""
    for svc in list(_LIVE):
        if not svc.detached:
            with contextlib.suppress(Exception):
                svc.kill()


class ManagedProcess:
    """A server process in its own process group, with start/stop/kill/restart."""

    name = "service"

    def __init__(self, data_dir: Path | str, detached: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.detached = detached
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    # subclasses -------------------------------------------------------------------------
    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    @property
    def output_log(self) -> Path:
        return self.data_dir / f"{self.name}.out"

    def _failure_log(self) -> Path:
        return self.output_log

    # public -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self._prepare()
        with open(self.output_log, "ab") as out:
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(t0 + timeout)
        except (TimeoutError, LauncherError) as exc:
            self.kill()
            raise LauncherError(
                f"{self.name} did not start: {exc}\n--- tail of {self._failure_log()} ---\n"
                f"{tail_log(self._failure_log())}"
            ) from exc
        self.start_seconds = time.monotonic() - t0

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (clean shutdown, data flushed), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %s) ignored SIGTERM for %.0f s: killing it", self.name, self.pid, timeout)
            self.kill()
        self.proc = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL, no shutdown: what a crash looks like (chaos tests)."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self.proc = None
        _LIVE.discard(self)

    def restart(self, timeout: float = 90.0) -> None:
        """Stop cleanly (if running) and start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    # asyncio-friendly variants: the blocking work runs in a worker thread -----------------
    async def astart(self, within: float = 90.0) -> None:
        await asyncio.to_thread(self.start, within)

    async def astop(self, within: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, within)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def arestart(self, within: float = 90.0) -> None:
        await asyncio.to_thread(self.restart, within)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
