"""The processor as a child process (`python -m processor`), for the demo and the tests.

Settings go in through the environment, as in production. `wait_healthy()` polls
GET /health until it answers 200, failing early (with the log's tail) if the process exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ProcessorError(RuntimeError):
    pass


def health_ok(port: int, timeout: float = 1.0) -> bool:
    """True when GET /health on 127.0.0.1:port answers 200 (blocking: call from a thread in async code)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m processor` from the repo root with `env`, its output appended to `log_path`.

    In a session of its own, so a signal meant for the caller's terminal does not reach it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "processor"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class ProcessorProcess:
    def __init__(self, env: dict[str, str], http_port: int, log_path: Path) -> None:
        self.env = {**os.environ, **env, "HTTP_PORT": str(http_port)}
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = spawn(self.env, self.log_path)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessorError(f"the processor exited during start-up:\n{self.log_tail()}")
            if health_ok(self.http_port):
                return
            time.sleep(0.2)
        raise ProcessorError(
            f"the processor did not answer /health within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the processor finishes its batch and commits), SIGKILL after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
