"""The secured local services in one call: a throwaway CA, a SASL_SSL Kafka broker with ACLs and a
TLS-only Redis with ACL users, for ``python -m compose.launcher up --secure`` and the tests::

    with start_secure_services(data_dir) as sec:
        sec.bootstrap, sec.mtls_bootstrap, sec.mismatch_bootstrap   # Kafka listeners
        sec.redis_url_for("processor")                              # rediss://processor@127.0.0.1:P/0
        sec.kafka_password_file("processor"), sec.pki.ca_file       # what a client is given
        sec.admin().grant(processor_acls(...))                      # topics and ACLs, as admin

Layout of ``data_dir``: ``pki/`` (compose/certs.py), ``secrets/`` (one password a file, mode
0600: ``kafka-<user>.password``, ``redis-<user>.password``), ``kafka-secure/``, ``redis-secure/``.
Passwords are random per run and are never printed: callers point at the files.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compose.certs import Pki, make_pki
from compose.kafka_acls import AclBinding, Topics, as_principal, gateway_acls, processor_acls, without
from compose.kafka_admin import KafkaAdmin
from compose.kafka_secure import ADMIN, SecureKafkaBroker
from compose.managed import LauncherError
from compose.redis_acls import USER_RULES
from compose.redis_cluster_secure import SecureRedisCluster
from compose.redis_secure import SecureRedisServer

KAFKA_USERS = ("admin", "processor", "gateway", "processor-nowrite")
REDIS_USERS = tuple(USER_RULES)  # processor, gateway, admin
NOWRITE = "processor-nowrite"
# Like the processor's: compacted policies, events refusing timestamps a minute ahead.
TOPIC_CONFIGS = {
    "policies": {"cleanup.policy": "compact"},
    "events": {"message.timestamp.after.max.ms": "60000"},
}


def nowrite_acls(topics: Topics = Topics()) -> list[AclBinding]:  # noqa: B008 - frozen
    """``processor-nowrite``: the processor's set minus Write on the verdicts topic (missing-ACL case)."""
    principal = f"User:{NOWRITE}"
    return without(
        as_principal(processor_acls(topics=topics), principal),
        AclBinding(principal, "TOPIC", topics.verdicts, "WRITE"),
    )


def contract_acls(topics: Topics = Topics()) -> list[AclBinding]:  # noqa: B008 - frozen
    """What the launcher grants: the processor's and the gateway's sets, and ``nowrite_acls``."""
    return [*processor_acls(topics=topics), *gateway_acls(topics=topics), *nowrite_acls(topics)]


