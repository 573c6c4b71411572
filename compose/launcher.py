"""Docker-less launcher for the local services: Apache Kafka (KRaft, single node) and Redis.

Kafka runs from Apache Kafka's own jars, resolved once from Maven Central into
``compose/.cache/kafka-jars`` (git-ignored); Redis is the ``redis-server`` found on PATH.

Library use (tests, demo, bench)::

    from compose.launcher import KafkaBroker, RedisServer, free_port

    broker = KafkaBroker(port=free_port(), data_dir=tmp / "kafka")
    broker.start()            # blocks until the broker answers metadata requests
    ...
    broker.stop()

Command line::

    python -m compose.launcher up|down|status|ensure [--kafka-port 9092] [--redis-port 6379] [--local]

``up`` starts what does not already answer on the ports, detached (the services outlive the
command), with pidfiles, logs and data under ``compose/.run/``. With a Docker engine answering,
``up``/``down`` use ``docker compose`` (compose/docker-compose.yml) unless ``--local`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import weakref
from pathlib import Path

log = logging.getLogger("compose.launcher")

COMPOSE_DIR = Path(__file__).resolve().parent
REPO_ROOT = COMPOSE_DIR.parent
KAFKA_POM = COMPOSE_DIR / "kafka" / "pom.xml"
KAFKA_JARS_DIR = COMPOSE_DIR / ".cache" / "kafka-jars"
RUN_DIR = COMPOSE_DIR / ".run"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"

KAFKA_JAR_GLOB = "kafka_2.13-*.jar"
_KAFKA_JAR_RE = re.compile(r"kafka_2\.13-(\d[\w.\-]*)\.jar$")


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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
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


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kafka_cluster_id() -> str:
    """Same shape as ``kafka.tools.StorageTool random-uuid`` (base64url of a UUID, no padding)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------------------------
# system dependencies
# --------------------------------------------------------------------------------------------


def _pom_kafka_version() -> str | None:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    return m.group(1).strip() if m else None


def _find_kafka_jar(jars_dir: Path) -> Path | None:
    jars = sorted(p for p in jars_dir.glob(KAFKA_JAR_GLOB) if _KAFKA_JAR_RE.search(p.name))
    return jars[-1] if jars else None


def kafka_version(jars_dir: Path = KAFKA_JARS_DIR) -> str | None:
    """Kafka version of the cached broker jars (``"4.1.1"``), or None when not resolved yet."""
    jar = _find_kafka_jar(jars_dir)
    if jar is None:
        return None
    m = _KAFKA_JAR_RE.search(jar.name)
    return m.group(1) if m else None


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LauncherError(
            "java not found: Kafka needs a Java 17+ runtime on PATH (or JAVA_HOME). "
            "Install it, e.g. `apt-get install -y openjdk-17-jre-headless`."
        )
    return java


