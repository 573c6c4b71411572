"""What Kafka lets this client do, asked before the clients start: one clear line when it refuses.

aiokafka hides a refused login or an untrusted certificate behind "Unable to bootstrap" (it
logs the cause and tries the next server), and a missing ACL only shows at the first write.
So a start asks first: `check_kafka_login` opens one connection as every client will (TLS,
SASL) and names what failed; `topic_metadata` asks the broker, for the named topics only,
their partitions and the operations this principal may perform on them (Metadata v8's
authorized operations: a question, not an attempt, so nothing is written or created).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from processor.connections import KafkaAccess

UNKNOWN_TOPIC = 3
TOPIC_AUTHORIZATION_FAILED = 29
# Kafka's AclOperation codes; a topic's authorized operations are a bit field of them.
OPERATIONS = {"All": 2, "Read": 3, "Write": 4, "Create": 5, "Describe": 8}
OPERATIONS_NOT_GIVEN = -(2**31)  # the broker did not say (an older broker)
LOGIN_TIMEOUT_S = 20.0


class KafkaAccessError(RuntimeError):
    """Kafka refuses this client (TLS, login or ACL): one line that says which, and what to do."""


class _MetadataResponseV8(Response):
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8"))),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _TopicAccessRequest(Request[_MetadataRequestV8]):
    """Metadata of some topics with this principal's authorized operations; never creates one."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


@dataclass(frozen=True)
class TopicMetadata:
    name: str
    error_code: int
    partitions: int
    leaders_known: bool
    operations: int  # bit field of OPERATIONS, or OPERATIONS_NOT_GIVEN

    def may(self, operation: str) -> bool:
        if self.operations == OPERATIONS_NOT_GIVEN:
            return True  # the broker did not say: the operation itself will tell
        return bool(self.operations & ((1 << OPERATIONS[operation]) | (1 << OPERATIONS["All"])))


async def topic_metadata(client, topics: list[str]) -> dict[str, TopicMetadata]:
    """Each topic's partitions and this principal's operations on it (aiokafka's AIOKafkaClient)."""
    node = client.get_random_node()
    response = await client.send(node, _TopicAccessRequest(topics))
    out = {}
    for error_code, name, _internal, partitions, operations in response.topics:
        leaders = bool(partitions) and all(p[2] >= 0 for p in partitions)
        out[name] = TopicMetadata(name, error_code, len(partitions), leaders, operations)
    return out


def acl_command(kafka: KafkaAccess, operation: str, resource: str, name: str) -> str:
    """The kafka-acls.sh line that grants `operation` on a topic or group to this principal."""
    return (
        f"kafka-acls.sh --bootstrap-server {kafka.bootstrap} --command-config admin.properties --add "
        f"--allow-principal {kafka.principal()} --operation {operation} --{resource} {name}"
    )


def check_operations(
    kafka: KafkaAccess, found: dict[str, TopicMetadata], needs: dict[str, tuple[str, ...]]
) -> None:
    """KafkaAccessError naming the first operation the principal lacks on a topic it needs."""
    for topic, operations in needs.items():
        meta = found.get(topic)
        if meta is None:
            continue
        for operation in operations:
            if not meta.may(operation):
                raise KafkaAccessError(
                    f"Kafka refuses {operation} on topic {topic} to {kafka.principal()}: grant it with "
                    f"`{acl_command(kafka, operation, 'topic', topic)}`"
                )


def no_describe(kafka: KafkaAccess, topic: str) -> str:
    return (
        f"Kafka refuses Describe on topic {topic} to {kafka.principal()} (or the topic does not exist "
        f"and may not be created): grant it with `{acl_command(kafka, 'Describe', 'topic', topic)}`, "
        "or create the topic"
    )


AUTHORIZATION_ERRORS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


def refusal(exc: KafkaError, kafka: KafkaAccess, operations: dict[str, str]) -> KafkaAccessError:
    """The one line for an authorization error a client raised: aiokafka puts the group's or
    the topics' names in it; `operations` says what the caller does with each topic."""
    names = exc.args[0] if exc.args else ""
    if isinstance(exc, GroupAuthorizationFailedError):
        return KafkaAccessError(
            f"Kafka refuses Read on group {names} to {kafka.principal()}: grant it with "
            f"`{acl_command(kafka, 'Read', 'group', str(names))}`"
        )
    if isinstance(exc, TopicAuthorizationFailedError):
        topics = sorted(names) if isinstance(names, (set, list, tuple, frozenset)) else [str(names)]
        topic = topics[0] if topics else "?"
        operation = operations.get(topic, "Describe")
        return KafkaAccessError(
            f"Kafka refuses {operation} on topic {topic} to {kafka.principal()}: grant it with "
            f"`{acl_command(kafka, operation, 'topic', topic)}`"
        )
    return KafkaAccessError(f"Kafka refuses a cluster operation to {kafka.principal()} ({exc})")


async def check_kafka_login(kafka: KafkaAccess, timeout_s: float = LOGIN_TIMEOUT_S) -> None:
    """Connect to the bootstrap servers as the clients will; KafkaAccessError when TLS or the
    login is refused. An unreachable Kafka is not refused: the clients wait for it as before."""
    kwargs = kafka.client_kwargs()
    kwargs.pop("bootstrap_servers")
    for server in kafka.bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        where = f"Kafka at {server.strip()}"
        try:
            conn = await asyncio.wait_for(
                create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs),
                timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            raise KafkaAccessError(_untrusted(where, exc)) from None
        except ssl.SSLError as exc:
            raise KafkaAccessError(
                f"the TLS handshake with {where} failed ({exc.reason or exc}): check "
                "KAFKA_SECURITY_PROTOCOL against the listener, and KAFKA_SSL_CERT_FILE/KAFKA_SSL_KEY_FILE "
                "if it asks for a client certificate"
            ) from None
        except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
            raise KafkaAccessError(
                f"{where} refused the {kafka.mechanism} login of user {kafka.username!r} "
                f"({_first_line(exc)}): a wrong password or an unknown user; check KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD(_FILE)"
            ) from None
        except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            raise KafkaAccessError(
                f"{where} does not accept KAFKA_SASL_MECHANISM={kafka.mechanism} on this listener "
                f"({type(exc).__name__}): ask which mechanisms it enables"
            ) from None
        except KafkaConnectionError:
            raise KafkaAccessError(
                f"{where} closed the connection during the handshake: check that "
                f"KAFKA_SECURITY_PROTOCOL={kafka.protocol} is the protocol of that listener"
            ) from None
        except (OSError, TimeoutError, KafkaError):
            continue  # unreachable, or not answering yet: the next server, then the clients' own waiting
        conn.close()
        return


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> str:
    reason = exc.verify_message or str(exc)
    if "mismatch" in reason.lower() or "hostname" in reason.lower():
        return (
            f"{where} presented a certificate for another name ({reason}): connect by a name the "
            "certificate holds, or set KAFKA_SSL_CHECK_HOSTNAME=false (it is still checked against the CA)"
        )
    return (
        f"{where} presented a certificate that is not trusted ({reason}): set KAFKA_SSL_CA_FILE to the "
        "PEM of the CA that signed it"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
