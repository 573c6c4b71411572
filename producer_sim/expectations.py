"""The expectations of a run, from the reference model: the one core of the live checker
(producer_sim/checker.py) and the offline verifier (producer_sim/verifier.py).

It keeps one ReferenceModel per events partition (the processor keeps its state per
partition, and the session ledger's stream time is a partition's) and is fed each record's
event in log order per partition, with its position in that order (the verifier: the
record offset; the checker: the event's place among its user's), its record timestamp and
the policy it resolves to (`PolicyTable.resolve`; None: the settings). From the model's
decision it remembers what the verdicts must say:

- the event's own verdict, keyed by (userId, eventId as the verdict shows it); a later
  record of the same identity is an upstream duplicate and expects the same verdict (one
  decided anew because its eventId was forgotten is kept as an alternative);
- a `revoke` for each lease the event evicted or terminated, keyed by the event that caused
  it (its userId + eventId) and the revoked sessionId;
- an `expire` for each lease stream time ended, keyed by (userId, sessionId, expiry).

A received verdict (a dict) is first deduplicated on verdictId (an identical copy is a
redelivery; a different content under a known verdictId is for the caller to call a
mismatch), then matched to its expectation, which says which fields differ. What never
came is listed at the end. Counting, naming mismatches and everything else the checker
(latency, tokens) and the verifier (offsets, dead letters, Redis) hold is theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from processor.policies import Policy
from processor.reference_model import Decision, Expired, ReferenceModel
from producer_sim.expect import differences, expire_fields, main_fields, revoke_fields


class Event(Protocol):
    """What the model needs of an event: processor.wire.DecodedEvent and SimEvent both have it."""

    type: str
    user_id: str
    session_id: str
    event_id: str | None
    device_id: str | None
    content_id: str | None
    target_session_id: str | None
    plan: str | None
    device_class: str | None


@dataclass(slots=True)
class Expected:
    """What the verdicts of one event identity (userId + eventId as shown) must say."""

    user_id: str
    session_id: str
    type: str
    event_id: str  # as the verdict shows it
    decision: Decision
    partition: int
    position: int  # of its first record: the offset (verifier), the user's event count (checker)
    plan: str | None = None
    # Tuples, not lists or sets: mostly empty, and fewer containers per event keep the
    # garbage collector's work down in a long live run.
    alternatives: tuple[Decision, ...] = ()  # decided anew (eventId beyond memory)
    main_ids: tuple[str, ...] = ()  # verdictIds of its own verdict (distinct; more than one: wrong)
    revoked: tuple[str, ...] = ()  # sessionIds whose revoke came

    @property
    def offset(self) -> int:
        return self.position

    def missing_revokes(self) -> list[str]:
        return [sid for sid in self.decision.evicted if sid not in self.revoked]


@dataclass(slots=True)
class ExpectedExpiry:
    expired: Expired  # what the model pushed
    copies: int = 0  # distinct `expire` verdicts matched to it (more than one: another verdictId)


@dataclass(slots=True)
class Applied:
    """What expect() made of one record."""

    decision: Decision  # the record's own (its `expired` taken out: they are expectations of their own)
    # new | duplicate (the first decision again) | forgotten (a decision not seen for this identity:
    # the eventId was forgotten) | forgotten_again (such a decision once more) | dead_letter
    # (event_id_conflict: no verdict, nothing remembered)
    status: str
    expected: Expected | None  # None for a dead letter
    new_expiries: int  # expire verdicts it adds to the expectations


@dataclass(slots=True)
class Match:
    """What one received verdict is. `role`: redelivered (an identical copy of a verdictId
    seen), reused (another content under a verdictId seen: `first` is the first), main, revoke,
    expire, or unknown (no expectation: another producer's or a bad record's)."""

    role: str
    expected: Expected | None = None
    expiry: ExpectedExpiry | None = None
    wrong: dict[str, dict[str, Any]] = field(default_factory=dict)  # {field: {expected, got}}
    # second_verdict_for_event | unexpected_revoke | unexpected_expiry (then `wrong` is empty)
    problem: str | None = None
    first: Any = None


class Expectations:
    def __init__(
        self,
        max_streams: int = 3,
        lease_ttl_ms: int = 90_000,
        policy: str = "reject",
        event_id_memory: int = 16,
    ) -> None:
        self.rules = (max_streams, lease_ttl_ms, policy, event_id_memory)
        self.models: dict[int, ReferenceModel] = {}
        self.expected: dict[tuple[str, str], Expected] = {}  # (userId, eventId shown) -> expected
        # (userId, sessionId, expiry) -> the expiry the model pushed
        self.expiries: dict[tuple[str, str, int], ExpectedExpiry] = {}
        self._copies: dict[str, Any] = {}  # verdictId -> its first content
        self._last_position: dict[tuple[str, int], int] = {}  # (userId, partition) -> of the last main

    def model(self, partition: int) -> ReferenceModel:
        model = self.models.get(partition)
        if model is None:
            model = self.models[partition] = ReferenceModel(*self.rules)
        return model

    def reset(self, partition: int) -> None:
        """The partition's model starts empty again (the processor's state was lost and accepted)."""
        self.models.pop(partition, None)

    def remembers(self, partition: int, user_id: str, event_id: str) -> bool:
        """True while the eventId is within the user's eventId memory (a re-send is a duplicate)."""
        model = self.models.get(partition)
        user = model.users.get(user_id) if model is not None else None
        return user is not None and event_id in user.seen

    # the events ----------------------------------------------------------------------------
    def expect(
        self,
        partition: int,
        position: int,
        ev: Event,
        timestamp: int,
        policy: Policy | None,
        *,
        event_id: str | None = None,
        expiries: bool = True,
        issued_by: str | None = None,
    ) -> Applied:
        """Decide one record's event and remember its verdicts. `event_id`: as the verdicts
        show it (default the event's own). `expiries=False` decides without expecting the
        ledger's `expire` verdicts (the stream time is then not the processor's). `issued_by`:
        the record's `issued-by` header."""
        model = self.model(partition)
        decision = model.apply(
            ev.user_id, ev.session_id, ev.type, timestamp, ev.event_id, ev.device_id, ev.content_id,
            policy=policy, device_class=ev.device_class, target_session_id=ev.target_session_id,
            partition=partition, issued_by=issued_by,
        )  # fmt: skip
        new_expiries = 0
        if decision.expired:
            if expiries:
                for e in decision.expired:  # keyed: a replay after a reset repeats none
                    entry = self.expiries.setdefault(
                        (e.user_id, e.session_id, e.lease_expires_at), ExpectedExpiry(e)
                    )
                    new_expiries += entry.expired is e
            decision = replace(decision, expired=())  # the record's own verdicts, as a duplicate gets them
        if decision.dead_letter is not None:
            return Applied(decision, "dead_letter", None, new_expiries)
        shown = event_id if event_id is not None else ev.event_id
        assert shown is not None, "an event without an eventId needs the name its verdicts show"
        key = (ev.user_id, shown)
        known = self.expected.get(key)
        if known is not None:
            if decision == known.decision:
                status = "duplicate"
            elif decision in known.alternatives:
                status = "forgotten_again"
            else:
                known.alternatives += (decision,)
                status = "forgotten"
            return Applied(decision, status, known, new_expiries)
        exp = self.expected[key] = Expected(
            ev.user_id, ev.session_id, ev.type, shown, decision, partition, position, ev.plan
        )
        return Applied(decision, "new", exp, new_expiries)

    # the verdicts --------------------------------------------------------------------------
    def receive(self, v: dict[str, Any], content: Any = None) -> Match:
        """Deduplicate one verdict on its verdictId (on `content`, default `v`: what its copies
        must equal) and match a distinct one to its expectation."""
        content = v if content is None else content
        first = self._copies.setdefault(v["verdictId"], content)
        if first is not content:
            return Match("redelivered" if first == content else "reused", first=first)
        if v.get("type") == "expire":
            entry = self.expiries.get((v.get("userId"), v.get("sessionId"), v.get("leaseExpiresAt")))  # type: ignore[arg-type]
            if entry is None:
                return Match("expire", problem="unexpected_expiry")
            entry.copies += 1
            return Match("expire", expiry=entry, wrong=differences(v, expire_fields(entry.expired)))
        exp = self.expected.get((v.get("userId"), v.get("eventId")))  # type: ignore[arg-type]
        if exp is None:
            return Match("unknown")
        if v.get("decision") == "revoke":
            sid = v.get("sessionId")
            if sid not in exp.decision.evicted or sid in exp.revoked:
                return Match("revoke", exp, problem="unexpected_revoke")
            exp.revoked += (sid,)
            return Match(
                "revoke",
                exp,
                wrong=differences(v, revoke_fields(exp.user_id, exp.type, exp.plan, exp.decision)),
            )
        exp.main_ids += (v["verdictId"],)  # distinct: copies of a verdictId stopped above
        if len(exp.main_ids) > 1:  # two different verdicts for one event: it was decided twice
            return Match("main", exp, problem="second_verdict_for_event")
        wrong: dict[str, dict[str, Any]] = {}
        for d in (exp.decision, *exp.alternatives):
            wrong = differences(v, main_fields(exp.user_id, exp.session_id, exp.type, exp.plan, d))
            if not wrong:
                break
        return Match("main", exp, wrong=wrong)

    def out_of_order(self, exp: Expected) -> int | None:
        """Call per verdict of `exp` received: the position of a later event of the same user
        whose verdict came before (the first verdicts of one user come in event order), else None."""
        key = (exp.user_id, exp.partition)
        last = self._last_position.get(key, -1)
        if exp.position < last:
            return last
        self._last_position[key] = exp.position
        return None

    # the end -------------------------------------------------------------------------------
    def incomplete(self) -> Iterator[tuple[Expected, bool, list[str]]]:
        """(expected, own verdict missing, sessionIds whose revoke is missing) of each event
        with a verdict still to come."""
        for exp in self.expected.values():
            revokes = exp.missing_revokes()
            if not exp.main_ids or revokes:
                yield exp, not exp.main_ids, revokes

    def unseen_expiries(self) -> Iterator[Expired]:
        for entry in self.expiries.values():
            if not entry.copies:
                yield entry.expired
