"""Settings from the environment (and `.env`), validated once at start.

One frozen object, built by `load_settings()` and passed down; nothing else reads
os.environ. Names follow the contract (KAFKA_BOOTSTRAP_SERVERS, MAX_STREAMS, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processor.partitioning import EventPartitioner, check_partitioner

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class ConnectionSettings(BaseSettings):
    """Where Kafka and Redis are and how to reach them: TLS, SASL, ACL users (contract: Secured
    Kafka and Redis). Read by every component; processor/connections.py turns them into clients.

    A password never stays in REDIS_URL: it moves into `redis_password` (a SecretStr), so the
    URL can be logged and a settings dump or repr shows no secret. A validation error shows no
    input either (`hide_input_in_errors`): a whole-model check's input is every setting, secrets
    and the raw REDIS_URL included, and some callers print the error as it is.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True)

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: KafkaProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # Read again at each new connection's client: a rotated file is picked up without a restart.
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_ca_file: Path | None = None  # PEM; the system's trust store when unset
    kafka_ssl_cert_file: Path | None = None  # client certificate (mutual TLS), with its key
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_check_hostname: bool = True

    redis_url: str = "redis://localhost:6379/0"
    # REDIS_URL names one node of a Redis Cluster: use a cluster client (contract).
    redis_cluster: bool = False
    # The password of REDIS_URL (taken out of it) or REDIS_PASSWORD_FILE's.
    redis_password: SecretStr | None = Field(None, repr=False)
    redis_password_file: Path | None = None
    redis_ssl_ca_file: Path | None = None
    redis_ssl_cert_file: Path | None = None
    redis_ssl_key_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_redis_url(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        key = next((k for k in data if isinstance(k, str) and k.lower() == "redis_url"), None)
        url = data.get(key) if key is not None else None
        if not isinstance(url, str):
            return data
        stripped, password = split_redis_password(url)
        if password is None:
            return data
        if any(isinstance(k, str) and k.lower() == "redis_password" and data[k] for k in data):
            raise ValueError("REDIS_URL carries a password and REDIS_PASSWORD is set too: give it once")
        return {**data, key: stripped, "redis_password": password}

    @model_validator(mode="after")
    def _check_kafka_security(self) -> ConnectionSettings:
        protocol, sasl = self.kafka_security_protocol, self.kafka_security_protocol.startswith("SASL_")
        if sasl:
            if self.kafka_sasl_mechanism is None:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM "
                    "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )
            if not self.kafka_sasl_username:
                raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME")
            if self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_PASSWORD or "
                    "KAFKA_SASL_PASSWORD_FILE"
                )
        else:
            given = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                    ("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL: "
                    "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
                )
        if self.kafka_sasl_password is not None and self.kafka_sasl_password_file is not None:
            raise ValueError("KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set: give one")
        tls = protocol in ("SSL", "SASL_SSL")
        if not tls:
            given = [
                name
                for name, value in (
                    ("KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
                    ("KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
                    ("KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                    "set KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
                )
        _check_pair("KAFKA_SSL", self.kafka_ssl_cert_file, self.kafka_ssl_key_file)
        _check_files(
            ("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file),
            ("KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
            ("KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
            ("KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
        )
        return self

    @model_validator(mode="after")
    def _check_redis_security(self) -> ConnectionSettings:
        if self.redis_password is not None and self.redis_password_file is not None:
            raise ValueError("REDIS_URL carries a password and REDIS_PASSWORD_FILE is set too: give one")
        tls_files = [
            name
            for name, value in (
                ("REDIS_SSL_CA_FILE", self.redis_ssl_ca_file),
                ("REDIS_SSL_CERT_FILE", self.redis_ssl_cert_file),
                ("REDIS_SSL_KEY_FILE", self.redis_ssl_key_file),
            )
            if value is not None
        ]
        if tls_files and not self.redis_url.startswith("rediss://"):
            raise ValueError(
                f"{', '.join(tls_files)} set but REDIS_URL does not use TLS: write it rediss://..."
            )
        _check_pair("REDIS_SSL", self.redis_ssl_cert_file, self.redis_ssl_key_file)
        _check_files(
            ("REDIS_PASSWORD_FILE", self.redis_password_file),
            ("REDIS_SSL_CA_FILE", self.redis_ssl_ca_file),
            ("REDIS_SSL_CERT_FILE", self.redis_ssl_cert_file),
            ("REDIS_SSL_KEY_FILE", self.redis_ssl_key_file),
        )
        return self


def split_redis_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None); the user name stays in the URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{user}@" if user else "") + host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def _check_pair(prefix: str, cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        given, missing = ("CERT", "KEY") if key is None else ("KEY", "CERT")
        raise ValueError(
            f"{prefix}_{given}_FILE is set without {prefix}_{missing}_FILE: a client certificate "
            "needs its private key (both PEM)"
        )


def _check_files(*named: tuple[str, Path | None]) -> None:
    for name, path in named:
        if path is not None and not path.is_file():
            raise ValueError(f"{name} {path} is not a readable file")


class CommonSettings(ConnectionSettings):
    """What the processor and the simulator share: where the services are, and the rules."""

    events_topic: str = Field("playback.events", min_length=1)
    verdicts_topic: str = Field("playback.verdicts", min_length=1)
    dlq_topic: str = Field("playback.events.dlq", min_length=1)
    policies_topic: str = Field("playback.policies", min_length=1)
    consumer_group: str = Field("concurrency-processor", min_length=1)

    max_streams: int = Field(3, ge=1, le=1000)
    lease_ttl_seconds: int = Field(90, ge=1)
    overflow_policy: Literal["reject", "evict_oldest"] = "reject"
    # How many recent eventIds per user are remembered to absorb upstream duplicates.
    event_id_memory: int = Field(16, ge=1, le=1000)
    topic_partitions: int = Field(12, ge=1)
    # The hash that puts a userId key in its events partition (contract: Player event): murmur2
    # (Java client, aiokafka), crc32 (librdkafka's default) or fnv1a (Sarama). The processor
    # checks it, the gateway and the simulator produce with it (processor/partitioning.py).
    event_partitioner: EventPartitioner = "murmur2"

    @field_validator("event_partitioner", mode="before")
    @classmethod
    def _check_event_partitioner(cls, value: object) -> object:
        # Before the Literal check, so a wrong value gets the error that says who uses which hash.
        return check_partitioner(value) if isinstance(value, str) else value

    @property
    def lease_ttl_ms(self) -> int:
        return self.lease_ttl_seconds * 1000


class Settings(CommonSettings):
    """The processor's settings."""

    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "RS256", "EdDSA"] = "HS256"
    jwt_private_key_file: Path | None = None
    # Without JWT_SECRET the processor refuses to start unless this is set (development only).
    allow_insecure_dev_secret: bool = False

    topic_replication_factor: int = Field(1, ge=1)
    http_port: int = Field(8080, ge=0, le=65535)

    # Processor tuning, beyond the contract.
    batch_max_records: int = Field(4000, ge=1)
    # The cycle's latency budget (processor/cycle.py): while records flow, a fetch waits up to
    # GATHER_MS for more, so a cycle's fixed costs are shared; 0 turns gathering off.
    gather_ms: int = Field(50, ge=0, le=1000)
    # ... or until this many bytes of records have arrived (fetch.min.bytes): at high rates a
    # cycle is cut by size, so the wait shrinks as the rate grows.
    gather_bytes: int = Field(32 * 1024, ge=1)
    # At most one offset commit in flight, and at most one started per interval: the committed
    # offsets trail the verdicts by at most this plus a round trip.
    commit_interval_ms: int = Field(200, ge=0, le=60_000)
    fetch_timeout_ms: int = Field(1000, ge=1)
    # How often the consumer lag of every owned partition is refreshed (lag.py): a paused one
    # costs one ListOffsets request per refresh, the others nothing.
    lag_interval_ms: int = Field(5000, ge=100, le=300_000)
    # The idle long poll: the broker holds a fetch that finds nothing this long (short polls
    # cost CPU when idle); the first record that arrives is answered at once.
    fetch_max_wait_ms: int = Field(500, ge=1)
    idle_user_ttl_seconds: int = Field(86_400, ge=60)
    # Expiry-index entries one script call may work through (0: no bound). A partition silent
    # for longer than the TTL expires all its leases at its next record: unbounded, 50,000 of
    # them held that Redis for seconds; bounded, the batch is decided in several calls.
    max_expiries_per_call: int = Field(2000, ge=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    # Accept an empty Redis for partitions that have committed offsets (after state loss).
    accept_state_loss: bool = False
    # Run on a Redis whose maxmemory-policy may evict keys (an evicted user key frees its slots).
    allow_evicting_redis: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The only topics a `reply.topic` header may name (a regular expression, whole name): a
    # writer of the events topic must not make the processor write to any other topic (the
    # policies topic above all). The processor's own topics and `__*` are refused whatever it says.
    reply_topics: str = Field(r"playback\.replies", min_length=1)
    # A record must sit in the partition EVENT_PARTITIONER gives its key: one user's records on
    # two partitions would keep two copies of its limit. Turn this off only if every user keeps
    # one partition by some other rule than the three hashes.
    check_event_partition: bool = True

    @model_validator(mode="after")
    def _check_reply_topics(self) -> Settings:
        try:
            re.compile(self.reply_topics)
        except re.error as exc:
            raise ValueError(f"REPLY_TOPICS is not a regular expression: {exc}") from None
        return self

    @model_validator(mode="after")
    def _check_signing(self) -> Settings:
        if self.jwt_algorithm == "HS256":
            if self.jwt_secret is None and not self.allow_insecure_dev_secret:
                raise ValueError(
                    "JWT_SECRET is not set: set it to a long random string, or set "
                    "ALLOW_INSECURE_DEV_SECRET=true to run with a fixed development secret"
                )
            if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value().encode()) < 32:
                raise ValueError("JWT_SECRET must be at least 32 bytes (RFC 7518 for HS256)")
        elif self.jwt_private_key_file is None:
            raise ValueError(
                f"JWT_ALGORITHM={self.jwt_algorithm} needs JWT_PRIVATE_KEY_FILE (a PEM private key)"
            )
        elif not self.jwt_private_key_file.is_file():
            raise ValueError(f"JWT_PRIVATE_KEY_FILE {self.jwt_private_key_file} is not a readable file")
        return self

    @model_validator(mode="after")
    def _check_idle_user_ttl(self) -> Settings:
        # A user's key is rewritten with this TTL (Redis wall clock) at each of their events; its
        # leases live LEASE_TTL in event time. The key of a quiet user who heartbeats in time
        # survives as long as the processor's lag grows by less than (factor - 1) lease TTLs
        # between two of their events. 4 leaves 3 TTLs (4.5 min by default) for restarts,
        # rebalances and lag spikes; below it a short backlog would silently free slots.
        least = IDLE_TTL_LEASE_FACTOR * self.lease_ttl_seconds
        if self.idle_user_ttl_seconds < least:
            raise ValueError(
                f"IDLE_USER_TTL_SECONDS={self.idle_user_ttl_seconds} is shorter than "
                f"{IDLE_TTL_LEASE_FACTOR} x LEASE_TTL_SECONDS ({IDLE_TTL_LEASE_FACTOR} x "
                f"{self.lease_ttl_seconds} = {least}): a quiet user's Redis key could expire while "
                f"their leases are still active, silently freeing their slots. Set "
                f"IDLE_USER_TTL_SECONDS to at least {least} (default 86400), or lower LEASE_TTL_SECONDS"
            )
        return self


# The idle user key must outlive this many lease TTLs (see Settings._check_idle_user_ttl).
IDLE_TTL_LEASE_FACTOR = 4

DEV_SECRET = "insecure-development-secret-do-not-use"


class SettingsError(RuntimeError):
    pass


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"  {where}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
