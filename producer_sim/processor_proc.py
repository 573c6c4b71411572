"""The processor as a child process (`python -m processor`): the one wrapper the demo, the
bench and the tests run it with.

Settings go in through the environment, as in production; the HTTP port is always known (a
free one unless given), so /health and /metrics can be read. Process control (signals,
waits, stop) is blocking and short; the HTTP probes are coroutines, since every caller but
the demo polls them from an event loop that also drives load (a probe of a SIGSTOPped
processor waits out its timeout: it must not stall the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from compose.managed import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESSOR_ARGS = ("-m", "processor")


class ProcessorError(RuntimeError):
    """The processor exited or did not become healthy; the message carries its log's tail."""


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` (Prometheus text) whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def _http_get(port: int, path: str, timeout: float) -> tuple[int, bytes] | None:
    """(status, body) of GET 127.0.0.1:port/path; None when nothing answers in time."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # a 503 from /health is an answer
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ProcessorProcess:
    """One `python -m processor` (or `python <python_args>`) with `env` over this process's
    environment, output appended to `log_path`, in a session of its own (a signal meant for
    the caller's terminal does not reach it)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        http_port: int | None = None,
        python_args: Sequence[str] = PROCESSOR_ARGS,
    ) -> None:
        self.http_port = http_port or free_port()
        self.env = {**os.environ, **env, "HTTP_PORT": str(self.http_port)}
        self.log_path = Path(log_path)
        self.python_args = list(python_args)
        self.popen: subprocess.Popen[bytes] | None = None

    # -- life cycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def start(self) -> ProcessorProcess:
        if self.running:
            raise ProcessorError(f"processor {self.pid} is running already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, *self.python_args],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def restart(self, timeout: float = 20.0) -> ProcessorProcess:
        """Stop (SIGTERM, SIGKILL after `timeout`) and start again: same port, env and log."""
        self.stop(timeout)
        return self.start()

    def signal(self, sig: int) -> None:
        """Send `sig` (SIGTERM, SIGSTOP, SIGCONT...) if the process still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)  # type: ignore[union-attr]

    def pause(self) -> None:
        """SIGSTOP: a frozen process (a zombie to the group once its session times out)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once it has exited (subprocess.TimeoutExpired after `timeout`)."""
        if self.popen is None:
            raise ProcessorError("the processor was never started")
        return self.popen.wait(timeout)

    def kill(self) -> int | None:
        """SIGKILL to its process group, no shutdown: what a crash looks like."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (finish the batch, commit, leave the group) and its exit code; raises
        subprocess.TimeoutExpired if it has not exited after `timeout`."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, SIGKILL after `timeout`; the exit code (None if never started)."""
        if self.popen is None:
            return None
        try:
            return self.terminate(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    async def astop(self, within: float = 20.0) -> int | None:
        return await asyncio.to_thread(self.stop, within)

    def __enter__(self) -> ProcessorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ProcessorProcess:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # -- HTTP probes ----------------------------------------------------------------------
    async def _get(self, path: str, within: float = 2.0) -> tuple[int, bytes] | None:
        return await asyncio.to_thread(_http_get, self.http_port, path, within)

    async def health(self) -> tuple[int, dict] | None:
        """(HTTP status, body) of GET /health; None when it does not answer."""
        got = await self._get("/health")
        if got is None:
            return None
        try:
            return got[0], orjson.loads(got[1])
        except orjson.JSONDecodeError:
            return None

    async def healthy(self) -> bool:
        """/health answers 200: consuming partitions, none halted, publishing working."""
        got = await self.health()
        return got is not None and got[0] == 200

    async def assigned(self) -> int:
        """The partitions /health says it holds; -1 when it does not answer."""
        got = await self.health()
        return -1 if got is None else int(got[1].get("assignedPartitions", 0))

    async def wait_healthy(self, within: float = 60.0) -> None:
        """Poll /health until 200; fail at once (with the log's tail) if the process exits."""
        deadline = time.monotonic() + within
        while True:
            if not self.running:
                raise ProcessorError(
                    f"processor {self.pid} exited ({self.returncode}) before it was healthy:\n"
                    f"{self.log_tail()}"
                )
            if await self.healthy():
                return
            if time.monotonic() > deadline:
                raise ProcessorError(
                    f"processor {self.pid} did not answer /health 200 within {within:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    async def metrics(self) -> str | None:
        """The /metrics text; None when it does not answer."""
        got = await self._get("/metrics")
        return None if got is None else got[1].decode(errors="replace")

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels`; None if unreachable."""
        text = await self.metrics()
        return None if text is None else metric_value(text, name, **labels)

    # -- its log and its resources ----------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log()
        return "\n".join(text.splitlines()[-lines:]) if text else f"(no log at {self.log_path})"

    def log_lines(self) -> list[dict]:
        """The JSON log lines (the processor logs one object a line)."""
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                obj = orjson.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def logged(self, fragment: str) -> list[dict]:
        """The log lines whose message contains `fragment`."""
        return [x for x in self.log_lines() if fragment in str(x.get("msg", ""))]

    # psutil is a dev extra (the bench's): imported where used
    def rss_mb(self) -> float | None:
        import psutil

        try:
            return psutil.Process(self.popen.pid).memory_info().rss / 2**20 if self.popen else None
        except psutil.Error:
            return None

    def cpu_seconds(self) -> float | None:
        import psutil

        try:
            t = psutil.Process(self.popen.pid).cpu_times() if self.popen else None
        except psutil.Error:
            return None
        return t.user + t.system if t else None
