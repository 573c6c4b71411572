"""Creating the processor's topics and reading their partition counts, with least privilege.

The partition counts and the principal's rights come from metadata of the named topics only
(kafka_checks): a principal with Describe on its topics needs nothing of the cluster. A
missing topic is created when the principal may; when it may not (no Create ACL, as the
contract's least privilege), the start ends naming the topic and the command that creates it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import NewTopic
from aiokafka.errors import for_code

from processor.config import Settings
from processor.connections import KafkaAccess
from processor.kafka_checks import (
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC,
    KafkaAccessError,
    check_operations,
    no_describe,
    topic_metadata,
)

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_REFUSED_CREATE = (TOPIC_AUTHORIZATION_FAILED, 31)  # topic or cluster authorization failed


COMPACTED = {"cleanup.policy": "compact"}
# The events topic refuses record timestamps more than a minute ahead of the broker's clock
# (Kafka's default allows an hour): event time drives expiry, and one record stamped far in
# the future would move its partition's stream time there and expire every lease at once.
EVENTS_TOPIC_CONFIGS = {"message.timestamp.after.max.ms": "60000"}


def replicated_configs(replication: int, configs: dict[str, str] | None = None) -> dict[str, str]:
    """A topic's configs at `replication`: from 3 replicas on, min.insync.replicas = factor - 1, so
    an acks=all write is on two replicas before it is acknowledged and survives one broker's
    loss (the contract), whatever the cluster's default (Kafka's own is 1)."""
    out = dict(configs or {})
    if replication >= 3:
        out.setdefault("min.insync.replicas", str(replication - 1))
    return out


async def ensure_topics(
    kafka: KafkaAccess | str,
    topics: list[str],
    partitions: int,
    replication: int,
    timeout_s: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
    needs: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, int]:
    """Create any missing topic; wait until every topic has leaders; return their partition counts.

    `configs` gives topic configs by name for the topics it creates (e.g. COMPACTED); `needs`
    the operations the caller will perform on each topic (e.g. ("Write",)): KafkaAccessError
    names the first the principal may not, as it does a missing topic it may not create.
    """
    kafka = KafkaAccess.of(kafka)
    configs = configs or {}
    admin = kafka.admin()
    await admin.start()
    try:
        client = admin._client  # the admin's own connections: metadata of these topics only
        found = await topic_metadata(client, topics)
        missing = [t for t in topics if found[t].error_code in (UNKNOWN_TOPIC, TOPIC_AUTHORIZATION_FAILED)]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        t,
                        partitions,
                        replication,
                        topic_configs=replicated_configs(replication, configs.get(t)),
                    )
                    for t in missing
                ]
            )
            codes = {error[0]: error[1] for error in response.topic_errors}
            refused = [t for t in missing if codes.get(t) in _REFUSED_CREATE]  # named in the caller's order
            if refused:
                name = refused[0]
                raise KafkaAccessError(
                    _cannot_create(kafka, name, found[name].error_code, partitions, replication, configs)
                )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise for_code(code)(f"cannot create topic {name}: {topic_error[2:]}")
            log.info("created topics", extra={"topics": missing, "partitions": partitions})
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found = await topic_metadata(client, topics)
            counts = {t: m.partitions for t, m in found.items() if m.error_code == 0 and m.leaders_known}
            if len(counts) == len(topics):
                check_operations(kafka, found, needs or {})
                return counts
            refused = [t for t, m in found.items() if m.error_code == TOPIC_AUTHORIZATION_FAILED]
            if refused:  # created (by someone) but not visible to us: Describe is missing
                raise KafkaAccessError(no_describe(kafka, refused[0]))
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"topics {sorted(set(topics) - set(counts))} have no leaders after {timeout_s}s"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _cannot_create(
    kafka: KafkaAccess, topic: str, describe_code: int, partitions: int, replication: int, configs: dict
) -> str:
    if describe_code == TOPIC_AUTHORIZATION_FAILED:
        return no_describe(kafka, topic)
    extra = "".join(f" --config {k}={v}" for k, v in configs.get(topic, {}).items())
    return (
        f"topic {topic} does not exist and {kafka.principal()} may not create it (no Create ACL): create "
        f"it with `kafka-topics.sh --bootstrap-server {kafka.bootstrap} --command-config admin.properties "
        f"--create --topic {topic} --partitions {partitions} --replication-factor {replication}{extra}`"
    )


async def ensure_processor_topics(kafka: KafkaAccess, s: Settings) -> dict[str, int]:
    """The processor's events, verdicts and dead-letter topics, checked for what it does with
    each (the contract's least privilege, and no more); their partition counts."""
    return await ensure_topics(
        kafka,
        [s.events_topic, s.verdicts_topic, s.dlq_topic],
        s.topic_partitions,
        s.topic_replication_factor,
        configs={s.events_topic: EVENTS_TOPIC_CONFIGS},
        needs={s.events_topic: ("Read",), s.verdicts_topic: ("Write",), s.dlq_topic: ("Write",)},
    )
