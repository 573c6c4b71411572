"""The one place where Kafka and Redis clients are made, with the connection settings' TLS and SASL.

Every AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient the project creates comes from
a `KafkaAccess`, every Redis or RedisCluster client from a `RedisAccess` (a unit test greps the
source tree for constructors called anywhere else). Both are built from the settings
(`kafka_access`, `redis_access`); a bare bootstrap string or URL (`KafkaAccess.of`,
`RedisAccess.of`) means the unsecured local services of the tests and the benchmark.

Passwords are read when a client is made, from the setting or its file: a client made after a
rotation (e.g. the publisher's new producer after a failure) takes the new one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr
from redis.asyncio import Redis, RedisCluster

from processor.config import ConnectionSettings, split_redis_password
from processor.redis_client import connect


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """The secret itself, or the first line of its file (a trailing newline is not part of it)."""
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    lines = path.read_text().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class KafkaAccess:
    """How to reach Kafka: the bootstrap servers and the security the settings ask for."""

    bootstrap: str
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @classmethod
    def of(cls, kafka: KafkaAccess | str) -> KafkaAccess:
        """`kafka` itself, or PLAINTEXT at a bare bootstrap string (the local test services)."""
        return kafka if isinstance(kafka, KafkaAccess) else cls(kafka)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def principal(self) -> str:
        """Who this client is to the broker, for messages (never the password)."""
        if self.sasl:
            return f"User:{self.username}"
        if self.cert_file is not None:
            return f"the client certificate {self.cert_file}"
        return "User:ANONYMOUS"

    def ssl_context(self) -> ssl.SSLContext:
        context = create_ssl_context(
            cafile=str(self.ca_file) if self.ca_file else None,
            certfile=str(self.cert_file) if self.cert_file else None,
            keyfile=str(self.key_file) if self.key_file else None,
        )
        if not self.check_hostname:
            context.check_hostname = False  # still verified against the CA
        return context

    def client_kwargs(self) -> dict:
        """The security arguments every aiokafka client takes (none for PLAINTEXT)."""
        kwargs: dict = {"bootstrap_servers": self.bootstrap}
        if self.protocol == "PLAINTEXT":
            return kwargs
        kwargs["security_protocol"] = self.protocol
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = read_secret(self.password, self.password_file)
        return kwargs

    def producer(self, **kwargs) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_kwargs(), **kwargs)

    def consumer(self, *topics: str, **kwargs) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_kwargs(), **kwargs)

    def admin(self, **kwargs) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_kwargs(), **kwargs)


def kafka_access(settings: ConnectionSettings, bootstrap: str | None = None) -> KafkaAccess:
    """The settings' Kafka access (at `bootstrap` instead of KAFKA_BOOTSTRAP_SERVERS when given)."""
    return KafkaAccess(
        bootstrap or settings.kafka_bootstrap_servers,
        settings.kafka_security_protocol,
        settings.kafka_sasl_mechanism,
        settings.kafka_sasl_username,
        settings.kafka_sasl_password,
        settings.kafka_sasl_password_file,
        settings.kafka_ssl_ca_file,
        settings.kafka_ssl_cert_file,
        settings.kafka_ssl_key_file,
        settings.kafka_ssl_check_hostname,
    )


@dataclass(frozen=True)
class RedisAccess:
    """How to reach Redis (one server or a Redis Cluster): URL, ACL user's password, TLS files.

    The URL never holds the password (the settings take it out), so it can be shown.
    """

    url: str
    cluster: bool = False
    password: SecretStr | None = field(default=None, repr=False)
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def of(cls, redis: RedisAccess | str, cluster: bool = False) -> RedisAccess:
        """`redis` itself, or a bare URL as given (the local test services)."""
        return redis if isinstance(redis, RedisAccess) else cls(redis, cluster)

    @property
    def user(self) -> str:
        return urlsplit(self.url).username or "default"

    def client_kwargs(self) -> dict:
        kwargs: dict = {}
        password = read_secret(self.password, self.password_file)
        if password is not None:
            kwargs["password"] = password
        if self.url.startswith("rediss://"):
            if self.ca_file is not None:
                kwargs["ssl_ca_certs"] = str(self.ca_file)
            if self.cert_file is not None:
                kwargs["ssl_certfile"] = str(self.cert_file)
                kwargs["ssl_keyfile"] = str(self.key_file)
        return kwargs

    def client(self, **kwargs) -> Redis | RedisCluster:
        """A client (a cluster client with REDIS_CLUSTER: every node over the same TLS)."""
        return connect(self.url, self.cluster, **self.client_kwargs(), **kwargs)


def redis_access(settings: ConnectionSettings, url: str | None = None) -> RedisAccess:
    """The settings' Redis access (at `url` instead of REDIS_URL when given)."""
    password = settings.redis_password
    if url is not None:
        url, in_url = split_redis_password(url)
        password = SecretStr(in_url) if in_url is not None else password
    return RedisAccess(
        url or settings.redis_url,
        settings.redis_cluster,
        password,
        settings.redis_password_file,
        settings.redis_ssl_ca_file,
        settings.redis_ssl_cert_file,
        settings.redis_ssl_key_file,
    )