@dataclass
class SecureServices:
    """What ``start_secure_services`` started (handles are None for what was not asked for)."""

    folder: Path
    pki: Pki
    broker: SecureKafkaBroker | None = None
    redis: SecureRedisServer | None = None
    _stops: list[Callable[[], object]] = field(default_factory=list, repr=False)

    # -- Kafka --------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def mtls_bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.mtls_bootstrap

    @property
    def mismatch_bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.mismatch_bootstrap

    def kafka_password_file(self, user: str) -> Path:
        return self.folder / "secrets" / f"kafka-{user}.password"

    def kafka_password(self, user: str) -> str:
        return self.kafka_password_file(user).read_text()

    def add_kafka_user(self, name: str) -> Path:
        """A new SCRAM user (SCRAM-SHA-512 and -256, no PLAIN) made on the running broker, with
        a random password in its file; no ACL. Returns the password file."""
        self._check_runtime_user(name)
        return self.set_kafka_password(name)

    def set_kafka_password(self, name: str) -> Path:
        """A new random password for a user made by ``add_kafka_user`` (a rotation): the broker
        takes it, then the file holds it. The users made at start cannot: their PLAIN password
        is written in the broker's configuration."""
        self._check_runtime_user(name)
        password = secrets.token_hex(16)
        self.admin().set_scram_password(name, password)
        path = self.kafka_password_file(name)
        path.touch(mode=0o600)
        path.write_text(password)
        return path

    @staticmethod
    def _check_runtime_user(name: str) -> None:
        if name in KAFKA_USERS:
            raise LauncherError(f"{name} is made at start (its PLAIN password is fixed): add another user")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise LauncherError(f"Kafka user {name!r}: letters, digits, '-' and '_' only")

    def admin(self, mechanism: str = "SCRAM-SHA-512") -> KafkaAdmin:
        """The broker's super user (``admin``): create topics, grant and revoke ACLs (blocking)."""
        return KafkaAdmin(self.bootstrap, self.pki.ca_file, ADMIN, self.kafka_password(ADMIN), mechanism)

    # -- Redis --------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def redis_url_for(self, user: str) -> str:
        assert self.redis is not None
        return self.redis.url_for(user)

    def redis_password_file(self, user: str) -> Path:
        return self.folder / "secrets" / f"redis-{user}.password"

    def redis_password(self, user: str) -> str:
        return self.redis_password_file(user).read_text()

    # -- for users ------------------------------------------------------------------------
    def env(self, user: str = "processor", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The contract's settings for a component running as ``user``: no password, only files."""
        env = {}
        if self.broker is not None:
            env |= {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": mechanism,
                "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD_FILE": str(self.kafka_password_file(user)),
                "KAFKA_SSL_CA_FILE": str(self.pki.ca_file),
            }
        if self.redis is not None and user in REDIS_USERS:
            env |= {
                "REDIS_URL": self.redis_url_for(user),
                "REDIS_PASSWORD_FILE": str(self.redis_password_file(user)),
                "REDIS_SSL_CA_FILE": str(self.pki.ca_file),
            }
        return env

    def describe(self) -> dict[str, object]:
        """Addresses and file paths (never a password), as ``services.json`` holds them."""
        out: dict[str, object] = {
            "ca_file": str(self.pki.ca_file),
            "untrusted_ca_file": str(self.pki.untrusted_ca_file),
            "client_cert_file": str(self.pki.client_cert),
            "client_key_file": str(self.pki.client_key),
        }
        if self.broker is not None:
            out["kafka"] = {
                "bootstrap": self.bootstrap,
                "mtls_bootstrap": self.mtls_bootstrap,
                "mismatch_bootstrap": self.mismatch_bootstrap,
                "password_files": {u: str(self.kafka_password_file(u)) for u in KAFKA_USERS},
            }
        if self.redis is not None:
            out["redis"] = {
                "url": self.redis_url,
                "password_files": {u: str(self.redis_password_file(u)) for u in REDIS_USERS},
            }
        return out

    def write_env_files(self) -> dict[str, Path]:
        """``<user>.env`` (KEY=value lines of ``env``) for processor and gateway, and services.json."""
        (self.folder / "services.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        files = {}
        for user in ("processor", "gateway"):
            path = files[user] = self.folder / f"{user}.env"
            path.write_text("".join(f"{k}={v}\n" for k, v in self.env(user).items()))
        return files

    def stop(self) -> None:
        stops, self._stops = self._stops, []
        for stop in reversed(stops):
            with contextlib.suppress(OSError):
                stop()

    def __enter__(self) -> SecureServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_passwords(folder: Path, service: str, users: tuple[str, ...]) -> dict[str, str]:
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    passwords = {}
    for user in users:
        passwords[user] = secrets.token_hex(16)
        path = secrets_dir / f"{service}-{user}.password"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(passwords[user])  # no newline: the file is the password
    return passwords


# The name of the first version, which the secure-clients branch imports (bench/secured_services.py).
_write_passwords = write_passwords


def start_secure_services(
    data_dir: Path | str | None = None,
    *,
    kafka: bool = True,
    redis: bool = True,
    kafka_port: int | None = None,
    mtls_port: int | None = None,
    mismatch_port: int | None = None,
    redis_port: int | None = None,
    contract_topics: Topics | None = None,
    partitions: int = 12,
    detached: bool = False,
    timeout: float = 120.0,
) -> SecureServices:
    """Make the CA and the passwords, start what is asked for (free ports unless given).

    ``contract_topics``: also create those topics (as admin) and grant ``contract_acls`` on them,
    so a processor and a gateway can run at once (the launcher does this; tests grant their own).
    ``data_dir=None``: a temp dir, removed by ``stop()``.
    """
    temp = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="secure-services-") if temp else data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    svc = SecureServices(folder=folder, pki=make_pki(folder / "pki"))
    if temp:
        svc._stops.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    try:
        if kafka:
            users = write_passwords(folder, "kafka", KAFKA_USERS)
            broker = SecureKafkaBroker(
                svc.pki,
                users,
                port=kafka_port,
                mtls_port=mtls_port,
                mismatch_port=mismatch_port,
                data_dir=folder / "kafka-secure",
                detached=detached,
            )
            broker.start(timeout)
            svc.broker = broker
            svc._stops.append(broker.stop)
        if redis:
            server = SecureRedisServer(
                svc.pki,
                write_passwords(folder, "redis", REDIS_USERS),
                port=redis_port,
                data_dir=folder / "redis-secure",
                detached=detached,
            )
            server.start(timeout)
            svc.redis = server
            svc._stops.append(server.stop)
        if kafka and contract_topics is not None:
            _set_up_contract(svc.admin(), contract_topics, partitions)
    except BaseException:
        svc.stop()
        raise
    return svc


def start_secure_cluster(
    svc: SecureServices, data_dir: Path | str, timeout: float = 180.0
) -> SecureRedisCluster:
    """A TLS Redis Cluster (3 masters + 3 replicas, free ports) with ``svc``'s CA and Redis users
    (the same password files); the caller stops it."""
    passwords = {user: svc.redis_password(user) for user in REDIS_USERS}
    cluster = SecureRedisCluster.on_free_ports(data_dir, pki=svc.pki, passwords=passwords)
    cluster.start(timeout)
    return cluster


def _set_up_contract(admin: KafkaAdmin, topics: Topics, partitions: int) -> None:
    names = {
        "events": topics.events,
        "verdicts": topics.verdicts,
        "dlq": topics.dlq,
        "policies": topics.policies,
        "replies": topics.replies,
    }
    admin.create_topics(
        {name: partitions for name in names.values()},
        {names[role]: configs for role, configs in TOPIC_CONFIGS.items()},
    )
    admin.grant(contract_acls(topics))
