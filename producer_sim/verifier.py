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
  a terminate's revoke of its target says `terminated`; an event with the `issued-by` header
  has `issuedBy` on its verdicts, others none);
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

The model is kept per partition, as the processor keeps state per partition, in the
expectations it shares with the live checker (producer_sim/expectations.py). After an
operator accepted Redis state loss, pass `resets={partition: offset}`: the model of that
partition starts empty again at that offset, as the processor did.

`python -m producer_sim.verifier --events-topic ... --verdicts-topic ...` prints the figures;
exit status 0 when clean, 1 when not, 2 when the check could not be done.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from processor.connections import KafkaAccess, RedisAccess, kafka_access, redis_access
from processor.policies import Policy, PolicyTable
from processor.reference_model import ReferenceModel
from processor.wire import DecodedEvent, DecodeError, decode_event
from producer_sim.expect import issuer
from producer_sim.expectations import Expectations, Expected, Match
from producer_sim.kafka_io import committed_offsets, read_policy_table, read_topic
from producer_sim.settings import SimSettings
from producer_sim.verify_ledger import LedgerCheck
from producer_sim.verify_report import VerifyReport
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
        self.core = Expectations(max_streams, lease_ttl_ms, policy, event_id_memory)
        self.bad: dict[tuple[int, int], bytes | None] = {}  # (partition, offset) -> value
        # (partition, offset) -> (error code, key, headers) of each bad record
        self.bad_records: dict[tuple[int, int], tuple[str, bytes | None, list]] = {}
        self.report = VerifyReport()
        self.ledger = LedgerCheck(self.report)

    @property
    def models(self) -> dict[int, ReferenceModel]:
        """The reference model of each events partition."""
        return self.core.models

    @property
    def expected(self) -> dict[tuple[str, str], Expected]:
        """(userId, eventId shown) -> what the verdicts of that event must say."""
        return self.core.expected

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
                    self.core.reset(partition)  # the processor started from an empty state here
                    reset_at = None
                rep.events += 1
                try:
                    ev = decode_event(rec.value, rec.key)
                except DecodeError as err:
                    self._bad(partition, rec, err.code)
                    continue
                rep.valid_events += 1
                self._apply(partition, rec, ev)
        rep.users = sum(len(m.users) for m in self.models.values())

    def _bad(self, partition: int, rec: ConsumerRecord, code: str) -> None:
        self.report.bad_records += 1
        self.report.bad_by_error[code] += 1
        self.bad[(partition, rec.offset)] = rec.value
        self.bad_records[(partition, rec.offset)] = (code, rec.key, list(rec.headers or ()))

    def _apply(self, partition: int, rec: ConsumerRecord, ev: DecodedEvent) -> None:
        rep = self.report
        policy = self.policies.resolve(ev.user_id, ev.plan) if self.policies is not None else None
        # An event without an eventId is named as the processor names it.
        shown = ev.event_id if ev.event_id is not None else f"{self.events_topic}/{partition}/{rec.offset}"
        timestamp = rec.timestamp if rec.timestamp > 0 else 0
        issued = issuer(rec.headers)
        got = self.core.expect(partition, rec.offset, ev, timestamp, policy, event_id=shown, issued_by=issued)
        rep.expiries += got.new_expiries
        if got.status == "dead_letter":
            # A remembered eventId of another event: not decided but dead-lettered
            # (event_id_conflict), so it counts as a bad record, not a valid one.
            rep.valid_events -= 1
            self._bad(partition, rec, got.decision.dead_letter or "")
            return
        model = self.core.model(partition)
        self._check_limits(model, ev.user_id, policy or model.settings_policy(), rec.offset)
        if got.status != "new":
            rep.upstream_duplicates += 1
            if got.status == "forgotten":
                # The eventId was forgotten (beyond EVENT_ID_MEMORY): decided anew, same verdictId.
                rep.mismatch(
                    "duplicate_beyond_event_id_memory", userId=ev.user_id, eventId=shown, offset=rec.offset
                )
            return
        rep.distinct_events += 1
        rep.expected_verdicts += 1 + len(got.decision.evicted)

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
        records = sorted(records, key=lambda r: (r.partition, r.offset))
        for rec in records:
            rep.verdicts += 1
            value = rec.value or b""
            try:
                verdict = orjson.loads(value)
                if type(verdict) is not dict or type(verdict["verdictId"]) is not str:
                    raise TypeError("not a verdict object")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                rep.mismatch("malformed_verdict", value=value[:200].decode(errors="replace"))
                continue
            m = self.core.receive(verdict)
            if m.role in ("redelivered", "reused"):
                rep.redelivered += 1
                if m.role == "reused":
                    rep.mismatch("verdict_id_with_other_content", first=m.first, again=verdict)
                    if self._looks_double(m.first, verdict):
                        rep.applied_twice += 1
                continue
            rep.unique_verdicts += 1
            if (
                rec.key is not None
                and verdict.get("userId") is not None
                and rec.key != str(verdict["userId"]).encode()
            ):
                rep.mismatch("verdict_key", key=rec.key, verdict=verdict)
            self.ledger.feed(verdict)
            if m.role == "expire":
                self.ledger.expire(verdict, m)
            else:
                self._check(verdict, m)

    @staticmethod
    def _looks_double(a: dict, b: dict) -> bool:
        pair = (a.get("reason"), b.get("reason"))
        return pair in _DOUBLE_APPLY or pair[::-1] in _DOUBLE_APPLY

    def _check(self, v: dict, m: Match) -> None:
        rep = self.report
        active, limit = v.get("activeStreams"), v.get("maxStreams")
        exp = m.expected
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
        if m.role == "revoke":
            if m.problem is not None:
                rep.mismatch(
                    "unexpected_revoke", eventId=exp.event_id, evicted=list(exp.decision.evicted), verdict=v
                )
                return
            rep.revokes += 1
            if m.wrong:
                rep.mismatch("revoke", eventId=exp.event_id, fields=m.wrong)
            return
        after = self.core.out_of_order(exp)
        if after is not None:
            rep.mismatch("out_of_order", eventId=exp.event_id, offset=exp.offset, after=after)
        if m.problem is not None:  # second_verdict_for_event: it was decided twice
            rep.applied_twice += 1
            rep.mismatch(m.problem, eventId=exp.event_id, verdict=v)
            return
        if m.wrong:
            d = exp.decision
            double = (d.reason, v.get("reason")) in _DOUBLE_APPLY or (
                isinstance(active, int) and active > d.active_streams
            )
            if double:
                rep.applied_twice += 1
            wrong = m.wrong
            kind = "decision" if "decision" in wrong or "reason" in wrong else "+".join(sorted(wrong))
            rep.mismatch(kind, eventId=exp.event_id, partition=exp.partition, offset=exp.offset, fields=wrong)
        token_due = v.get("decision") == "allow" and exp.type in ("start", "heartbeat")
        if token_due != (v.get("token") is not None):
            rep.mismatch("token", eventId=exp.event_id, verdict=v)

    # the end -------------------------------------------------------------------------------
    def finish_verdicts(self) -> None:
        rep = self.report
        for exp, own, revokes in self.core.incomplete():
            gaps = (["verdict"] if own else []) + [f"revoke {sid}" for sid in revokes]
            rep.lost += len(gaps)
            rep._example({"kind": "lost", "userId": exp.user_id, "eventId": exp.event_id,
                          "partition": exp.partition, "offset": exp.offset, "missing": gaps})  # fmt: skip
        self.ledger.finish(self.core)

    def feed_dead_letters(self, records: list[ConsumerRecord], source_topic: str) -> None:
        """The dead-letter topic holds exactly the bad records, each faithfully copied."""
        check_dead_letters(self.report, self.bad, self.bad_records, records, source_topic)

    async def check_redis(self, redis_url: RedisAccess | str, cluster: bool = False) -> None:
        """The leases in Redis (a Redis Cluster with `cluster`) at each user's clock against the model's."""
        await check_redis_state(
            self.report, self.events_topic, self.rules, self.models, self.limits, redis_url, cluster
        )


