"""The services as Docker containers on free ports (testcontainers): what the tests start when a
Docker engine answers. testcontainers is a dev extra, imported when a container is made.

Kafka is apache/kafka in KRaft single-node mode, published on the same free port inside and
out: the official image is configured through KAFKA_* variables, and publishing port P as P
lets the advertised listener be simply ``127.0.0.1:P``.
"""

from __future__ import annotations

import time

from compose.kafka_broker import wait_for_kafka
from compose.managed import free_port

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7"


class KafkaContainer:
    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        self.port = free_port()
        self.container = DockerContainer(KAFKA_IMAGE).with_bind_ports(self.port, self.port)
        env = {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{self.port},CONTROLLER://localhost:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{self.port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "KAFKA_NUM_PARTITIONS": "1",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        }
        for key, value in env.items():
            self.container.with_env(key, value)
        self.version = KAFKA_IMAGE.rsplit(":", 1)[-1]
        self.start_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        t0 = time.monotonic()
        self.container.start()
        wait_for_kafka("127.0.0.1", self.port, time.monotonic() + 120)
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        self.container.stop()


class RedisContainer:
    def __init__(self) -> None:
        from testcontainers.community.redis import RedisContainer as _Redis

        self.container = _Redis(REDIS_IMAGE).with_command(
            "redis-server --appendonly yes --appendfsync everysec --save ''"
        )
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        host = self.container.get_container_host_ip()
        return f"redis://{host}:{self.container.get_exposed_port(6379)}/0"

    def start(self) -> None:
        t0 = time.monotonic()
        self.container.start()
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        self.container.stop()