def ensure_kafka_jars(jars_dir: Path = KAFKA_JARS_DIR) -> Path:
    """Resolve Apache Kafka's broker jars from Maven Central into ``jars_dir`` unless cached.

    The resolve goes to a temporary folder that is renamed into place, so an interrupted run
    never leaves a half-filled cache behind.
    """
    wanted = _pom_kafka_version()
    have = kafka_version(jars_dir)
    if have is not None and (wanted is None or have == wanted):
        return jars_dir
    find_java()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError(
            "mvn not found: the Kafka broker jars are resolved with Maven the first time. "
            "Install it, e.g. `apt-get install -y maven` (or run with a Docker engine)."
        )
    tmp = jars_dir.with_name(f"{jars_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log.info("resolving Apache Kafka %s jars with Maven into %s", wanted, jars_dir)
    t0 = time.monotonic()
    cmd = [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies", f"-Dkafka.jars.dir={tmp}"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or _find_kafka_jar(tmp) is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LauncherError(
            "resolving the Kafka jars with Maven failed (is Maven Central reachable?):\n"
            f"$ {' '.join(cmd)}\n{(res.stdout + res.stderr)[-4000:]}"
        )
    shutil.rmtree(jars_dir, ignore_errors=True)
    tmp.rename(jars_dir)
    log.info("resolved %d jars in %.1f s", len(list(jars_dir.glob("*.jar"))), time.monotonic() - t0)
    return jars_dir


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


# --------------------------------------------------------------------------------------------
# Kafka readiness: a Metadata request over the wire (no client library needed)
# --------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def kafka_broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    """Number of live brokers in a Metadata (v4) response; raises OSError when not answering.

    A KRaft broker lists itself only once it is registered and unfenced, so ``>= 1`` means
    the broker accepts produce/consume/admin requests.
    """
    client_id = b"compose-launcher"
    # header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
    # body v4: topics=null (-1), allow_auto_topic_creation=false
    body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    correlation_id, _throttle_ms, n_brokers = struct.unpack(">iii", resp[:12])
    if correlation_id != 7:
        raise ConnectionError("unexpected correlation id in metadata response")
    return int(n_brokers)


def wait_for_kafka(host: str, port: int, deadline: float, alive=lambda: True) -> None:
    """Poll until the broker at host:port lists a live broker, or raise TimeoutError."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise LauncherError("the Kafka process exited during start-up")
        try:
            if kafka_broker_count(host, port) >= 1:
                return
        except (OSError, struct.error) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"Kafka on {host}:{port} did not answer in time (last error: {last!r})")


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when Redis answers PING with PONG (False while it loads its AOF/RDB)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# managed processes
# --------------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[_ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort: a test run that dies between start and stop leaves no JVM behind."""
    for svc in list(_LIVE):
        if not svc.detached:
            with contextlib.suppress(Exception):
                svc.kill()


class _ManagedProcess:
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
                f"{_tail(self._failure_log())}"
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


