"""Building and publishing the player event of one HTTP call.

With an Idempotency-Key the eventId (and a start's new sessionId) is derived from the user,
the key and every field the processor compares for an `event_id_conflict` (type, sessionId,
targetSessionId), so a retried call is the same event and the processor's eventId memory
answers it with the first verdict; a key reused for another call, another session or another
requester is another event (never a dead letter, which would leave the call waiting until
its 504). Without a key each call is a new event. The parts are length-prefixed, not joined
with a separator: ids may hold any character, so ("a\0b", "c") must not read as ("a", "b\0c").
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer

from processor.connections import KafkaAccess
from processor.kafka_checks import (
    TOPIC_AUTHORIZATION_FAILED,
    KafkaAccessError,
    check_operations,
    no_describe,
    topic_metadata,
)
from processor.partitioning import check_partitioner, key_partitioner
from processor.replies import PARTITION_HEADER, TOPIC_HEADER
from processor.wire import ISSUED_BY_HEADER

# A fixed namespace: the same (user, key) names the same session on every instance, forever.
_SESSION_NAMESPACE = uuid.UUID("7d0c1f4e-3a51-4f55-9c43-5b9f0f1c2a77")


def _seed(*parts: str) -> str:
    # As processor.verdicts._seed: each part behind its length, so no two inputs build one seed.
    return "".join(f"{len(p)}:{p}" for p in parts)


def event_id(
    user_id: str,
    kind: str,
    session_id: str,
    target_session_id: str | None,
    idempotency_key: str | None,
    issued_by: str | None = None,
) -> str:
    if idempotency_key is None:
        return "gw-" + os.urandom(16).hex()  # 128 random bits (uuid4().hex's shape at a tenth of its cost)
    target = target_session_id or ""  # no target: "" (an id is never empty)
    # The console's agent is part of the event: a player's call with the same key is another event
    # (players' ids stay as they were: no issuer, no part).
    issuer = (issued_by,) if issued_by is not None else ()
    seed = _seed("event", user_id, kind, session_id, target, idempotency_key, *issuer)
    return "gw-" + hashlib.sha256(seed.encode()).hexdigest()[:40]


def _random_uuid() -> str:
    """str(uuid.uuid4()) without the UUID object (a third of its cost on a start's path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_session_id(user_id: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return _random_uuid()
    return str(uuid.uuid5(_SESSION_NAMESPACE, _seed("session", user_id, idempotency_key)))


def build_event(
    kind: str,
    user_id: str,
    session_id: str,
    event_id: str,
    plan: str | None,
    now_ms: int,
    **optional: str | None,
) -> bytes:
    """The event's JSON; None-valued optional fields are left out."""
    value: dict[str, object] = {
        "type": kind,
        "userId": user_id,
        "sessionId": session_id,
        "eventId": event_id,
        "ts": now_ms,
    }
    if plan is not None:
        value["plan"] = plan
    for name, field in optional.items():
        if field is not None:
            value[name] = field
    return orjson.dumps(value)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventPublisher:
    """An idempotent producer (acks=all) of events keyed by userId, with the reply headers."""

    def __init__(
        self,
        kafka: KafkaAccess | str,
        events_topic: str,
        replies_topic: str,
        event_partitioner: str = "murmur2",
    ) -> None:
        self.events_topic = events_topic
        self._event_partitioner = check_partitioner(event_partitioner)  # EVENT_PARTITIONER
        self._kafka = KafkaAccess.of(kafka)
        self._replies_topic = replies_topic.encode()
        self._producer: AIOKafkaProducer | None = None  # made in start(): aiokafka needs the loop
        self._partition_of = None  # userId key -> events partition, once the topic is known

    async def start(self) -> None:
        producer = self._kafka.producer(acks="all", enable_idempotence=True, linger_ms=0)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def events_partitions(self) -> int:
        """The events topic's partition count (0 while the topic does not exist).

        Asked as metadata of that topic only, which never creates it (kafka_checks), with the
        gateway's rights on it: KafkaAccessError when it may not Describe or Write the topic.
        """
        assert self._producer is not None
        found = await topic_metadata(self._producer.client, [self.events_topic])
        meta = found[self.events_topic]
        if meta.error_code == TOPIC_AUTHORIZATION_FAILED:
            raise KafkaAccessError(no_describe(self._kafka, self.events_topic))
        count = meta.partitions if meta.error_code == 0 else 0
        check_operations(self._kafka, found, {self.events_topic: ("Write",)})
        if count:
            # EVENT_PARTITIONER's choice, cached per user (murmur2 and FNV-1a are pure Python).
            self._partition_of = key_partitioner(self._event_partitioner, count)
        return count

    def partition_of(self, user_id: str) -> int:
        """The events partition of a user: the one EVENT_PARTITIONER gives its key."""
        assert self._partition_of is not None, "events_partitions() first"
        return self._partition_of(user_id.encode())

    async def publish(
        self,
        user_id: str,
        value: bytes,
        timestamp_ms: int,
        reply_partition: int,
        issued_by: str | None = None,
    ) -> None:
        """Send one event and wait for its ack (raises KafkaError when it cannot be written).
        `issued_by`: the `issued-by` header's value (the support console's terminate)."""
        assert self._producer is not None and self._partition_of is not None
        headers = [(TOPIC_HEADER, self._replies_topic), (PARTITION_HEADER, str(reply_partition).encode())]
        if issued_by is not None:
            headers.append((ISSUED_BY_HEADER, issued_by.encode()))
        key = user_id.encode()
        ack = await self._producer.send(
            self.events_topic,
            value,
            key=key,
            partition=self._partition_of(key),
            timestamp_ms=timestamp_ms,
            headers=headers,
        )
        await ack