async def run_verifier(
    bootstrap: KafkaAccess | str,
    events_topic: str,
    verdicts_topic: str,
    dlq_topic: str | None = None,
    redis_url: RedisAccess | str | None = None,
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
    bootstrap: KafkaAccess | str,
    events_topic: str,
    verdicts_topic: str,
    dlq_topic: str | None = None,
    redis_url: RedisAccess | str | None = None,
    **rules: Any,
) -> VerifyReport:
    """Read the topics (and Redis, when `redis_url` is given) and check them against the model."""
    v = await run_verifier(bootstrap, events_topic, verdicts_topic, dlq_topic, redis_url, **rules)
    return v.report


def main(argv: list[str] | None = None) -> int:
    """`python -m producer_sim.verifier`: check the topics named by the environment or the flags."""
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
    p.add_argument("--policies-topic", help="policies topic (POLICIES_TOPIC) the events resolve in")
    p.add_argument("--no-policies", action="store_true", help="every event gets the settings' limits")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    s = SimSettings()
    events_topic = args.events_topic or s.events_topic
    try:
        report = asyncio.run(
            verify(
                kafka_access(s, args.bootstrap),
                events_topic,
                args.verdicts_topic or s.verdicts_topic,
                None if args.no_dlq else (args.dlq_topic or s.dlq_topic),
                None if args.no_redis else redis_access(s, args.redis_url),
                max_streams=s.max_streams,
                lease_ttl_ms=s.lease_ttl_ms,
                policy=s.overflow_policy,
                event_id_memory=s.event_id_memory,
                policies_topic=None if args.no_policies else (args.policies_topic or s.policies_topic),
                redis_cluster=s.redis_cluster,
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
