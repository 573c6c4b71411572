"""Shared fixtures: real Kafka and Redis for the whole session, fresh topics per test.

Where the services come from, first match wins:

1. ``TEST_KAFKA_BOOTSTRAP`` / ``TEST_REDIS_URL``: services someone already runs (used as is);
2. a Docker engine that answers: testcontainers (apache/kafka:4.1.1, redis:7);
3. otherwise local processes: a Kafka broker from the cached Apache Kafka jars and
   ``redis-server`` from PATH, on free ports, data in a tmp dir.

2 and 3 (and the Redis Cluster, always local processes) come from the launcher's one
``start_services`` (compose/services.py), as for the demo, the bench and ``up``.

Tests never touch localhost:9092 / localhost:6379 unless told to through the variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from compose.containers import KAFKA_IMAGE, REDIS_IMAGE, KafkaContainer, RedisContainer
from compose.launcher import (
    KAFKA_JARS_DIR,
    KafkaBroker,
    RedisCluster,
    RedisServer,
    Services,
    docker_engine_available,
    kafka_version,
    start_services,
)
from tests.redis_targets import RedisTarget

log = logging.getLogger("tests")

# the session's secured Kafka and Redis (issue 26), started only when a test asks for them
pytest_plugins = ["tests.secure_services"]


TESTS_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# reporting and markers
# --------------------------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if os.environ.get("TEST_KAFKA_BOOTSTRAP"):
        lines.append(f"kafka: TEST_KAFKA_BOOTSTRAP={os.environ['TEST_KAFKA_BOOTSTRAP']}")
    else:
        version = kafka_version() or "not resolved yet"
        lines.append(
            f"kafka: Apache Kafka {version} (launcher jars in {KAFKA_JARS_DIR}; {KAFKA_IMAGE} with Docker)"
        )
    if os.environ.get("TEST_REDIS_URL"):
        lines.append(f"redis: TEST_REDIS_URL={os.environ['TEST_REDIS_URL']}")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            parts = Path(item.path).resolve().relative_to(TESTS_DIR).parts
        except ValueError:
            continue
        if parts and parts[0] in ("unit", "integration", "chaos"):
            item.add_marker(getattr(pytest.mark, parts[0]))


def say(config: pytest.Config, message: str) -> None:
    """Write a line to the terminal even while output is captured (shows up in CI logs)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    log.info(message)
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(message)
    else:
        reporter.write_line(message)


# --------------------------------------------------------------------------------------------
# session services
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_available() -> bool:
    return docker_engine_available(timeout=10)


def _backend(docker_available: bool) -> tuple[str, str, str]:
    """The backend of the session's services, and how to name its Kafka and Redis."""
    if docker_available:
        return "containers", f"container {KAFKA_IMAGE}", f"container {REDIS_IMAGE}"
    return "local", "local process (compose/launcher.py)", "local redis-server"


@pytest.fixture(scope="session")
def kafka_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, docker_available: bool
) -> Iterator[KafkaBroker | KafkaContainer | None]:
    """The session's Kafka broker handle, or None when TEST_KAFKA_BOOTSTRAP names one."""
    given = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if given:
        say(request.config, f"kafka: using TEST_KAFKA_BOOTSTRAP={given}")
        yield None
        return
    backend, how, _ = _backend(docker_available)
    with start_services(redis=False, data_dir=tmp_path_factory.mktemp("kafka"), backend=backend) as svc:
        broker = svc.broker
        assert broker is not None
        say(
            request.config,
            f"kafka: Apache Kafka {broker.version} broker at {broker.bootstrap}, {how}, "
            f"started in {broker.start_seconds:.1f} s",
        )
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | KafkaContainer | None) -> str:
    if kafka_broker is None:
        return os.environ["TEST_KAFKA_BOOTSTRAP"]
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, docker_available: bool
) -> Iterator[RedisServer | RedisContainer | None]:
    """The session's Redis handle, or None when TEST_REDIS_URL names one."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        say(request.config, f"redis: using TEST_REDIS_URL={given}")
        yield None
        return
    backend, _, how = _backend(docker_available)
    with start_services(kafka=False, data_dir=tmp_path_factory.mktemp("redis"), backend=backend) as svc:
        server = svc.redis
        assert server is not None
        say(request.config, f"redis: {server.url}, {how}, started in {server.start_seconds:.2f} s")
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | RedisContainer | None) -> str:
    if redis_server is None:
        return os.environ["TEST_REDIS_URL"]
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster | None]:
    """The session's Redis Cluster (3 masters + 3 replicas, local processes, free ports), started
    on first use; None when TEST_REDIS_CLUSTER_URL names one."""
    given = os.environ.get("TEST_REDIS_CLUSTER_URL")
    if given:
        say(request.config, f"redis cluster: using TEST_REDIS_CLUSTER_URL={given}")
        yield None
        return
    data_dir = tmp_path_factory.mktemp("redis-cluster")
    with start_services(kafka=False, redis=False, cluster=True, data_dir=data_dir) as svc:
        cluster = svc.cluster
        assert cluster is not None
        say(
            request.config,
            f"redis cluster: 3 masters + 3 replicas from {cluster.url}, "
            f"started in {cluster.start_seconds:.1f} s",
        )
        yield cluster


@pytest.fixture
def redis_target(request: pytest.FixtureRequest, redis_url: str) -> RedisTarget:
    """The test's Redis: the single server, or (parametrised "cluster", see tests/redis_targets.py)
    the session's Redis Cluster."""
    if getattr(request, "param", "single") == "single":
        return RedisTarget("single", redis_url, False)
    cluster = request.getfixturevalue("redis_cluster")
    url = os.environ["TEST_REDIS_CLUSTER_URL"] if cluster is None else cluster.url
    return RedisTarget("cluster", url, True)


