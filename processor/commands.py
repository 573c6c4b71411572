"""Operator commands beside the processor: write and read policies, terminate a session.

Each command validates its input the way the processor will read it, so an operator gets
the error at the prompt rather than as a logged, ignored policy record.
"""

from __future__ import annotations

import uuid

import orjson

from processor.config import Settings
from processor.connections import kafka_access
from processor.partitioning import ProducerPartitioner
from processor.policies import (
    PolicyError,
    ensure_policies_topic,
    parse_policy,
    policy_kind,
    read_policies,
)
from processor.wire import DecodeError, decode_event


class CommandError(ValueError):
    """Input an operator command refuses; the message says what to fix."""


async def _produce(
    settings: Settings, topic: str, key: bytes, value: bytes | None, event: bool = False
) -> tuple[int, int]:
    """Write one record; an `event` goes to the partition EVENT_PARTITIONER gives its key."""
    placement = {"partitioner": ProducerPartitioner(settings.event_partitioner)} if event else {}
    producer = kafka_access(settings).producer(enable_idempotence=True, **placement)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, key=key, value=value)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def policy_set(settings: Settings, key: str, value: str) -> dict:
    """Validate and write one policy; PolicyError when the key or the JSON is not a policy."""
    raw = value.encode()
    try:
        parse_policy(key, raw, settings.overflow_policy)
    except PolicyError as exc:
        raise CommandError(f"not a policy: {exc}") from None
    value_json = orjson.loads(raw)
    await ensure_policies_topic(settings, needs=("Write",))
    topic = settings.policies_topic
    _partition, offset = await _produce(settings, topic, key.encode(), orjson.dumps(value_json))
    return {"set": key, "value": value_json, "topic": settings.policies_topic, "offset": offset}


async def policy_delete(settings: Settings, key: str) -> dict:
    try:
        policy_kind(key)
    except PolicyError as exc:
        raise CommandError(str(exc)) from None
    await ensure_policies_topic(settings, needs=("Write",))
    _partition, offset = await _produce(settings, settings.policies_topic, key.encode(), None)
    return {"deleted": key, "topic": settings.policies_topic, "offset": offset}


async def policy_list(settings: Settings) -> dict:
    """Every policy in force, as the processor reads them (malformed records skipped)."""
    partitions = await ensure_policies_topic(settings)
    table = await read_policies(
        kafka_access(settings),
        settings.policies_topic,
        partitions,
        settings.max_streams,
        settings.overflow_policy,
    )
    return {
        "topic": settings.policies_topic,
        "settings": {"maxStreams": settings.max_streams, "overflow": settings.overflow_policy},
        "policies": table.listing(),
    }


async def terminate(settings: Settings, user_id: str, target: str, requester: str | None) -> dict:
    """Publish a `terminate` event for the user's session `target`; the verdict follows on the topic."""
    event = {
        "type": "terminate",
        "userId": user_id,
        "sessionId": requester or f"operator-{uuid.uuid4().hex[:12]}",
        "targetSessionId": target,
        "eventId": f"terminate-{uuid.uuid4()}",
    }
    try:  # the processor's own check, so a bad id fails here and not in the DLQ
        decode_event(orjson.dumps(event), user_id.encode())
    except DecodeError as exc:
        raise CommandError(f"{exc.code}: {exc.detail}") from None
    partition, offset = await _produce(
        settings, settings.events_topic, user_id.encode(), orjson.dumps(event), event=True
    )
    return {"published": event, "topic": settings.events_topic, "partition": partition, "offset": offset}
