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
  under the policy the event resolves to (decision, reason, activeStreams, maxStreams,
  leaseExpiresAt, decidedAt, policy, the deny advice `conflicts` and `nextFreeAt`, the ids;
  a terminate's revoke of its target says `terminated`);
- no user ever holds more than the limit of its policy, nor more leases of a device class
  than its cap: neither in the model's trace nor in any verdict's activeStreams;
- the dead-letter topic holds exactly the bad records (by source partition and offset),
  each with the error decode_event names (a valid value whose key is not its userId is
  `key_mismatch`; a valid one reusing a remembered eventId of its user for another event,
  `event_id_conflict`), its key, value and original headers (those named like the processor's
  own as `original.<name>`; a copy marked `truncated` holds a prefix of the value);
- the leases in Redis at the end (LeaseStore.active_leases at each user's clock) equal
  the model's (ReferenceModel.active_leases);
- the session ledger: every `expire` verdict the model pushes (stream time per partition)
  came, equal to the model's, and no other; and the invariant, read from the verdicts alone
  (producer_sim.ledger.Ledger): every lease that starts ends in exactly one of stopped,
  evicted, terminated, expired, or is still active at the end with its expiry after its
  partition's stream time.

Policies come from the policies topic (`policies`, a PolicyTable of the whole topic; they
must not have changed during the run); without one, every event gets the settings.

The model is kept per partition, as the processor keeps state per partition. After an
operator accepted Redis state loss, pass `resets={partition: offset}`: the model of that
partition starts empty again at that offset, as the processor did.

`python -m producer_sim.verifier --events-topic ... --verdicts-topic ...` prints the figures;
exit status 0 when clean, 1 when not, 2 when the check could not be done.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from processor.policies import Policy, PolicyTable
from processor.reference_model import Decision, ReferenceModel
from processor.wire import DecodedEvent, DecodeError, decode_event
from producer_sim.expect import differences, main_fields, revoke_fields
from producer_sim.kafka_io import committed_offsets, read_policy_table, read_topic
from producer_sim.verify_ledger import LedgerCheck
from producer_sim.verify_report import VerifyReport, main
from producer_sim.verify_side_effects import check_dead_letters, check_redis_state

__all__ = ["Verifier", "VerifyReport", "committed_offsets", "main", "read_topic", "run_verifier", "verify"]

# (model's reason, verdict's reason) pairs that the event's effect applied a second time
# would produce: the first application made the lease, the second sees it; or an extra
# lease left by a double start fills the last slot.
_DOUBLE_APPLY = {
    ("started", "already_active"),
    ("stopped", "not_active"),
    ("started", "limit_exceeded"),
    ("no_lease", "renewed"),
    ("terminated", "not_active"),
}


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
    plan: str | None = None
    alternatives: list[Decision] = field(default_factory=list)  # other decisions (eventId beyond memory)
    main_ids: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)


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
        policies: PolicyTable | None = None,
    ) -> None:
        self.events_topic = events_topic
        self.rules = (max_streams, lease_ttl_ms, policy, event_id_memory)
        self.max_streams = max_streams
        self.policies = policies
        self.limits: dict[str, int] = {}  # userId -> the limit of its last event's policy
        self.resets = dict(resets or {})
        self.models: dict[int, ReferenceModel] = {}
        self.expected: dict[tuple[str, str], _Expected] = {}  # (userId, eventId shown) -> expected
        self.bad: dict[tuple[int, int], bytes | None] = {}  # (partition, offset) -> value
        # (partition, offset) -> (error code, key, headers) of each bad record
        self.bad_records: dict[tuple[int, int], tuple[str, bytes | None, list]] = {}
        # (userId, events partition) -> offset of the event whose verdict came last
        self._last_position: dict[tuple[str, int], int] = {}
        self.report = VerifyReport()
        self.ledger = LedgerCheck(self.report)

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
        policy = self.policies.resolve(ev.user_id, ev.plan) if self.policies is not None else None
        decision = model.apply(
            ev.user_id, ev.session_id, ev.type, timestamp, ev.event_id, ev.device_id, ev.content_id,
            policy=policy, device_class=ev.device_class, target_session_id=ev.target_session_id,
            partition=partition,
        )  # fmt: skip
        self.ledger.expect(decision.expired)
        decision = replace(decision, expired=())  # the record's own verdicts, as a duplicate gets them
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
        self._check_limits(model, ev.user_id, policy or model.settings_policy(), rec.offset)
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
            ev.user_id, ev.session_id, ev.type, shown, decision, partition, rec.offset, ev.plan
        )

    def _check_limits(self, model: ReferenceModel, user_id: str, policy: Policy, offset: int) -> None:
        """The model's trace: the user's leases within the policy's limit and class caps."""
        self.limits[user_id] = policy.max_streams
        user = model.users[user_id]
        active = [lease for lease in user.leases.values() if lease.expires_at > user.clock]
        by_class: dict[str | None, int] = {}
        for lease in active:
            by_class[lease.device_class] = by_class.get(lease.device_class, 0) + 1
        over = [c for c, cap in policy.classes.items() if by_class.get(c, 0) > cap]
        if len(active) > policy.max_streams or over:
            self.report.over_limit += 1
            self.report._example(
                {"kind": "model_over_limit", "userId": user_id, "offset": offset, "classes": over}
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
            if not self.ledger.verdict(verdict):
                self._check(verdict)

    @staticmethod
    def _looks_double(a: dict, b: dict) -> bool:
        pair = (a.get("reason"), b.get("reason"))
        return pair in _DOUBLE_APPLY or pair[::-1] in _DOUBLE_APPLY

    def _check(self, v: dict) -> None:
        rep = self.report
        active, limit = v.get("activeStreams"), v.get("maxStreams")
        exp = self.expected.get((v.get("userId"), v.get("eventId")))  # type: ignore[arg-type]
        if isinstance(active, int) and (
            (isinstance(limit, int) and active > limit)
            or (exp is not None and active > exp.decision.max_streams)
        ):
            rep.over_limit += 1
            rep._example({"kind": "verdict_over_limit", "verdict": v})
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
            wrong = differences(v, main_fields(exp.user_id, exp.session_id, exp.type, exp.plan, d))
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
        token_due = v.get("decision") == "allow" and exp.type in ("start", "heartbeat")
        if token_due != (v.get("token") is not None):
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
        wrong = differences(v, revoke_fields(exp.user_id, exp.type, exp.plan, d))
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

        self.ledger.finish(self.models)

    def feed_dead_letters(self, records: list[ConsumerRecord], source_topic: str) -> None:
        """The dead-letter topic holds exactly the bad records, each faithfully copied."""
        check_dead_letters(self.report, self.bad, self.bad_records, records, source_topic)

    async def check_redis(self, redis_url: str, cluster: bool = False) -> None:
        """The leases in Redis (a Redis Cluster with `cluster`) at each user's clock against the model's."""
        await check_redis_state(self, redis_url, cluster)


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
    policies_topic: str | None = None,
    policies: PolicyTable | None = None,
    redis_cluster: bool = False,
) -> Verifier:
    """Read the topics (and Redis, when `redis_url` is given) and check them; the Verifier
    with its report and its per-event expectations. Each event's policy comes from
    `policies`, else from the whole `policies_topic` when given, else the settings."""
    if policies is None and policies_topic is not None:
        policies = await read_policy_table(bootstrap, policies_topic, max_streams, policy)
    v = Verifier(events_topic, max_streams, lease_ttl_ms, policy, event_id_memory, resets, policies)
    v.feed_events(await read_topic(bootstrap, events_topic))
    v.feed_verdicts(await read_topic(bootstrap, verdicts_topic))
    v.finish_verdicts()
    if dlq_topic is not None:
        v.feed_dead_letters(await read_topic(bootstrap, dlq_topic), events_topic)
    else:
        v.report.dlq_unique = v.report.bad_records  # not checked
    if redis_url is not None:
        await v.check_redis(redis_url, redis_cluster)
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


if __name__ == "__main__":
    sys.exit(main())
