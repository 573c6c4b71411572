"""Apache Kafka, single node in KRaft mode, from Apache Kafka's own jars (no Docker).

The jars are resolved once from Maven Central into ``compose/.cache/kafka-jars``
(git-ignored); readiness is a Metadata request over the wire, so no client library is needed.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

from compose.managed import COMPOSE_DIR, RUN_DIR, LauncherError, ManagedProcess, free_port

log = logging.getLogger("compose.launcher")

KAFKA_POM = COMPOSE_DIR / "kafka" / "pom.xml"
KAFKA_JARS_DIR = COMPOSE_DIR / ".cache" / "kafka-jars"
KAFKA_JAR_GLOB = "kafka_2.13-*.jar"
_KAFKA_JAR_RE = re.compile(r"kafka_2\.13-(\d[\w.\-]*)\.jar$")


def _kafka_cluster_id() -> str:
    """Same shape as ``kafka.tools.StorageTool random-uuid`` (base64url of a UUID, no padding)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


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
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        return metadata_broker_count(sock)


def metadata_broker_count(sock: socket.socket) -> int:
    """Send a Metadata (v4) request on a connected socket (plain or TLS) and count live brokers."""
    client_id = b"compose-launcher"
    # header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
    # body v4: topics=null (-1), allow_auto_topic_creation=false
    body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", -1, 0)
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


class KafkaBroker(ManagedProcess):
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

    def _format_args(self) -> list[str]:
        """Extra ``StorageTool format`` arguments (a secured broker adds its SCRAM users)."""
        return []

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
            *self._format_args(),
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