# --------------------------------------------------------------------------------------------
# per-test helpers
# --------------------------------------------------------------------------------------------


class TopicFactory:
    """Makes uniquely named topics: ``await topic_factory(partitions=4)`` -> name.

    ``await topic_factory.many(3, partitions=12)`` -> names. Deleted after the test.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.created: list[str] = []
        self._admin: AIOKafkaAdminClient | None = None

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30000)
            await admin.start()
            self._admin = admin
        return self._admin

    async def __call__(
        self, partitions: int = 1, *, prefix: str = "test", configs: dict[str, str] | None = None
    ) -> str:
        return (await self.many(1, partitions, prefix=prefix, configs=configs))[0]

    async def many(
        self, count: int, partitions: int = 1, *, prefix: str = "test", configs: dict[str, str] | None = None
    ) -> list[str]:
        names = [f"{prefix}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        admin = await self._client()
        resp = await admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})
                for n in names
            ]
        )
        errors = [(name, code, rest) for name, code, *rest in resp.topic_errors if code != 0]
        if errors:
            raise RuntimeError(f"creating topics failed: {errors}")
        self.created.extend(names)
        await self._wait_for_leaders(names, partitions)
        return names

    async def _wait_for_leaders(self, names: list[str], partitions: int, within: float = 30.0) -> None:
        admin = await self._client()
        deadline = asyncio.get_running_loop().time() + within
        while True:
            described = await admin.describe_topics(names)
            ready = all(
                t.get("error_code", 0) == 0
                and len(t.get("partitions", [])) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            )
            if ready:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics {names} have no leaders after {within} s: {described}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._admin is None:
            return
        try:
            if self.created:
                await self._admin.delete_topics(self.created)
        except KafkaError as exc:
            log.warning("could not delete test topics %s: %r", self.created, exc)
        finally:
            await self._admin.close()
            self._admin = None


@pytest.fixture
async def topic_factory(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    factory = TopicFactory(kafka_bootstrap)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def redis_client(redis_target: RedisTarget) -> AsyncIterator[aioredis.Redis]:
    """A redis.asyncio client on the test's Redis (redis_target). Shared server: use unique key
    prefixes."""
    client = aioredis.from_url(redis_target.url) if not redis_target.cluster else redis_target.connect()
    try:
        yield client
    finally:
        await client.aclose()


class IsolatedServices:
    """Private Kafka brokers / Redis servers / Redis Clusters for tests that kill or restart them.

    ``broker = await isolated_services.kafka()``, ``redis = await isolated_services.redis()``,
    ``cluster = await isolated_services.cluster()``; then ``await broker.akill()``,
    ``await broker.arestart()``, ``await redis.arestart(wipe_data=True)``,
    ``cluster.kill_node(port)``... Everything is stopped after the test. Always local
    processes (launcher), even with Docker, since tests signal their pids.
    """

    def __init__(self, config: pytest.Config, base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self.started: list[Services] = []

    async def _start(self, **wanted: bool) -> Services:
        data_dir = self.base_dir / f"services-{len(self.started)}"
        svc = await asyncio.to_thread(start_services, data_dir=data_dir, **wanted)
        self.started.append(svc)
        return svc

    async def kafka(self) -> KafkaBroker:
        broker = (await self._start(kafka=True, redis=False)).broker
        assert isinstance(broker, KafkaBroker)
        say(
            self.config,
            f"isolated kafka {broker.version} at {broker.bootstrap} started in {broker.start_seconds:.1f} s",
        )
        return broker

    async def redis(self) -> RedisServer:
        server = (await self._start(kafka=False, redis=True)).redis
        assert isinstance(server, RedisServer)
        return server

    async def cluster(self) -> RedisCluster:
        cluster = (await self._start(kafka=False, redis=False, cluster=True)).cluster
        assert cluster is not None
        return cluster

    def stop_all(self) -> None:
        for svc in reversed(self.started):
            with contextlib.suppress(OSError):
                svc.stop()
        self.started.clear()


@pytest.fixture
def isolated_services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IsolatedServices]:
    services = IsolatedServices(request.config, tmp_path)
    try:
        yield services
    finally:
        services.stop_all()
