"""One partition's share of a fetched batch: decoded events, dead letters, results, verdicts.

Everything here is plain data and pure functions, so the loop stays readable and a
redelivered batch turns into the same records.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from processor import rules
from processor.metrics import Metrics
from processor.partitioning import PartitionCheck
from processor.replies import BadReplyHeader, ReplyRecord, reply_target
from processor.script_results import Result
from processor.tokens import TokenSigner
from processor.verdicts import build_verdicts, expire_verdict
from processor.wire import DecodedEvent, DecodeError, decode_event, issued_by

log = logging.getLogger("processor")


@dataclass
class PartitionBatch:
    tp: TopicPartition
    first_offset: int
    last_offset: int
    events: list[tuple[int, int, DecodedEvent]] = field(default_factory=list)
    records: list = field(default_factory=list)  # the consumer record of each event, for the DLQ
    dead_letters: list[tuple[object, DecodeError]] = field(default_factory=list)
    results: list[Result] | None = None
    verdicts: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    replies: list[ReplyRecord] = field(default_factory=list)  # copies for the events' reply headers
    bad_reply_headers: int = 0
    owner: object = None  # the PartitionState it was fetched under, and its generation then
    generation: int = 0


def split(tp: TopicPartition, recs: list, placement: PartitionCheck | None = None) -> PartitionBatch:
    """Decode a partition's records: valid events in log order, the rest as dead letters.

    With `placement` (EVENT_PARTITIONER over the events topic), a record whose key belongs to
    another partition is a dead letter too (PartitionMismatch, `key_mismatch`): its user's
    limit is kept in that partition's state, and deciding it here would count the user's
    leases twice.
    """
    batch = PartitionBatch(tp, recs[0].offset, recs[-1].offset)
    events, records = batch.events, batch.records
    partition = tp.partition
    partition_of = placement.partition_of if placement is not None else None
    for rec in recs:
        try:
            event = decode_event(rec.value, rec.key)
            if partition_of is not None and partition_of(rec.key) != partition:
                raise placement.mismatch(rec.key, partition)  # type: ignore[union-attr]
            events.append((rec.offset, rec.timestamp, event))
            records.append(rec)
        except DecodeError as err:
            batch.dead_letters.append((rec, err))
    return batch


def build_batch_verdicts(
    b: PartitionBatch, topic: str, signer: TokenSigner, partition_of: Callable[[bytes], int]
) -> None:
    """Fill `b.verdicts` with (verdict partition, key, value) in event order, each event's
    `expire` verdicts (the session ledger) before its own.

    An event whose eventId conflicts with another event's becomes a dead letter instead.
    """
    partition = b.tp.partition
    out = b.verdicts
    for (offset, _ts, ev), result, rec in zip(b.events, b.results or (), b.records, strict=True):
        code = result.code
        if result.expired:  # the ledger's expiries this record's stream time reached, before it
            for expiry in result.expired:
                expired_key = expiry.user_id.encode()
                out.append((partition_of(expired_key), expired_key, expire_verdict(expiry)))
        if code == rules.EVENT_ID_CONFLICT:
            b.dead_letters.append(
                (
                    rec,
                    DecodeError(
                        "event_id_conflict",
                        f"eventId {ev.event_id!r} already names another event of this user "
                        "(another type, sessionId or targetSessionId): use a new eventId per event",
                    ),
                )
            )
            continue
        if code == 0:
            log.warning(
                "redelivered offset whose result is no longer stored: no verdict re-sent",
                extra={"partition": partition, "offset": offset, "userId": ev.user_id},
            )
            continue
        key = ev.user_id.encode()
        target = partition_of(key)
        issuer = _issuer(rec) if rec.headers else None
        values = build_verdicts(ev, result, topic, partition, offset, signer, issuer)
        out += [(target, key, value) for value in values]
        if rec.headers:
            _add_replies(b, rec, key, values)


def _issuer(rec) -> str | None:
    """The record's `issued-by` header (the support console's); a bad one is logged and left out."""
    try:
        return issued_by(rec.headers)
    except ValueError as err:
        log.warning(
            "bad issued-by header: the verdicts name nobody",
            extra={"partition": rec.partition, "offset": rec.offset, "detail": str(err)},
        )
        return None


def _add_replies(b: PartitionBatch, rec, key: bytes, values: list[bytes]) -> None:
    try:
        reply = reply_target(rec.headers)
    except BadReplyHeader as err:
        b.bad_reply_headers += 1
        log.warning(
            "bad reply header: no reply sent (the verdict is on the verdicts topic)",
            extra={"partition": rec.partition, "offset": rec.offset, "detail": str(err)},
        )
        return
    if reply is not None:
        b.replies += [(*reply, key, value) for value in values]


def observe(metrics: Metrics, b: PartitionBatch, highwater: int | None) -> None:
    """Count a published batch's decisions, revokes and the partition's lag."""
    # Count per (type, code) first: a labelled metric costs microseconds per call.
    counts = Counter((ev.type, r.code) for (_o, _t, ev), r in zip(b.events, b.results or (), strict=True))
    for (kind, code), n in counts.items():
        outcome = rules.OUTCOMES.get(code)
        if outcome is not None:
            metrics.events.labels(kind, *outcome).inc(n)
    if b.bad_reply_headers:
        metrics.replies.labels("bad_header").inc(b.bad_reply_headers)
    revoked = sum(len(r.evicted) for r in b.results or ())
    if revoked:
        metrics.revokes.inc(revoked)
    expired = sum(len(r.expired) for r in b.results or ())
    if expired:
        metrics.expired.inc(expired)
    leases = getattr(b.results, "leases", None)  # the script's ledger counts after the batch
    if leases is not None:
        metrics.set_active_leases(b.tp.partition, leases)
    if highwater is not None:
        metrics.lag.labels(str(b.tp.partition)).set(max(0, highwater - b.last_offset - 1))
