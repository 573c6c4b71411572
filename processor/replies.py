"""Replies to the requester: copies of an event's verdicts to its `reply.topic`/`reply.partition`.

A gateway names, in each event's headers, a partition of a reply topic that it reads, and
waits there for the event's verdict (its own and any revoke; never the ledger's expiries of
other leases). The copies are best effort on the reply side, but never at the cost of the
verdicts topic: they go through a producer of their own (a failed reply partition cannot
put the main idempotent producer's sequence numbers out of step), to topics known to exist
(checked against the broker's full topic list, so a header naming a missing topic neither
waits for metadata nor auto-creates it), and a reply that fails or takes too long is logged
and counted, not retried: the event's verdict is on the verdicts topic either way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from processor.connections import KafkaAccess
from processor.kafka_batches import send_in_batches
from processor.metrics import Metrics

log = logging.getLogger("processor")

TOPIC_HEADER = "reply.topic"
PARTITION_HEADER = "reply.partition"
# Kafka's own rule for topic names; anything else can never exist.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PARTITION = re.compile(r"[0-9]{1,9}")
TOPICS_REFRESH_SECONDS = 2.0  # at most one full metadata read per interval
TOPICS_MAX_AGE_SECONDS = 60.0
# A reply waits for no more than this. A target refused for good (not authorised, too large)
# is skipped for a while. One that is late or fails for a moment (its leader died and the
# cluster is moving it, a deleted topic not yet seen gone) is skipped only briefly and the topic
# list read again: a deleted topic then costs one short wait, not one per batch, and a broker's
# death does not keep the gateway's answers away once its leaderships moved (30 s it did).
SEND_TIMEOUT_SECONDS = 2.0
FAILED_TARGET_SKIP_SECONDS = 30.0
TRANSIENT_SKIP_SECONDS = 1.0

ReplyRecord = tuple[str, int, bytes, bytes]  # (topic, partition, key, value)


class BadReplyHeader(ValueError):
    pass


def reply_target(headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, int] | None:
    """(topic, partition) named by a record's headers; None when it names none.

    Raises BadReplyHeader for a header that is present but unusable (one without the other,
    repeated, not UTF-8, not a topic name, not a decimal partition).
    """
    topic = partition = None
    for name, value in headers or ():
        if name not in (TOPIC_HEADER, PARTITION_HEADER):
            continue
        if (topic if name == TOPIC_HEADER else partition) is not None:
            raise BadReplyHeader(f"{name} given twice")
        try:
            text = (value or b"").decode()
        except UnicodeDecodeError:
            raise BadReplyHeader(f"{name} is not UTF-8") from None
        if name == TOPIC_HEADER:
            topic = text
        else:
            partition = text
    if topic is None and partition is None:
        return None
    if topic is None or partition is None:
        raise BadReplyHeader(f"{TOPIC_HEADER} and {PARTITION_HEADER} go together")
    if not _TOPIC_NAME.fullmatch(topic):
        raise BadReplyHeader(f"{TOPIC_HEADER} {topic[:80]!r} is not a topic name")
    if not _PARTITION.fullmatch(partition):
        raise BadReplyHeader(f"{PARTITION_HEADER} {partition[:20]!r} is not a decimal partition number")
    return topic, int(partition)


class ReplySender:
    def __init__(
        self, kafka: KafkaAccess | str, metrics: Metrics, allowed: str, own_topics: Iterable[str] = ()
    ) -> None:
        self._kafka = KafkaAccess.of(kafka)
        self._metrics = metrics
        self._allowed = re.compile(allowed)
        self._own = frozenset(own_topics)
        self._failed: dict[str, float] = {}  # topic -> monotonic time until which it is skipped
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}  # topic -> partition count, as last read
        self._read_at = float("-inf")

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, replies: list[ReplyRecord]) -> None:
        """Write the copies in order per reply partition; return when each is acked, failed or late."""
        if not replies:
            return
        replies = self._admitted(replies)
        if not replies:
            return
        try:
            await asyncio.wait_for(self._send(replies), SEND_TIMEOUT_SECONDS)
        except (KafkaError, TimeoutError) as exc:
            self._metrics.replies.labels("failed").inc(len(replies))
            self._forget({topic for topic, *_ in replies}, transient=_transient(exc))
            log.warning("replies not sent: not retried", extra={"error": repr(exc), "replies": len(replies)})

    def _admitted(self, replies: list[ReplyRecord]) -> list[ReplyRecord]:
        """The replies to topics a reply may go to, and not failing lately; the rest counted."""
        now = time.monotonic()
        kept = []
        for reply in replies:
            topic = reply[0]
            if topic in self._own or topic.startswith("__") or not self._allowed.fullmatch(topic):
                outcome = "refused_topic"
            elif self._failed.get(topic, 0.0) > now:
                outcome = "failed"
            else:
                kept.append(reply)
                continue
            self._metrics.replies.labels(outcome).inc()
            if outcome == "refused_topic":
                log.warning(
                    "reply.topic names a topic replies may not go to (REPLY_TOPICS): not sent",
                    extra={"reply_topic": topic[:100]},
                )
        return kept

    def _forget(self, topics: set[str], transient: bool) -> None:
        """Skip these topics for a while (briefly when `transient`) and read the topic list again
        before using them."""
        until = time.monotonic() + (TRANSIENT_SKIP_SECONDS if transient else FAILED_TARGET_SKIP_SECONDS)
        if transient:
            self._read_at = float("-inf")  # gone or moved: the next batch knows which at once
        for topic in topics:
            self._failed[topic] = until
            self._partitions.pop(topic, None)
        if len(self._failed) > 1000:  # bounded: drop the entries whose time is up
            now = time.monotonic()
            self._failed = {t: u for t, u in self._failed.items() if u > now}

    async def _send(self, replies: list[ReplyRecord]) -> None:
        producer = await self._started()
        by_target: dict[tuple[str, int], list] = {}
        for topic, partition, key, value in replies:
            by_target.setdefault((topic, partition), []).append((key, value, None))
        await self._read_topics(any(p >= self._partitions.get(t, 0) for t, p in by_target))
        sent = []
        for (topic, partition), records in by_target.items():
            count = self._partitions.get(topic)
            if count is None or partition >= count:
                outcome = "unknown_topic" if count is None else "unknown_partition"
                self._metrics.replies.labels(outcome).inc(len(records))
                log.warning(
                    "reply target does not exist: reply not sent (the verdict is on the verdicts topic)",
                    extra={"reply_topic": topic, "reply_partition": partition, "outcome": outcome},
                )
                continue
            sent.append((topic, len(records), await send_in_batches(producer, topic, partition, records)))
        for topic, n, futures in sent:
            acks = await asyncio.gather(*futures, return_exceptions=True)
            errors = [a for a in acks if isinstance(a, BaseException)]
            self._metrics.replies.labels("failed" if errors else "sent").inc(n)
            if errors:
                self._forget({topic}, transient=all(_transient(e) for e in errors))
                log.warning("reply batch failed: not retried", extra={"error": repr(errors[0])})

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._kafka.producer(acks="all", linger_ms=0)
            await producer.start()
            self._producer = producer
        return self._producer

    async def _read_topics(self, missing: bool) -> None:
        """Read the topic list when a target is missing from it, at most once per interval."""
        age = time.monotonic() - self._read_at
        # Known topics are re-read now and then too: one deleted since must not be waited for.
        if age < TOPICS_REFRESH_SECONDS or (not missing and age < TOPICS_MAX_AGE_SECONDS):
            return
        assert self._producer is not None
        self._read_at = time.monotonic()
        cluster = await self._producer.client.fetch_all_metadata()  # all topics: creates none
        self._partitions = {t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}


def _transient(exc: BaseException) -> bool:
    """Late, or an error Kafka calls retriable (a leader moving, a connection lost)."""
    return isinstance(exc, TimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)
