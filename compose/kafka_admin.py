"""Topics and ACLs on a secured broker, as its super user, through confluent-kafka's AdminClient.

Why confluent-kafka: aiokafka 0.14's admin client has no create/describe/delete ACL call, and
Kafka's own ``AclCommand`` lives in the ``kafka-tools`` jar, which the broker's cached jars do
not include (and a JVM per call costs seconds here). confluent-kafka is already a dev extra
(the partitioner tests) and its AdminClient speaks SASL_SSL with SCRAM and PLAIN.

``grant``/``revoke`` return once the broker's authorizer shows the change (DescribeAcls is
answered from the broker's own copy of the ACLs), so a test can use the principal at once.
Blocking calls: from asyncio, run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from compose.kafka_acls import AclBinding
from compose.managed import LauncherError

log = logging.getLogger("compose.kafka_admin")

_RESOURCE = {"TOPIC": "TOPIC", "GROUP": "GROUP", "CLUSTER": "BROKER", "TRANSACTIONAL_ID": "TRANSACTIONAL_ID"}
_CLUSTER_NAME = "kafka-cluster"


def _ck():
    try:
        import confluent_kafka.admin as admin
    except ImportError as exc:  # a dev extra
        raise LauncherError("confluent-kafka is missing: `make install` (the dev extra) brings it") from exc
    return admin


def _to_ck(b: AclBinding):
    ck = _ck()
    return ck.AclBinding(
        ck.ResourceType[_RESOURCE[b.resource_type]],
        _CLUSTER_NAME if b.resource_type == "CLUSTER" else b.resource_name,
        ck.ResourcePatternType[b.pattern_type],
        b.principal,
        "*",
        ck.AclOperation[b.operation],
        ck.AclPermissionType.ALLOW,
    )


def _key(ck_binding) -> tuple:
    return (
        ck_binding.restype.name,
        ck_binding.name,
        ck_binding.resource_pattern_type.name,
        ck_binding.principal,
        ck_binding.operation.name,
    )


class KafkaAdmin:
    """The super user's admin client on a SASL_SSL listener (``mechanism`` SCRAM or PLAIN)."""

    def __init__(
        self,
        bootstrap: str,
        ca_file: Path | str,
        username: str,
        password: str,
        mechanism: str = "SCRAM-SHA-512",
        timeout: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._config = {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism,
            "sasl.username": username,
            "sasl.password": password,
            "ssl.ca.location": str(ca_file),
            "logger": log,  # librdkafka's own lines go to logging, not straight to stderr
        }
        self._client = _ck().AdminClient(self._config)

    def create_topics(
        self, partitions: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None
    ) -> list[str]:
        """Create the topics (name -> partitions) that do not exist yet; returns those it created."""
        ck = _ck()
        configs = configs or {}
        new = [ck.NewTopic(name, n, 1, config=dict(configs.get(name, {}))) for name, n in partitions.items()]
        if not new:
            return []
        created = []
        for name, future in self._client.create_topics(new, request_timeout=self.timeout).items():
            try:
                future.result(self.timeout)
                created.append(name)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise LauncherError(f"creating topic {name} failed: {exc.args[0].str()}") from None
        self._wait_for_leaders(list(partitions))
        return created

    def _wait_for_leaders(self, names: list[str]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            meta = self._client.list_topics(timeout=self.timeout).topics
            if all(
                n in meta
                and meta[n].error is None
                and all(p.leader >= 0 for p in meta[n].partitions.values())
                for n in names
            ):
                return
            if time.monotonic() > deadline:
                raise LauncherError(f"topics {names} have no leaders after {self.timeout:.0f} s")
            time.sleep(0.05)

    def acls(self) -> set[tuple]:
        """Every ALLOW binding the broker holds, as (resource type, name, pattern, principal, operation)."""
        ck = _ck()
        everything = ck.AclBindingFilter(
            ck.ResourceType.ANY,
            None,
            ck.ResourcePatternType.ANY,
            None,
            None,
            ck.AclOperation.ANY,
            ck.AclPermissionType.ANY,
        )
        found = self._client.describe_acls(everything, request_timeout=self.timeout).result(self.timeout)
        return {_key(b) for b in found}

    def grant(self, bindings: Iterable[AclBinding]) -> None:
        """Add the ALLOW bindings and wait until the broker's authorizer holds every one."""
        wanted = [_to_ck(b) for b in bindings]
        if not wanted:
            return
        for binding, future in self._client.create_acls(wanted, request_timeout=self.timeout).items():
            try:
                future.result(self.timeout)
            except _ck().KafkaException as exc:
                raise LauncherError(f"creating ACL {_key(binding)} failed: {exc.args[0].str()}") from None
        self._wait_until(lambda held: all(_key(b) in held for b in wanted), "granted")

    def revoke(self, bindings: Iterable[AclBinding]) -> None:
        """Remove exactly these bindings and wait until the broker's authorizer dropped them."""
        gone = [_to_ck(b) for b in bindings]
        if not gone:
            return
        ck = _ck()
        filters = [
            ck.AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in gone
        ]
        for future in self._client.delete_acls(filters, request_timeout=self.timeout).values():
            future.result(self.timeout)
        self._wait_until(lambda held: not any(_key(b) in held for b in gone), "revoked")

    def set_scram_password(
        self, user: str, password: str, mechanisms: tuple[str, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256")
    ) -> None:
        """Create ``user``'s SCRAM credentials or replace them (a rotation), then wait until the
        broker takes the new password: a SASL handshake with it succeeds."""
        ck = _ck()
        for mechanism in mechanisms:  # the broker takes one change per user in a request
            info = ck.ScramCredentialInfo(ck.ScramMechanism[mechanism.replace("-", "_")], 4096)
            upsert = ck.UserScramCredentialUpsertion(user, info, password.encode())
            futures = self._client.alter_user_scram_credentials([upsert], request_timeout=self.timeout)
            try:
                futures[user].result(self.timeout)
            except ck.KafkaException as exc:
                why = exc.args[0].str()
                raise LauncherError(f"setting {user}'s {mechanism} password failed: {why}") from None
        deadline = time.monotonic() + self.timeout
        while not all(self._authenticates(user, password, m) for m in mechanisms):
            if time.monotonic() > deadline:
                raise LauncherError(
                    f"the broker did not take {user}'s new password within {self.timeout:.0f} s"
                )
            time.sleep(0.1)

    def _authenticates(self, user: str, password: str, mechanism: str) -> bool:
        ck = _ck()
        client = ck.AdminClient(
            {**self._config, "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
        )
        try:
            client.list_topics(timeout=5)  # Metadata needs no ACL: it answers once SASL succeeded
        except ck.KafkaException:
            return False
        return True

    def _wait_until(self, done, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done(self.acls()):
            if time.monotonic() > deadline:
                raise LauncherError(f"the ACLs were not {what} within {self.timeout:.0f} s")
            time.sleep(0.05)
