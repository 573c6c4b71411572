"""Creating the processor's topics and reading their partition counts."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


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
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication: int,
    timeout_s: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
) -> dict[str, int]:
    """Create any missing topic; wait until every topic has leaders; return their partition counts.

    `configs` gives topic configs by name for the topics it creates (e.g. COMPACTED).
    """
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
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
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise for_code(code)(f"cannot create topic {name}: {topic_error[2:]}")
            log.info("created topics", extra={"topics": missing, "partitions": partitions})
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            described = await admin.describe_topics(topics)
            counts = {
                d["topic"]: len(d["partitions"])
                for d in described
                if d["error_code"] == 0 and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
            }
            if len(counts) == len(topics):
                return counts
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"topics {sorted(set(topics) - set(counts))} have no leaders after {timeout_s}s"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
