"""After a run: read the whole events, verdicts and dead-letter topics and check them all.

The checker (producer_sim/checker.py) watches a run as it happens and knows only what its
own producer sent. The verifier works afterwards and knows only the topics: it replays
the WHOLE events topic through the reference model exactly as the processor sees it (per
partition, in offset order, with the record timestamps; records that
`processor.wire.decode_event` rejects are the bad ones) and then holds every verdict, the
dead letters and the final lease state in Redis against the model:

- every valid event has its verdict (matched on userId + eventId; an event without an
  eventId is identified as "<topic>/<partition>/<offset>", as the processor names it),
  and every lease the model evicts has its `revoke` verdict;
- every copy of one verdictId is identical, and each verdict equals the model's decision
  (decision, reason, activeStreams, maxStreams, leaseExpiresAt, decidedAt, and the ids);
- no user ever holds more than the limit: neither in the model's trace nor in any
  verdict's activeStreams;
- the dead-letter topic holds exactly the bad records (by source partition and offset),
  each with the error decode_event names (a valid value whose key is not its userId is
  `key_mismatch`; a valid one reusing a remembered eventId of its user for another event,
  `event_id_conflict`), its key, value and original headers (those named like the processor's
  own as `original.<name>`; a copy marked `truncated` holds a prefix of the value);
- the leases in Redis at the end (LeaseStore.active_leases at each user's clock) equal
  the model's (ReferenceModel.active_leases).

The model is kept per partition, as the processor keeps state per partition. After an
operator accepted Redis state loss, pass `resets={partition: offset}`: the model of that
partition starts empty again at that offset, as the processor did.

`python -m producer_sim.verifier --events-topic ... --verdicts-topic ...` prints the figures;
exit status 0 when clean, 1 when not, 2 when the check could not be done.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from processor.publisher import DLQ_HEADERS
from processor.reference_model import Decision, ReferenceModel
from processor.wire import DecodedEvent, DecodeError, decode_event
from producer_sim.runner import topic_partitions

MAX_EXAMPLES = 20
_FIELDS = ("decision", "reason", "activeStreams", "maxStreams", "leaseExpiresAt", "decidedAt")
# (model's reason, verdict's reason) pairs that the event's effect applied a second time
# would produce: the first application made the lease, the second sees it; or an extra
# lease left by a double start fills the last slot.
_DOUBLE_APPLY = {
    ("started", "already_active"),
    ("stopped", "not_active"),
    ("started", "limit_exceeded"),
    ("no_lease", "renewed"),
}


@dataclass
class VerifyReport:
    """The figures of one verification. `clean` is the verdict on the run."""

    events: int = 0  # records in the events topic
    valid_events: int = 0  # records decode_event accepts
    distinct_events: int = 0  # distinct event identities among them (upstream duplicates fold)
    upstream_duplicates: int = 0  # valid records whose identity appeared before
    bad_records: int = 0  # records decode_event rejects
    expected_verdicts: int = 0  # distinct verdicts the model calls for (own + revokes)
    verdicts: int = 0  # verdict records read
    unique_verdicts: int = 0  # distinct verdictIds
    redelivered: int = 0  # copies of a verdictId beyond the first
    revokes: int = 0  # distinct revoke verdicts
    lost: int = 0  # expected verdicts that never came
    applied_twice: int = 0  # verdicts or states showing an effect applied twice
    mismatches: int = 0  # everything that disagrees with the model (lost and applied_twice aside)
    over_limit: int = 0  # steps at which a user held more than the limit (model trace or verdicts)
    unexpected: int = 0  # verdicts for no known event
    dlq: int = 0  # dead-letter records read
    dlq_unique: int = 0  # distinct source (partition, offset) among them
    dlq_missing: int = 0  # bad records without a dead letter
    dlq_unexpected: int = 0  # dead letters of records that are valid or unknown, or altered
    dlq_wrong_error: int = 0  # dead letters whose `error` header is not the record's error
    bad_by_error: Counter[str] = field(default_factory=Counter)  # bad records by decode_event's code
    users: int = 0
    users_checked_in_redis: int | None = None  # None: the Redis state was not checked
    state_mismatches: int = 0  # users whose Redis leases differ from the model's
    mismatch_kinds: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.lost == 0
            and self.applied_twice == 0
            and self.mismatches == 0
            and self.over_limit == 0
            and self.unexpected == 0
            and self.state_mismatches == 0
            and self.dlq_missing == 0
            and self.dlq_unexpected == 0
            and self.dlq_wrong_error == 0
            and self.dlq_unique == self.bad_records
        )

    def figures(self) -> dict[str, Any]:
        """The figures as plain data (no examples)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("mismatch_kinds", "examples")}
        out["mismatch_kinds"] = dict(self.mismatch_kinds)
        out["bad_by_error"] = dict(self.bad_by_error)
        out["clean"] = self.clean
        return out

    def summary(self) -> str:
        return (
            f"events={self.events} valid={self.valid_events} distinct={self.distinct_events} "
            f"dups={self.upstream_duplicates} bad={self.bad_records} verdicts={self.verdicts} "
            f"unique={self.unique_verdicts} redelivered={self.redelivered} lost={self.lost} "
            f"applied_twice={self.applied_twice} mismatches={self.mismatches} over_limit={self.over_limit} "
            f"unexpected={self.unexpected} dlq={self.dlq} dlq_unique={self.dlq_unique} "
            f"state_mismatches={self.state_mismatches} users={self.users} clean={self.clean}"
        )

    def _example(self, example: dict[str, Any]) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(orjson.loads(orjson.dumps(example, default=repr)))

    def mismatch(self, kind: str, **detail: Any) -> None:
        self.mismatches += 1
        self.mismatch_kinds[kind] += 1
        self._example({"kind": kind, **detail})