class KafkaBroker(_ManagedProcess):
    """Apache Kafka, single node, KRaft combined mode (broker + controller), from the cached jars."""

    name = "kafka"

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | str = RUN_DIR / "kafka",
        controller_port: int | None = None,
        jars_dir: Path | str = KAFKA_JARS_DIR,
        heap: tuple[str, str] = ("256m", "768m"),
        detached: bool = False,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, detached)
        self.port = port or free_port()
        self.jars_dir = Path(jars_dir)
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        # The controller port is part of the formatted quorum state: keep it across restarts.
        port_file = self.data_dir / "controller.port"
        if controller_port is None and port_file.exists():
            controller_port = int(port_file.read_text().strip())
        self.controller_port = controller_port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        return kafka_version(self.jars_dir) or "unknown"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    def _failure_log(self) -> Path:
        return self.log_file if self.log_file.exists() else self.output_log

    def _properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            "delete.topic.enable": "true",
            # After a SIGKILL the restarted node must wait for its old registration's session to
            # expire before it can register again (DuplicateBrokerRegistrationException): keep the
            # session short (default 9 s) so chaos restarts take seconds.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
        }
        props.update(self.extra_properties)
        return props

    def _write_configs(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "controller.port").write_text(f"{self.controller_port}\n")
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.out.type = Console\n"
            "appender.out.name = STDOUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.out.filter.threshold.type = ThresholdFilter\n"
            "appender.out.filter.threshold.level = warn\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "rootLogger.appenderRef.out.ref = STDOUT\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = warn\n"
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = warn\n"
        )
        return log4j

    def _classpath(self) -> str:
        return f"{self.jars_dir}/*"

    def _prepare(self) -> None:
        if kafka_version(self.jars_dir) is None:
            ensure_kafka_jars(self.jars_dir)
        java = find_java()
        self._write_configs()
        if (self.log_dir / "meta.properties").exists():
            return  # formatted before: a restart keeps the data
        cmd = [
            java,
            "-cp",
            self._classpath(),
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _kafka_cluster_id(),
            "-c",
            str(self.properties_file),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if res.returncode != 0:
            raise LauncherError(f"formatting Kafka storage failed:\n{(res.stdout + res.stderr)[-3000:]}")

    def _command(self) -> list[str]:
        return [
            find_java(),
            f"-Xms{self.heap[0]}",
            f"-Xmx{self.heap[1]}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def _wait_ready(self, deadline: float) -> None:
        wait_for_kafka("127.0.0.1", self.port, deadline, alive=lambda: self.running)

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)
        log.info(
            "Apache Kafka %s broker on %s started in %.1f s (pid %s, data %s)",
            self.version,
            self.bootstrap,
            self.start_seconds or 0.0,
            self.pid,
            self.data_dir,
        )


class RedisServer(_ManagedProcess):
    """``redis-server`` with AOF persistence (appendfsync everysec), no RDB snapshots."""

    name = "redis"

    def __init__(
        self, port: int | None = None, data_dir: Path | str = RUN_DIR / "redis", detached: bool = False
    ) -> None:
        super().__init__(data_dir, detached)
        self.port = port or free_port()
        self.binary: str | None = None

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

    def _command(self) -> list[str]:
        assert self.binary is not None
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", "",
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


# --------------------------------------------------------------------------------------------
# command line: up / down / status / ensure
# --------------------------------------------------------------------------------------------


def _pidfile(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _read_pidfile(name: str, marker: str) -> int | None:
    """The pid in the pidfile if that process still runs and is the expected program."""
    path = _pidfile(name)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if _pid_alive(pid) and marker in _pid_cmdline(pid):
        return pid
    return None


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)


_MARKERS = {"kafka": "kafka.Kafka", "redis": "redis-server"}


def _docker_compose(*args: str) -> int:
    cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), *args]
    print("$", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def cmd_up(kafka_port: int, redis_port: int, local: bool) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    wanted = []
    for name, port in (("kafka", kafka_port), ("redis", redis_port)):
        if port_answers(port):
            print(f"{name}: something already answers on 127.0.0.1:{port}, leaving it alone")
        else:
            wanted.append(name)
    if not wanted:
        return 0
    if not local and docker_engine_available():
        if (kafka_port, redis_port) != (9092, 6379):
            print("docker compose publishes the fixed ports 9092/6379; use --local for other ports")
            return 2
        return _docker_compose("up", "-d", "--wait", *wanted)
    services: list[_ManagedProcess] = []
    if "kafka" in wanted:
        services.append(KafkaBroker(port=kafka_port, data_dir=RUN_DIR / f"kafka-{kafka_port}", detached=True))
    if "redis" in wanted:
        services.append(RedisServer(port=redis_port, data_dir=RUN_DIR / f"redis-{redis_port}", detached=True))
    for svc in services:
        svc.start()
        _pidfile(svc.name).write_text(f"{svc.pid} {svc.port}\n")
        extra = (
            f" ({svc.bootstrap}, Kafka {svc.version})" if isinstance(svc, KafkaBroker) else f" ({svc.url})"
        )
        print(
            f"{svc.name}: started, pid {svc.pid}{extra} in {svc.start_seconds:.1f} s; logs in {svc.data_dir}"
        )
    return 0


def cmd_down(local: bool) -> int:
    for name, marker in _MARKERS.items():
        pid = _read_pidfile(name, marker)
        if pid is not None:
            print(f"{name}: stopping pid {pid}")
            _stop_pid(pid)
        _pidfile(name).unlink(missing_ok=True)
    if not local and docker_engine_available():
        return _docker_compose("down")
    return 0


def cmd_status(kafka_port: int, redis_port: int) -> int:
    for name, port in (("kafka", kafka_port), ("redis", redis_port)):
        pid = _read_pidfile(name, _MARKERS[name])
        owner = f"launcher pid {pid}" if pid else "not started by the launcher"
        answers = "answers" if port_answers(port) else "nothing listening"
        print(f"{name}: 127.0.0.1:{port} {answers} ({owner})")
    return 0


def cmd_ensure() -> int:
    redis = ensure_redis_server()
    jars = ensure_kafka_jars()
    find_java()
    print(f"redis-server: {redis}")
    print(f"kafka jars:   {jars} (Apache Kafka {kafka_version(jars)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "ensure"])
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--local", action="store_true", help="local processes even when Docker answers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "up":
            return cmd_up(args.kafka_port, args.redis_port, args.local)
        if args.command == "down":
            return cmd_down(args.local)
        if args.command == "status":
            return cmd_status(args.kafka_port, args.redis_port)
        return cmd_ensure()
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
