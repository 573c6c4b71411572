"""The playback gateway's stand-in: checks every verdict against the reference model.

The runner calls `expect()` for each event just before it is produced, in produce order
(per user that is the log order, the producer being idempotent), with the record
timestamp; the reference model decides what the verdict must say. `on_verdict()` takes
each verdict record as consumed. A verdict is matched to its event by userId + eventId; a revoke
verdict to the eviction its event caused. Verdicts are deduplicated on verdictId: an
identical redelivery is counted, a different content under a known verdictId is a mismatch.
A malformed record (`expect_malformed`: a bad value, or a valid one under a key that is not
its userId) must get no verdict: the processor dead-letters it.

Each event is decided under the policy it resolves to in `policies` (a PolicyTable filled
from the policies topic, fixed for the run; None: the settings), so every verdict's
`policy`, `maxStreams` and deny advice (`conflicts`, `nextFreeAt`) are checked too, and a
terminate's revoke of its target (reason `terminated`) like an eviction's.

The session ledger: given the events topic's partition count (`partitions`), the model
follows each partition's stream time (produce order is log order per partition) and every
`expire` verdict is checked and awaited like the others. Without it each user is its own
partition: `expire` verdicts are counted (`expired`), not checked.

What the verdicts must say, their matching and dedup, and what is still missing come from
producer_sim/expectations.py, shared with the offline verifier (a model of `model`'s rules
per partition; `model` itself keeps no state). The checker adds what is live: the user
kinds, acks and latency, the JWT check, the verdicts still awaited and the run's figures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from processor.partitioning import partition_for
from processor.policies import PolicyTable
from processor.reference_model import Decision, ReferenceModel
from processor.wire import Verdict
from producer_sim.expect import ADVISED_REASONS, wants_token
from producer_sim.expectations import Expectations, Expected, Match
from producer_sim.population import SimEvent

MAX_EXAMPLES = 20


@dataclass(slots=True)
class _Live:
    """What the checker adds to an event's expectations: for the report and the latency."""

    kind: str  # the user's kind
    acked_at: float | None = None


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class Checker:
    def __init__(
        self,
        model: ReferenceModel,
        jwt_secret: str | None = None,
        policies: PolicyTable | None = None,
        partitions: int | None = None,
        event_partitioner: str = "murmur2",
    ) -> None:
        # `model` gives the rules; the expectations keep a fresh model of them per partition.
        self.model = model
        self.core = Expectations(model.max_streams, model.lease_ttl_ms, model.policy, model.event_id_memory)
        self.partitions = partitions
        self.event_partitioner = event_partitioner  # EVENT_PARTITIONER: the hash the run produces with
        self._partition_of: dict[str, int] = {}
        self.expired = 0  # expire verdicts received (distinct)
        self.policies = policies  # set before the first expect(); fixed for the run
        self.jwt_secret = jwt_secret
        self._mac = hmac.new(jwt_secret.encode(), digestmod=hashlib.sha256) if jwt_secret else None
        self._live: dict[str, _Live] = {}  # eventId -> the event's live record
        self.malformed_event_ids: set[str] = set()
        self.dead_lettered: Counter[str] = Counter()  # valid events the model dead-letters, by error
        self._user_seq: Counter[str] = Counter()
        self._latency_pending: dict[str, list[float]] = {}  # eventId -> receive times before its ack
        self.outstanding = 0  # verdicts still expected (own + revokes)

        self.received = 0  # verdict records consumed
        self.unique = 0
        self.redelivered = 0  # identical copies of a verdict already seen
        self.malformed_verdicts = 0
        self.unexpected = 0  # eventId unknown to this run (another producer, an earlier run)
        self.mismatches = 0
        self.mismatch_kinds: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.by_decision: Counter[str] = Counter()
        self.by_reason: Counter[str] = Counter()
        self.by_decision_reason: Counter[tuple[str, str]] = Counter()
        self.by_kind: Counter[tuple[str, str]] = Counter()  # (user kind, decision)
        self.by_type_reason: Counter[tuple[str, str]] = Counter()  # (type, reason) of events' own verdicts
        self.revokes_by_reason: Counter[str] = Counter()  # revokes matched to their events
        self.starts_by_plan: Counter[tuple[str, str]] = Counter()  # (plan or "-", reason) of start verdicts
        self.advice_examples: dict[str, dict[str, Any]] = {}  # reason -> first correct deny with advice
        self.latencies_ms: list[float] = []
        self.latency_times: list[float] = []  # receive time of each latency sample
        self.missing: int | None = None  # set by finish()
        self.missing_examples: list[dict[str, Any]] = []

    # the produce side ---------------------------------------------------------------------
    def expect(self, ev: SimEvent, record_ts: int) -> Decision:
        """Feed the event to the reference model (in produce order) and remember its verdicts."""
        policy = self.policies.resolve(ev.user_id, ev.plan) if self.policies is not None else None
        seq = self._user_seq[ev.user_id] + 1  # its position among the user's events, if new
        got = self.core.expect(
            self._partition(ev.user_id), seq, ev, record_ts, policy, expiries=self.partitions is not None
        )
        self.outstanding += got.new_expiries
        if got.status == "dead_letter":
            # Another event under a remembered eventId: dead-lettered (event_id_conflict), no
            # verdict of its own; the verdict under that eventId stays the first event's.
            self.dead_lettered[got.decision.dead_letter or ""] += 1
        elif got.status == "new":
            self._user_seq[ev.user_id] = seq
            self._live[ev.event_id] = _Live(ev.kind)
            self.outstanding += 1 + len(got.decision.evicted)
        elif got.status != "duplicate":
            # The model forgot the eventId: the processor may too, and its verdict could differ.
            assert got.expected is not None
            self._mismatch("duplicate_beyond_memory", ev.event_id, {"expected": got.expected.decision})
        return got.decision

    def _partition(self, user_id: str) -> int:
        """The user's events partition (EVENT_PARTITIONER's), or a partition of its own."""
        p = self._partition_of.get(user_id)
        if p is None:
            if self.partitions is None:
                p = len(self._partition_of)
            else:
                p = partition_for(self.event_partitioner, user_id.encode(), self.partitions)
            self._partition_of[user_id] = p
        return p

    def remembers(self, user_id: str, event_id: str) -> bool:
        """True while the eventId is within the user's eventId memory (a re-send is a duplicate)."""
        return self.core.remembers(self._partition(user_id), user_id, event_id)

    def expect_malformed(self, event_id: str | None) -> None:
        if event_id is not None:
            self.malformed_event_ids.add(event_id)

    def acked(self, event_id: str, at: float) -> None:
        """The broker acknowledged the (first) send of this event at monotonic time `at`."""
        live = self._live.get(event_id)
        if live is None or live.acked_at is not None:
            return
        live.acked_at = at
        for received_at in self._latency_pending.pop(event_id, ()):
            self._latency(received_at, at)

    # the verdict side ---------------------------------------------------------------------
    def on_verdict(self, value: bytes | None, received_at: float) -> None:
        self.received += 1
        try:
            if value is None:
                raise ValueError("verdict record without a value")
            verdict = Verdict.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            self.malformed_verdicts += 1
            self._example({"kind": "malformed_verdict", "error": str(exc)[:300], "value": _preview(value)})
            return
        # An expire verdict is compared as received: the model has no deviceClass field.
        raw = orjson.loads(value) if verdict.type == "expire" else verdict.model_dump()
        m = self.core.receive(raw, verdict)
        if m.role == "redelivered":
            self.redelivered += 1
            return
        if m.role == "reused":
            self._mismatch(
                "verdict_id_reused_with_other_content",
                verdict.eventId,
                {"first": m.first.model_dump(), "again": raw},
            )
            return
        self.unique += 1
        self.by_decision[verdict.decision] += 1
        self.by_reason[verdict.reason] += 1
        self.by_decision_reason[(verdict.decision, verdict.reason)] += 1
        if m.role == "expire":
            self._check_expiry(verdict, m)
            return
        exp = m.expected
        if exp is None:
            if verdict.eventId in self.malformed_event_ids:
                self._mismatch("verdict_for_malformed_event", verdict.eventId, {"verdict": raw})
            else:
                self.unexpected += 1
            return
        live = self._live[exp.event_id]
        self.by_kind[(live.kind, verdict.decision)] += 1
        if live.acked_at is not None:
            self._latency(received_at, live.acked_at)
        else:
            self._latency_pending.setdefault(exp.event_id, []).append(received_at)

        after = self.core.out_of_order(exp)
        if after is not None:
            self._mismatch("out_of_order", verdict.eventId, {"seq": exp.position, "after_seq": after})

        if m.role == "revoke":
            self._check_revoke(verdict, raw, m)
        else:
            self._check_main(verdict, raw, m)

    def _check_main(self, verdict: Verdict, raw: dict[str, Any], m: Match) -> None:
        exp: Expected = m.expected  # type: ignore[assignment]
        if m.problem is not None:  # second_verdict_for_event
            self._mismatch(m.problem, verdict.eventId, {"verdict": raw})
            return
        self.outstanding -= 1
        d = exp.decision
        self.by_type_reason[(exp.type, verdict.reason)] += 1
        if exp.type == "start":
            self.starts_by_plan[(exp.plan or "-", verdict.reason)] += 1
        right = self._compare(verdict, m.wrong)
        if right and d.reason in ADVISED_REASONS and d.reason not in self.advice_examples:
            self.advice_examples[d.reason] = _jsonable(raw)
        wants = wants_token(d, exp.type)
        if wants != (verdict.token is not None):
            self._mismatch("token", verdict.eventId, {"expected_token": wants, "verdict": raw})
        elif wants and self.jwt_secret is not None:
            self._check_token(verdict)

    def _check_revoke(self, verdict: Verdict, raw: dict[str, Any], m: Match) -> None:
        exp: Expected = m.expected  # type: ignore[assignment]
        if m.problem is not None:  # unexpected_revoke
            self._mismatch(
                m.problem, verdict.eventId, {"evicted": list(exp.decision.evicted), "verdict": raw}
            )
            return
        self.outstanding -= 1
        self.revokes_by_reason[verdict.reason] += 1
        self._compare(verdict, m.wrong)

    def _check_expiry(self, verdict: Verdict, m: Match) -> None:
        self.expired += 1
        if self.partitions is None:
            return  # each user its own partition: the processor's stream time is not the model's
        if m.expiry is None or m.expiry.copies > 1:
            self._mismatch("unexpected_expiry", None, {"verdict": verdict.model_dump()})
            return
        self.outstanding -= 1
        if m.wrong:
            self._mismatch("expire", None, {"fields": m.wrong, "verdictId": verdict.verdictId})

    def _compare(self, verdict: Verdict, wrong: dict[str, Any]) -> bool:
        """True when every wanted field is as wanted; a mismatch (one per verdict) otherwise."""
        if wrong:
            kind = "decision" if "decision" in wrong or "reason" in wrong else sorted(wrong)[0]
            self._mismatch(kind, verdict.eventId, {"fields": wrong, "verdictId": verdict.verdictId})
        return not wrong

    def _check_token(self, verdict: Verdict) -> None:
        """HS256 by hand (PyJWT warns on secrets under 32 bytes, which the processor accepts)."""
        assert verdict.token is not None and self._mac is not None
        claims: Any = None
        try:
            header, payload, signature = verdict.token.split(".")
            mac = self._mac.copy()
            mac.update(f"{header}.{payload}".encode())
            if hmac.compare_digest(_b64url_decode(signature), mac.digest()):
                claims = orjson.loads(_b64url_decode(payload))
                if orjson.loads(_b64url_decode(header)).get("alg") != "HS256":
                    claims = None
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            claims = None
        if not isinstance(claims, dict):
            self._mismatch("token", verdict.eventId, {"error": "not an HS256 JWT signed with JWT_SECRET"})
            return
        expires = verdict.leaseExpiresAt or 0
        ok = (
            claims.get("sub") == verdict.userId
            and claims.get("sid") == verdict.sessionId
            and claims.get("jti") == verdict.verdictId
            and claims.get("exp") in (expires // 1000, -(-expires // 1000))
        )
        if not ok:
            self._mismatch("token", verdict.eventId, {"claims": claims})

    # bookkeeping --------------------------------------------------------------------------
    def _latency(self, received_at: float, acked_at: float) -> None:
        self.latencies_ms.append(max(0.0, (received_at - acked_at) * 1000.0))
        self.latency_times.append(received_at)

    def _mismatch(self, kind: str, event_id: str | None, detail: dict[str, Any]) -> None:
        self.mismatches += 1
        self.mismatch_kinds[kind] += 1
        self._example({"kind": kind, "eventId": event_id, **detail})

    def _example(self, example: dict[str, Any]) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(_jsonable(example))

    def finish(self) -> int:
        """Count the verdicts that never came (call after the drain). Returns the count."""
        missing = 0
        for exp, own, revokes in self.core.incomplete():
            gaps = (["verdict"] if own else []) + [f"revoke of {sid}" for sid in revokes]
            missing += len(gaps)
            if len(self.missing_examples) < MAX_EXAMPLES:
                acked = self._live[exp.event_id].acked_at is not None
                self.missing_examples.append(
                    {"eventId": exp.event_id, "userId": exp.user_id, "sessionId": exp.session_id,
                     "type": exp.type, "acked": acked, "missing": gaps}
                )  # fmt: skip
        for e in self.core.unseen_expiries():
            missing += 1
            if len(self.missing_examples) < MAX_EXAMPLES:
                self.missing_examples.append(
                    {
                        "userId": e.user_id,
                        "sessionId": e.session_id,
                        "missing": [f"expire at {e.lease_expires_at}"],
                    }
                )
        self.missing = missing
        return missing

    @property
    def failures(self) -> int:
        return self.mismatches + (self.missing or 0) + self.malformed_verdicts

    def latency_summary(self) -> dict[str, float | int | None]:
        values = sorted(self.latencies_ms)
        return {
            "count": len(values),
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "max": values[-1] if values else None,
            "mean": (sum(values) / len(values)) if values else None,
        }


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _preview(value: bytes | None, limit: int = 200) -> str | None:
    if value is None:
        return None
    return value[:limit].decode("utf-8", errors="replace")


def _jsonable(obj: Any) -> Any:
    """Examples go into the JSON report: turn dataclasses and other values into plain JSON."""
    return orjson.loads(orjson.dumps(obj, default=repr))
