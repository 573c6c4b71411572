"""Publishing a batch's verdicts and dead letters, and waiting until Kafka acknowledged all.

No single record can stall the processor: a dead-letter copy that would exceed the
producer's request limit is written truncated (header `truncated` = original value size),
and a size rejection by the broker shrinks the copies further on the next attempt.
Every failed attempt is classified (retriable, non_retriable, record_too_large), logged,
counted and shown on /health until a publish succeeds; the batch is retried with backoff,
as its verdicts must not be lost (a verdict that cannot be written is an operator's
problem, e.g. a topic's max.message.bytes or ACLs, and /health says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processor.connections import KafkaAccess
from processor.kafka_batches import send_in_batches
from processor.kafka_checks import AUTHORIZATION_ERRORS, refusal
from processor.metrics import Metrics
from processor.partitioning import PartitionMismatch
from processor.retrying import utc_iso
from processor.wire import DecodeError

log = logging.getLogger("processor")

PRODUCER_BATCH_BYTES = 512 * 1024
MAX_REQUEST_BYTES = 1024 * 1024  # aiokafka's max_request_size default; the broker's limit is close
# The processor's own DLQ header names: an original header of the same name (or one that
# already starts with `original.`) is kept as `original.<name>`, so ours cannot be spoofed.
DLQ_HEADERS = frozenset(
    {
        "error",
        "error.detail",
        "source.topic",
        "source.partition",
        "source.offset",
        "source.timestamp",
        "truncated",
        "truncated.headers",
    }
)
SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
MIN_DLQ_BYTES = 1024
# Acks this late are no broker's failover (the cluster moves leaderships in seconds): the
# partitions wait, e.g. for brokers below min.insync.replicas, and /health and a metric say so.
STALLED_SECONDS = 15.0

VerdictRecords = dict[int, list[tuple[bytes, bytes, None]]]  # verdict partition -> records


def _record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def dead_letter_copy(
    rec, err: DecodeError, max_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of the DLQ copy of `rec`: the original, unless it cannot fit."""
    headers = [
        ("error", err.code.encode()),
        ("error.detail", err.detail[:500].encode()),
        ("source.topic", rec.topic.encode()),
        ("source.partition", str(rec.partition).encode()),
        ("source.offset", str(rec.offset).encode()),
        ("source.timestamp", str(rec.timestamp).encode()),
    ]
    original = [
        (f"original.{name}" if name in DLQ_HEADERS or name.startswith("original.") else name, value)
        for name, value in rec.headers or ()
    ]
    key, value = rec.key, rec.value
    if _record_size(key, value, headers + original) <= max_bytes:
        return key, value, headers + original
    # Too large to write whole: keep what fits, value first, then the original headers.
    size = len(value or b"")
    headers.append(("truncated", str(size).encode()))
    if key is not None and len(key) > max_bytes // 4:
        key = key[: max_bytes // 4]
    kept = []
    for header in original:
        if _record_size(key, b"", headers + kept + [header]) > max_bytes // 2:
            break
        kept.append(header)
    if len(kept) < len(original):
        headers.append(("truncated.headers", str(len(original) - len(kept)).encode()))
    room = max_bytes - _record_size(key, b"", headers + kept)
    value = None if value is None else value[: max(0, room)]
    return key, value, headers + kept


def classify(exc: BaseException) -> str:
    if isinstance(exc, SIZE_ERRORS):
        return "record_too_large"
    if isinstance(exc, KafkaError) and exc.retriable:
        return "retriable"
    return "non_retriable"


class VerdictPublisher:
    def __init__(
        self,
        kafka: KafkaAccess | str,
        verdicts_topic: str,
        dlq_topic: str,
        metrics: Metrics,
        backoff: Callable[[int], Awaitable[None]],
    ) -> None:
        self._kafka = KafkaAccess.of(kafka)
        self._verdicts_topic = verdicts_topic
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._backoff = backoff
        self._producer: AIOKafkaProducer | None = None
        self.failing: dict | None = None  # the error being retried now, for /health

    async def start(self) -> None:
        self._producer = await self._new_producer()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = self._kafka.producer(
            enable_idempotence=True,
            acks="all",
            max_batch_size=PRODUCER_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            linger_ms=0,
        )
        await producer.start()
        return producer

    async def publish(self, verdicts: VerdictRecords, dead_letters: list[tuple[object, DecodeError]]) -> None:
        """Produce every verdict and dead letter; return when Kafka acknowledged all."""
        attempt = 0
        dlq_max = MAX_REQUEST_BYTES - 1024
        while True:
            try:
                if self._producer is None:
                    self._producer = await self._new_producer()
                letters = [await self._send_dead_letter(rec, err, dlq_max) for rec, err in dead_letters]
                futures = []
                for target, records in verdicts.items():
                    futures += await send_in_batches(self._producer, self._verdicts_topic, target, records)
                acks = await self._acknowledged([*letters, *futures])
                failed = [a for a in acks if isinstance(a, BaseException)]
                if failed:
                    if any(isinstance(a, SIZE_ERRORS) for a in acks[: len(letters)]):
                        # The DLQ topic takes less than the producer's limit: smaller copies next time.
                        dlq_max = max(MIN_DLQ_BYTES, dlq_max // 2)
                    raise failed[0]
                for _rec, err in dead_letters:
                    self._metrics.dlq.labels(err.code).inc()
                if self.failing is not None:
                    log.info("publishing works again", extra={"after_attempts": attempt})
                    self._metrics.publish_failing.set(0)
                self.failing = None
                return
            except KafkaError as exc:
                attempt += 1
                kind = classify(exc)
                self._metrics.publish_errors.labels(kind).inc()
                self._metrics.retries.labels("produce").inc()
                since = self.failing["since"] if self.failing is not None else utc_iso(time.time())
                error = type(exc).__name__
                self.failing = {"error": error, "kind": kind, "attempts": attempt, "since": since}
                self._metrics.publish_failing.set(1)
                if isinstance(exc, AUTHORIZATION_ERRORS):  # an ACL revoked while running: say which
                    uses = {self._verdicts_topic: "Write", self._dlq_topic: "Write"}
                    self.failing["detail"] = str(refusal(exc, self._kafka, uses))
                log.log(
                    logging.WARNING if kind == "retriable" else logging.ERROR,
                    "publishing verdicts failed; retrying the batch with a new producer, nothing committed",
                    extra={
                        "error": repr(exc),
                        "kind": kind,
                        "attempt": attempt,
                        "detail": self.failing.get("detail"),
                    },
                )
                await self._backoff(attempt)
                # A failed idempotent batch leaves the producer's sequence numbers out of
                # step (OutOfOrderSequenceNumber forever): start over with a new producer id.
                old, self._producer = self._producer, None
                if old is not None:
                    with contextlib.suppress(KafkaError):
                        await old.stop()

    async def _acknowledged(self, futures: list) -> list:
        """The acks (or errors) of every send; reported as failing while they are stalled."""
        gathered = asyncio.gather(*futures, return_exceptions=True)
        try:
            return await asyncio.wait_for(asyncio.shield(gathered), STALLED_SECONDS)
        except TimeoutError:
            if self.failing is None:
                since = utc_iso(time.time() - STALLED_SECONDS)
                self.failing = {
                    "error": "NoAcknowledgement",
                    "kind": "waiting",
                    "attempts": 0,
                    "since": since,
                }
                self._metrics.publish_failing.set(1)
                log.warning(
                    "verdicts not acknowledged: waiting (too few brokers in sync? min.insync.replicas)",
                    extra={"seconds": STALLED_SECONDS},
                )
            return await gathered

    async def _send_dead_letter(self, rec, err: DecodeError, max_bytes: int) -> asyncio.Future:
        assert self._producer is not None
        key, value, headers = dead_letter_copy(rec, err, max_bytes)
        # A partition mismatch is counted and warned about once a minute (key_mismatches): a
        # fleet on another hash would otherwise write a warning per record.
        log.log(
            logging.DEBUG if isinstance(err, PartitionMismatch) else logging.WARNING,
            "record dead-lettered",
            extra={
                "error": err.code,
                "detail": err.detail[:200],
                "partition": rec.partition,
                "offset": rec.offset,
                "truncated": value is not rec.value,
            },
        )
        return await self._producer.send(self._dlq_topic, key=key, value=value, headers=headers)
