"""The session's secured Kafka and Redis (issue 26), started once and only when a test asks.

A pytest plugin (tests/conftest.py lists it in ``pytest_plugins``) with one session fixture,
``secure_services``, a ``SecureEnv``::

    bootstrap            "127.0.0.1:P"  SASL_SSL: SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN
    mtls_bootstrap       "127.0.0.1:Q"  SSL with a client certificate required; the certificate's
                                        CN is the principal (client_cert_file: CN=processor)
    mismatch_bootstrap   "127.0.0.1:R"  SASL_SSL whose certificate is for mismatch.invalid only:
                                        refused by a client that checks the hostname
    ca_file              the CA of every certificate above and of Redis (KAFKA_SSL_CA_FILE ...)
    untrusted_ca_file    a CA that signed none of them (the "untrusted certificate" case)
    client_cert_file, client_key_file    signed by ca_file, CN=processor
    kafka_password_files {"admin", "processor", "gateway", "processor-nowrite"} -> Path (the file
                         holds the password alone, no newline); kafka_password(user) reads one,
                         kafka_password_file(user) names one (also for users made by add_user)
    redis_url            "rediss://127.0.0.1:S/0" (TLS only: no plain port is open)
    redis_urls           {"processor", "gateway", "admin"} -> "rediss://<user>@127.0.0.1:S/0"
    redis_password_files {"processor", "gateway", "admin"} -> Path; redis_password(user)
    env(user, mechanism) the contract's settings for a component running as user (files only)
    topic_env(topics)    EVENTS_TOPIC ... GATEWAY_CONSUMER_GROUP for the names in a Topics
    aiokafka_args(user, mechanism="SCRAM-SHA-512", bootstrap=None, cafile=None)
                         keyword arguments for AIOKafka{Producer,Consumer,AdminClient}
    admin                SecureAdmin, the broker's super user (async):
                           await admin.create_topics(["a", "b"], partitions=4, configs=None)
                           topics = await admin.contract_topics(partitions=4)  # fresh names
                           await admin.grant(processor_acls(topics=topics))    # waits until applied
                           await admin.revoke([...])                           # waits until gone
                           name = await admin.add_user("rotating")  # a runtime SCRAM user
                           await admin.rotate_password(name)        # new password, file updated
    services             compose.secure_services.SecureServices: .broker / .redis handles
                         (restart, kill) and .pki

A second session fixture, ``secure_redis_cluster`` (started only when a test asks: six nodes),
is a TLS Redis Cluster (compose.redis_cluster_secure.SecureRedisCluster: 3 masters + 3
replicas, TLS on clients, bus and replication) with the same CA and the same Redis users and
password files as ``secure_services``; ``.url_for(user)`` is "rediss://<user>@127.0.0.1:P/0"
(REDIS_CLUSTER=true), ``.ports``, ``.kill_node(port)`` ... as for the plain cluster.

The broker knows the users processor, gateway and processor-nowrite, but grants them nothing
until a test does: ACLs are per test, on the test's own topics (``contract_topics``), so tests
never share state. ACL sets: compose/kafka_acls.py (processor_acls, gateway_acls, without,
as_principal) and compose.secure_services.nowrite_acls. Redis users: compose/redis_acls.py.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.helpers import create_ssl_context

from compose.kafka_acls import AclBinding, Topics
from compose.redis_cluster_secure import SecureRedisCluster
from compose.secure_services import (
    KAFKA_USERS,
    REDIS_USERS,
    TOPIC_CONFIGS,
    SecureServices,
    start_secure_cluster,
    start_secure_services,
)


class SecureAdmin:
    """The super user's topics, ACLs and users, awaitable (the blocking client runs in a thread)."""

    def __init__(self, services: SecureServices) -> None:
        self._services = services
        self._admin = services.admin()

    async def add_user(self, prefix: str = "user") -> str:
        """A fresh SCRAM user (uuid-named, no ACL, no PLAIN); its password file is
        ``kafka_password_file(name)``. Returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        await asyncio.to_thread(self._services.add_kafka_user, name)
        return name

    async def rotate_password(self, user: str) -> None:
        """A new password for a user made by ``add_user``: returns once the broker refuses the old
        one and takes the new one, which its password file then holds."""
        await asyncio.to_thread(self._services.set_kafka_password, user)

    async def create_topics(
        self,
        names: Iterable[str],
        partitions: int = 1,
        configs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]:
        names = list(names)
        await asyncio.to_thread(self._admin.create_topics, dict.fromkeys(names, partitions), configs)
        return names

    async def contract_topics(self, partitions: int = 4, *, prefix: str = "sec") -> Topics:
        """Fresh, uuid-named topics for the contract's roles, created with the configs the processor
        gives them (the policies topic compacted), and fresh group names."""
        tag = uuid.uuid4().hex[:10]
        topics = Topics(
            events=f"{prefix}-{tag}.events",
            verdicts=f"{prefix}-{tag}.verdicts",
            dlq=f"{prefix}-{tag}.events.dlq",
            policies=f"{prefix}-{tag}.policies",
            replies=f"{prefix}-{tag}.replies",
            processor_group=f"{prefix}-{tag}-processor",
            gateway_group=f"{prefix}-{tag}-gateway",
        )
        await self.create_topics(
            [topics.events, topics.verdicts, topics.dlq, topics.policies, topics.replies],
            partitions,
            {topics.policies: TOPIC_CONFIGS["policies"], topics.events: TOPIC_CONFIGS["events"]},
        )
        return topics

    async def grant(self, bindings: Iterable[AclBinding]) -> None:
        await asyncio.to_thread(self._admin.grant, list(bindings))

    async def revoke(self, bindings: Iterable[AclBinding]) -> None:
        await asyncio.to_thread(self._admin.revoke, list(bindings))


@dataclass
class SecureEnv:
    """What the ``secure_services`` fixture yields (the module docstring lists every field)."""

    services: SecureServices
    admin: SecureAdmin

    @property
    def bootstrap(self) -> str:
        return self.services.bootstrap

    @property
    def mtls_bootstrap(self) -> str:
        return self.services.mtls_bootstrap

    @property
    def mismatch_bootstrap(self) -> str:
        return self.services.mismatch_bootstrap

    @property
    def ca_file(self) -> Path:
        return self.services.pki.ca_file

    @property
    def untrusted_ca_file(self) -> Path:
        return self.services.pki.untrusted_ca_file

    @property
    def client_cert_file(self) -> Path:
        return self.services.pki.client_cert

    @property
    def client_key_file(self) -> Path:
        return self.services.pki.client_key

    @property
    def kafka_password_files(self) -> dict[str, Path]:
        return {u: self.services.kafka_password_file(u) for u in KAFKA_USERS}

    def kafka_password(self, user: str) -> str:
        return self.services.kafka_password(user)

    def kafka_password_file(self, user: str) -> Path:
        return self.services.kafka_password_file(user)

    @property
    def redis_url(self) -> str:
        return self.services.redis_url

    @property
    def redis_urls(self) -> dict[str, str]:
        return {u: self.services.redis_url_for(u) for u in REDIS_USERS}

    @property
    def redis_password_files(self) -> dict[str, Path]:
        return {u: self.services.redis_password_file(u) for u in REDIS_USERS}

    def redis_password(self, user: str) -> str:
        return self.services.redis_password(user)

    def env(self, user: str = "processor", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        return self.services.env(user, mechanism)

    @staticmethod
    def topic_env(topics: Topics) -> dict[str, str]:
        """The settings that name ``topics`` (e.g. from ``admin.contract_topics``) for a processor
        and a gateway: EVENTS_TOPIC ... REPLY_TOPICS (a regular expression: the name escaped)."""
        return {
            "EVENTS_TOPIC": topics.events,
            "VERDICTS_TOPIC": topics.verdicts,
            "DLQ_TOPIC": topics.dlq,
            "POLICIES_TOPIC": topics.policies,
            "CONSUMER_GROUP": topics.processor_group,
            "REPLY_TOPICS": re.escape(topics.replies),
            "GATEWAY_REPLIES_TOPIC": topics.replies,
            "GATEWAY_CONSUMER_GROUP": topics.gateway_group,
        }

    def aiokafka_args(
        self,
        user: str,
        mechanism: str = "SCRAM-SHA-512",
        *,
        password: str | None = None,
        bootstrap: str | None = None,
        cafile: Path | None = None,
    ) -> dict[str, object]:
        """SASL_SSL keyword arguments for an aiokafka client as ``user`` (``password`` overrides)."""
        return {
            "bootstrap_servers": bootstrap or self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": self.kafka_password(user) if password is None else password,
            "ssl_context": create_ssl_context(cafile=str(cafile or self.ca_file)),
        }


def _say(config: pytest.Config, message: str) -> None:
    """A line on the terminal even while output is captured (as tests/conftest.py's ``say``)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(message)


@pytest.fixture(scope="session")
def secure_services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureEnv]:
    """The session's secured broker and Redis (see the module docstring), stopped at the end."""
    with start_secure_services(tmp_path_factory.mktemp("secure-services"), timeout=180) as svc:
        assert svc.broker is not None and svc.redis is not None
        _say(
            request.config,
            f"secure services: SASL_SSL Kafka at {svc.bootstrap} (mTLS {svc.mtls_bootstrap}) started "
            f"in {svc.broker.start_seconds:.1f} s, TLS Redis at {svc.redis_url} "
            f"in {svc.redis.start_seconds:.2f} s",
        )
        yield SecureEnv(svc, SecureAdmin(svc))


@pytest.fixture(scope="session")
def secure_redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, secure_services: SecureEnv
) -> Iterator[SecureRedisCluster]:
    """The session's TLS Redis Cluster (see the module docstring), stopped at the end."""
    cluster = start_secure_cluster(secure_services.services, tmp_path_factory.mktemp("secure-cluster"))
    try:
        _say(
            request.config,
            f"secure services: TLS Redis Cluster from {cluster.url} in {cluster.start_seconds:.1f} s",
        )
        yield cluster
    finally:
        cluster.stop()