@dataclass
class _Expected:
    """What the verdicts of one event identity must say."""

    user_id: str
    session_id: str
    type: str
    event_id: str  # as shown in the verdict
    decision: Decision
    partition: int
    offset: int  # of the first record with this identity
    alternatives: list[Decision] = field(default_factory=list)  # other decisions (eventId beyond memory)
    main_ids: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------------------------
# reading topics
# --------------------------------------------------------------------------------------------


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[ConsumerRecord]:
    """Every record of `topic`, from the beginning to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    partitions = await topic_partitions(bootstrap, topic)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets in {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for tp, recs in batch.items():
                out.extend(r for r in recs if r.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> committed offset of `group` on `topic` (partitions without one are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }


# --------------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------------


class Verifier:
    def __init__(
        self,
        events_topic: str,
        max_streams: int = 3,
        lease_ttl_ms: int = 90_000,
        policy: str = "reject",
        event_id_memory: int = 16,
        resets: dict[int, int] | None = None,
    ) -> None:
        self.events_topic = events_topic
        self.rules = (max_streams, lease_ttl_ms, policy, event_id_memory)
        self.max_streams = max_streams
        self.resets = dict(resets or {})
        self.models: dict[int, ReferenceModel] = {}
        self.expected: dict[tuple[str, str], _Expected] = {}  # (userId, eventId shown) -> expected
        self.bad: dict[tuple[int, int], bytes | None] = {}  # (partition, offset) -> value
        # (partition, offset) -> (error code, key, headers) of each bad record
        self.bad_records: dict[tuple[int, int], tuple[str, bytes | None, list]] = {}
        # (userId, events partition) -> offset of the event whose verdict came last
        self._last_position: dict[tuple[str, int], int] = {}
        self.report = VerifyReport()

    def _model(self, partition: int) -> ReferenceModel:
        model = self.models.get(partition)
        if model is None:
            max_streams, ttl, policy, memory = self.rules
            model = self.models[partition] = ReferenceModel(max_streams, ttl, policy, memory)
        return model

    # events --------------------------------------------------------------------------------
    def feed_events(self, records: list[ConsumerRecord]) -> None:
        """Replay the events topic through the model: per partition, in offset order."""
        rep = self.report
        by_partition: dict[int, list[ConsumerRecord]] = {}
        for rec in records:
            by_partition.setdefault(rec.partition, []).append(rec)
        for partition, recs in sorted(by_partition.items()):
            recs.sort(key=lambda r: r.offset)
            reset_at = self.resets.get(partition)
            for rec in recs:
                if reset_at is not None and rec.offset >= reset_at:
                    self.models.pop(partition, None)  # the processor started from an empty state here
                    reset_at = None
                rep.events += 1
                try:
                    ev = decode_event(rec.value, rec.key)
                except DecodeError as err:
                    rep.bad_records += 1
                    rep.bad_by_error[err.code] += 1
                    self.bad[(partition, rec.offset)] = rec.value
                    self.bad_records[(partition, rec.offset)] = (err.code, rec.key, list(rec.headers or ()))
                    continue
                rep.valid_events += 1
                self._apply(partition, rec, ev)
        rep.users = sum(len(m.users) for m in self.models.values())

    def _apply(self, partition: int, rec: ConsumerRecord, ev: DecodedEvent) -> None:
        rep = self.report
        model = self._model(partition)
        timestamp = rec.timestamp if rec.timestamp > 0 else 0
        decision = model.apply(
            ev.user_id, ev.session_id, ev.type, timestamp, ev.event_id, ev.device_id, ev.content_id
        )
        if decision.dead_letter is not None:
            # A remembered eventId of another event: not decided but dead-lettered
            # (event_id_conflict), so it counts as a bad record, not a valid one.
            rep.valid_events -= 1
            rep.bad_records += 1
            rep.bad_by_error[decision.dead_letter] += 1
            source = (partition, rec.offset)
            self.bad[source] = rec.value
            self.bad_records[source] = (decision.dead_letter, rec.key, list(rec.headers or ()))
            return
        if len(model.active_leases(ev.user_id)) > self.max_streams:
            rep.over_limit += 1
            rep._example({"kind": "model_over_limit", "userId": ev.user_id, "offset": rec.offset})
        shown = ev.event_id if ev.event_id is not None else f"{self.events_topic}/{partition}/{rec.offset}"
        key = (ev.user_id, shown)
        known = self.expected.get(key)
        if known is not None:
            rep.upstream_duplicates += 1
            if decision != known.decision and decision not in known.alternatives:
                # The eventId was forgotten (beyond EVENT_ID_MEMORY): decided anew, same verdictId.
                known.alternatives.append(decision)
                rep.mismatch(
                    "duplicate_beyond_event_id_memory", userId=ev.user_id, eventId=shown, offset=rec.offset
                )
            return
        rep.distinct_events += 1
        rep.expected_verdicts += 1 + len(decision.evicted)
        self.expected[key] = _Expected(
            ev.user_id, ev.session_id, ev.type, shown, decision, partition, rec.offset
        )

    # verdicts ------------------------------------------------------------------------------
    def feed_verdicts(self, records: list[ConsumerRecord]) -> None:
        rep = self.report
        first: dict[str, bytes] = {}
        parsed: dict[str, dict] = {}
        records = sorted(records, key=lambda r: (r.partition, r.offset))
        for rec in records:
            rep.verdicts += 1
            value = rec.value or b""
            try:
                verdict = orjson.loads(value)
                verdict_id = verdict["verdictId"]
                if type(verdict) is not dict or type(verdict_id) is not str:
                    raise TypeError("not a verdict object")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                rep.mismatch("malformed_verdict", value=value[:200].decode(errors="replace"))
                continue
            seen = first.get(verdict_id)
            if seen is not None:
                rep.redelivered += 1
                if seen != value and parsed[verdict_id] != verdict:
                    rep.mismatch("verdict_id_with_other_content", first=parsed[verdict_id], again=verdict)
                    if self._looks_double(parsed[verdict_id], verdict):
                        rep.applied_twice += 1
                continue
            first[verdict_id] = value
            parsed[verdict_id] = verdict
            rep.unique_verdicts += 1
            if (
                rec.key is not None
                and verdict.get("userId") is not None
                and rec.key != str(verdict["userId"]).encode()
            ):
                rep.mismatch("verdict_key", key=rec.key, verdict=verdict)
            self._check(verdict)

    @staticmethod
    def _looks_double(a: dict, b: dict) -> bool:
        pair = (a.get("reason"), b.get("reason"))
        return pair in _DOUBLE_APPLY or pair[::-1] in _DOUBLE_APPLY

    def _check(self, v: dict) -> None:
        rep = self.report
        active, limit = v.get("activeStreams"), v.get("maxStreams")
        if (
            isinstance(active, int)
            and isinstance(limit, int)
            and (active > limit or active > self.max_streams)
        ):
            rep.over_limit += 1
            rep._example({"kind": "verdict_over_limit", "verdict": v})
        exp = self.expected.get((v.get("userId"), v.get("eventId")))  # type: ignore[arg-type]
        if exp is None:
            rep.unexpected += 1
            rep._example({"kind": "unexpected_verdict", "verdict": v})
            return
        if v.get("decision") == "revoke":
            self._check_revoke(v, exp)
            return
        exp.main_ids.add(v["verdictId"])
        # The first verdicts of one user's events come in the order of the events.
        position = (exp.user_id, exp.partition)
        if exp.offset < self._last_position.get(position, -1):
            rep.mismatch(
                "out_of_order", eventId=exp.event_id, offset=exp.offset, after=self._last_position[position]
            )
        else:
            self._last_position[position] = exp.offset
        if len(exp.main_ids) > 1:
            # Two different verdicts for one event: it was decided twice.
            rep.applied_twice += 1
            rep.mismatch("second_verdict_for_event", eventId=exp.event_id, verdict=v)
            return
        candidates = [exp.decision, *exp.alternatives]
        wrong: dict[str, Any] = {}
        for d in candidates:
            want = {
                "userId": exp.user_id, "sessionId": exp.session_id, "type": exp.type,
                "decision": d.decision, "reason": d.reason, "activeStreams": d.active_streams,
                "maxStreams": d.max_streams, "leaseExpiresAt": d.lease_expires_at, "decidedAt": d.decided_at,
            }  # fmt: skip
            wrong = {k: {"expected": w, "got": v.get(k)} for k, w in want.items() if v.get(k) != w}
            if not wrong:
                break
        if wrong:
            d = exp.decision
            double = (d.reason, v.get("reason")) in _DOUBLE_APPLY or (
                isinstance(active, int) and active > d.active_streams
            )
            if double:
                rep.applied_twice += 1
            kind = "decision" if "decision" in wrong or "reason" in wrong else "+".join(sorted(wrong))
            rep.mismatch(kind, eventId=exp.event_id, partition=exp.partition, offset=exp.offset, fields=wrong)
        wants_token = v.get("decision") == "allow" and exp.type in ("start", "heartbeat")
        if wants_token != (v.get("token") is not None):
            rep.mismatch("token", eventId=exp.event_id, verdict=v)

    def _check_revoke(self, v: dict, exp: _Expected) -> None:
        rep = self.report
        d = exp.decision
        sid = v.get("sessionId")
        if sid not in d.evicted or sid in exp.revoked:
            rep.mismatch("unexpected_revoke", eventId=exp.event_id, evicted=list(d.evicted), verdict=v)
            return
        exp.revoked.add(sid)  # type: ignore[arg-type]
        rep.revokes += 1
        want = {
            "userId": exp.user_id, "type": exp.type, "decision": "revoke", "reason": "evicted",
            "activeStreams": d.active_streams, "maxStreams": d.max_streams, "leaseExpiresAt": None,
            "decidedAt": d.decided_at, "token": None,
        }  # fmt: skip
        wrong = {k: {"expected": w, "got": v.get(k)} for k, w in want.items() if v.get(k) != w}
        if wrong:
            rep.mismatch("revoke", eventId=exp.event_id, fields=wrong)

    # the end -------------------------------------------------------------------------------
    def finish_verdicts(self) -> None:
        rep = self.report
        for exp in self.expected.values():
            gaps = [] if exp.main_ids else ["verdict"]
            gaps += [f"revoke {sid}" for sid in exp.decision.evicted if sid not in exp.revoked]
            if gaps:
                rep.lost += len(gaps)
                rep._example({"kind": "lost", "userId": exp.user_id, "eventId": exp.event_id,
                              "partition": exp.partition, "offset": exp.offset, "missing": gaps})  # fmt: skip

    def feed_dead_letters(self, records: list[ConsumerRecord], source_topic: str) -> None:
        rep = self.report
        seen: set[tuple[int, int]] = set()
        for rec in records:
            rep.dlq += 1
            headers = {k: v for k, v in (rec.headers or ())}
            try:
                source = (int(headers["source.partition"]), int(headers["source.offset"]))
                topic = headers["source.topic"].decode()
            except (KeyError, ValueError):
                rep.dlq_unexpected += 1
                rep._example({"kind": "dlq_without_source_headers", "headers": list(headers)})
                continue
            if "error" not in headers or topic != source_topic or source not in self.bad:
                rep.dlq_unexpected += 1
                rep._example({"kind": "dlq_unexpected", "source": source, "topic": topic})
                continue
            self._check_dead_letter(rec, source)
            seen.add(source)
        rep.dlq_unique = len(seen)
        rep.dlq_missing = len(set(self.bad) - seen)

    def _check_dead_letter(self, rec: ConsumerRecord, source: tuple[int, int]) -> None:
        """The copy of one bad record: its error, its key, value and headers as received."""
        rep = self.report
        code, key, original = self.bad_records[source]
        ours = [(k, v) for k, v in rec.headers or () if k in DLQ_HEADERS]
        names = [k for k, _ in ours]
        if len(names) != len(set(names)) or dict(ours).get("error") != code.encode():
            rep.dlq_wrong_error += 1
            rep._example({"kind": "dlq_error", "source": source, "expected": code, "headers": ours})
        truncated = dict(ours).get("truncated")
        value = self.bad[source]
        if truncated is None:
            altered = rec.value != value or rec.key != key
        else:  # too large to copy whole: a prefix of the value, the original size in the header
            altered = truncated != str(len(value or b"")).encode() or not (value or b"").startswith(
                rec.value or b""
            )
        # Original headers named like ours (or like a renamed one) are kept as original.<name>.
        kept = [
            (f"original.{k}" if k in DLQ_HEADERS or k.startswith("original.") else k, v) for k, v in original
        ]
        theirs = [(k, v) for k, v in rec.headers or () if k not in DLQ_HEADERS]
        if "truncated.headers" in names:
            altered = altered or theirs != kept[: len(theirs)]
        else:
            altered = altered or theirs != kept
        if altered:
            rep.dlq_unexpected += 1
            rep._example({"kind": "dlq_copy_altered", "source": source, "truncated": truncated})

    async def check_redis(self, redis_url: str) -> None:
        """The leases in Redis at each user's clock against the model's."""
        from redis.asyncio import Redis

        from processor.lease_store import LeaseStore, Rules

        rep = self.report
        max_streams, ttl, policy, memory = self.rules
        redis = Redis.from_url(redis_url)
        try:
            store = LeaseStore(redis, self.events_topic, Rules(max_streams, ttl, policy, memory, 86_400_000))
            checked = 0
            for partition, model in sorted(self.models.items()):
                for user_id in model.users:
                    want = model.active_leases(user_id)
                    state = await store.user_state(partition, user_id)
                    got_leases = await store.active_leases(partition, user_id)
                    got = {sid: lease["expiresAt"] for sid, lease in got_leases.items()}
                    checked += 1
                    if len(got) > self.max_streams:
                        rep.over_limit += 1
                    clock = None if state is None else state.get("c")
                    if got != want or (state is not None and clock != model.users[user_id].clock):
                        rep.state_mismatches += 1
                        if len(got) > len(want):
                            rep.applied_twice += 1
                        rep._example({"kind": "redis_state", "partition": partition, "userId": user_id,
                                      "model": want, "redis": got, "model_clock": model.users[user_id].clock,
                                      "redis_clock": clock})  # fmt: skip
            rep.users_checked_in_redis = checked
        finally:
            await redis.aclose()


async def run_verifier(
    bootstrap: str,
    events_topic: str,
    verdicts_topic: str,
    dlq_topic: str | None = None,
    redis_url: str | None = None,
    *,
    max_streams: int = 3,
    lease_ttl_ms: int = 90_000,
    policy: str = "reject",
    event_id_memory: int = 16,
    resets: dict[int, int] | None = None,
) -> Verifier:
    """Read the topics (and Redis, when `redis_url` is given) and check them; the Verifier
    with its report and its per-event expectations."""
    v = Verifier(events_topic, max_streams, lease_ttl_ms, policy, event_id_memory, resets)
    v.feed_events(await read_topic(bootstrap, events_topic))
    v.feed_verdicts(await read_topic(bootstrap, verdicts_topic))
    v.finish_verdicts()
    if dlq_topic is not None:
        v.feed_dead_letters(await read_topic(bootstrap, dlq_topic), events_topic)
    else:
        v.report.dlq_unique = v.report.bad_records  # not checked
    if redis_url is not None:
        await v.check_redis(redis_url)
    return v


async def verify(
    bootstrap: str,
    events_topic: str,
    verdicts_topic: str,
    dlq_topic: str | None = None,
    redis_url: str | None = None,
    **rules: Any,
) -> VerifyReport:
    """Read the topics (and Redis, when `redis_url` is given) and check them against the model."""
    v = await run_verifier(bootstrap, events_topic, verdicts_topic, dlq_topic, redis_url, **rules)
    return v.report


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from producer_sim.settings import SimSettings

    p = argparse.ArgumentParser(
        prog="python -m producer_sim.verifier",
        description="Read the whole events, verdicts and dead-letter topics and check them against the "
        "reference model (and the final leases in Redis). Defaults come from the environment.",
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--events-topic", help="events topic (EVENTS_TOPIC)")
    p.add_argument("--verdicts-topic", help="verdicts topic (VERDICTS_TOPIC)")
    p.add_argument("--dlq-topic", help="dead-letter topic (DLQ_TOPIC)")
    p.add_argument("--no-dlq", action="store_true", help="do not check the dead-letter topic")
    p.add_argument("--redis-url", help="Redis URL (REDIS_URL) to compare the final leases")
    p.add_argument("--no-redis", action="store_true", help="do not check the lease state in Redis")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    s = SimSettings()
    events_topic = args.events_topic or s.events_topic
    try:
        report = asyncio.run(
            verify(
                args.bootstrap or s.kafka_bootstrap_servers,
                events_topic,
                args.verdicts_topic or s.verdicts_topic,
                None if args.no_dlq else (args.dlq_topic or s.dlq_topic),
                None if args.no_redis else (args.redis_url or s.redis_url),
                max_streams=s.max_streams,
                lease_ttl_ms=s.lease_ttl_ms,
                policy=s.overflow_policy,
                event_id_memory=s.event_id_memory,
            )
        )
    except (KafkaError, OSError, RuntimeError, TimeoutError) as exc:
        print(f"verifier: could not check the run: {exc!r}", file=sys.stderr)
        return 2
    if args.json:
        print(
            orjson.dumps(
                {**report.figures(), "examples": report.examples}, option=orjson.OPT_INDENT_2
            ).decode()
        )
    else:
        for name, value in report.figures().items():
            print(f"{name:>24}: {value}")
        for example in report.examples:
            print(f"  example: {orjson.dumps(example).decode()[:400]}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
