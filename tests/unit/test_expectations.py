"""The expectations core (producer_sim/expectations.py) and its two users: the live checker
and the offline verifier judge one run alike (no Kafka needed)."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from processor.reference_model import Decision, ReferenceModel
from processor.script_results import Expiry, Result
from processor.tokens import HS256Signer
from processor.verdicts import build_verdicts, expire_verdict
from processor.wire import DecodedEvent
from producer_sim.checker import Checker
from producer_sim.expectations import Expectations
from producer_sim.faults import encode_event
from producer_sim.population import SimEvent
from producer_sim.verifier import Verifier

T0 = 1_763_800_000_000
TTL = 90_000
SECRET = "unit-test-secret-0123456789"
TOPIC = "playback.events"


def ev(n: int, kind: str, user: str, session: str, ts: int) -> SimEvent:
    return SimEvent(kind, user, session, f"dev-{session}", "c-1", f"e-{n}", ts, "normal")


def run() -> list[SimEvent]:
    """Two users on one partition: u1 is denied a third stream, then u2's late start expires
    u1's leases by stream time (two `expire` verdicts before u2's own)."""
    return [
        ev(1, "start", "u1", "a", T0),
        ev(2, "start", "u1", "b", T0 + 1000),
        ev(3, "start", "u1", "c", T0 + 2000),  # limit 2: denied, with advice
        ev(4, "heartbeat", "u1", "a", T0 + 3000),
        ev(5, "start", "u2", "x", T0 + 3000 + TTL),  # passes both of u1's expiries
        ev(6, "stop", "u2", "x", T0 + 4000 + TTL),
    ]


def encode(e: SimEvent, d: Decision) -> list[bytes]:
    """The verdicts a correct processor publishes for one record (the processor's encoder)."""
    decoded = DecodedEvent(e.type, e.user_id, e.session_id, e.event_id, e.device_id, e.content_id)
    conflicts = [
        [c.session_id, c.device_id, c.device_class, c.content_id, c.started_at, c.lease_expires_at]
        for c in d.conflicts or ()
    ]
    result = Result(
        d.code, d.active_streams, d.max_streams, d.lease_expires_at or 0, d.decided_at,
        list(d.evicted), d.policy_kind, conflicts if d.conflicts is not None else None,
    )  # fmt: skip
    expired = [
        expire_verdict(Expiry(x.user_id, x.session_id, x.lease_expires_at, x.active_streams, x.device_class,
                              x.decided_at))
        for x in d.expired
    ]  # fmt: skip
    return expired + build_verdicts(decoded, result, TOPIC, 0, 0, HS256Signer(SECRET.encode()))


def processor_verdicts(events: list[SimEvent]) -> list[list[bytes]]:
    processor = ReferenceModel(max_streams=2, lease_ttl_ms=TTL)
    return [encode(e, processor.apply(e.user_id, e.session_id, e.type, e.ts, e.event_id, e.device_id,
                                       e.content_id)) for e in events]  # fmt: skip


def record(topic: str, offset: int, key: bytes, value: bytes, ts: int) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, ts, 0, key, value, None, len(key), len(value), [])


def judge(events: list[SimEvent], verdicts: list[bytes]) -> tuple[Checker, Verifier]:
    """The checker (live, one partition) and the verifier (offline) over the same run."""
    checker = Checker(ReferenceModel(max_streams=2, lease_ttl_ms=TTL), jwt_secret=SECRET, partitions=1)
    for i, e in enumerate(events):
        checker.expect(e, e.ts)
        checker.acked(e.event_id, float(i))
    for value in verdicts:
        checker.on_verdict(value, 10.0)
    checker.finish()
    verifier = Verifier(TOPIC, max_streams=2, lease_ttl_ms=TTL)
    verifier.feed_events(
        [record(TOPIC, i, e.user_id.encode(), encode_event(e), e.ts) for i, e in enumerate(events)]
    )
    keyed = [(orjson.loads(v)["userId"].encode(), v) for v in verdicts]
    verifier.feed_verdicts([record("playback.verdicts", i, k, v, T0) for i, (k, v) in enumerate(keyed)])
    verifier.finish_verdicts()
    verifier.feed_dead_letters([], TOPIC)
    return checker, verifier


def test_a_correct_run_is_clean_for_both_and_they_count_alike() -> None:
    events = run()
    verdicts = [v for vs in processor_verdicts(events) for v in vs]
    assert [orjson.loads(v)["type"] for v in verdicts].count("expire") == 2
    checker, verifier = judge(events, verdicts + verdicts[:3])  # a redelivered tail
    rep = verifier.report
    assert checker.failures == 0, checker.examples
    assert rep.clean, (rep.summary(), rep.examples)
    assert (checker.unique, checker.redelivered, checker.expired) == (rep.unique_verdicts, 3, rep.expiries)
    assert rep.redelivered == 3 and checker.outstanding == 0


def _swap_conflicts(v: dict) -> dict:
    return {"conflicts": v["conflicts"][::-1]}


@pytest.mark.parametrize(
    ("at", "change", "checker_kind", "verifier_kind"),
    [
        ((2, 0), _swap_conflicts, "conflicts", "conflicts"),
        ((4, 0), lambda v: {"activeStreams": 5}, "expire", "expire"),  # u1's first expiry
        ((4, 0), None, None, None),  # the expiry never comes
        ((5, 0), None, None, None),  # the stop's own verdict never comes
    ],
    ids=["deny-conflicts", "expire-field", "expire-lost", "main-lost"],
)
def test_a_wrong_or_missing_verdict_fails_both(
    at: tuple[int, int], change, checker_kind, verifier_kind
) -> None:
    events = run()
    produced = processor_verdicts(events)
    i, j = at
    if change is None:
        del produced[i][j]
    else:
        produced[i][j] = orjson.dumps(
            {**orjson.loads(produced[i][j]), **change(orjson.loads(produced[i][j]))}
        )
    checker, verifier = judge(events, [v for vs in produced for v in vs])
    assert checker.failures > 0 and not verifier.report.clean
    if checker_kind is not None:
        assert dict(checker.mismatch_kinds) == {checker_kind: 1}
        assert dict(verifier.report.mismatch_kinds) == {verifier_kind: 1}
    else:
        assert checker.missing == 1 and verifier.report.lost == 1


def test_the_core_dedups_on_verdict_id_matches_revokes_and_lists_what_is_missing() -> None:
    core = Expectations(max_streams=1, lease_ttl_ms=TTL, policy="evict_oldest")
    first = core.expect(0, 0, ev(1, "start", "u1", "a", T0), T0, None)
    second = core.expect(0, 1, ev(2, "start", "u1", "b", T0 + 5), T0 + 5, None)
    assert (first.status, second.status, second.decision.evicted) == ("new", "new", ("a",))
    assert core.expect(0, 2, ev(2, "start", "u1", "b", T0 + 9), T0 + 9, None).status == "duplicate"
    main, revoke = (orjson.loads(v) for v in encode(ev(2, "start", "u1", "b", T0 + 5), second.decision))
    got = core.receive(main)
    assert (got.role, got.wrong, got.problem) == ("main", {}, None)
    assert core.receive(dict(main)).role == "redelivered"
    assert core.receive({**main, "activeStreams": 9}).role == "reused"
    assert core.receive({**main, "verdictId": "v2"}).problem == "second_verdict_for_event"
    assert core.receive({**revoke, "verdictId": "r0", "sessionId": "zz"}).problem == "unexpected_revoke"
    [(exp, own, revokes)] = [g for g in core.incomplete() if g[0].event_id == "e-2"]
    assert (own, revokes) == (False, ["a"])  # the revoke of "a" has not come
    got = core.receive(revoke)
    assert (got.role, got.wrong, got.expected is exp) == ("revoke", {}, True)
    assert core.receive({**main, "eventId": "nope", "verdictId": "v3"}).role == "unknown"
    assert [e.event_id for e, _, _ in core.incomplete()] == ["e-1"]  # e-1's own verdict never came
    later = core.expect(0, 3, ev(3, "stop", "u1", "q", T0 + 5 + TTL), T0 + 5 + TTL, None)
    assert later.new_expiries == 1
    assert [(x.session_id, x.lease_expires_at) for x in core.unseen_expiries()] == [("b", T0 + 5 + TTL)]


def test_one_users_verdicts_out_of_event_order_fail_both() -> None:
    events = run()
    produced = processor_verdicts(events)
    produced[0], produced[1] = produced[1], produced[0]
    checker, verifier = judge(events, [v for vs in produced for v in vs])
    assert dict(checker.mismatch_kinds) == {"out_of_order": 1}
    assert dict(verifier.report.mismatch_kinds) == {"out_of_order": 1}


def test_a_terminate_with_the_issued_by_header_expects_issued_by_on_its_verdicts_and_one_without_none():
    core = Expectations(max_streams=3, lease_ttl_ms=TTL)
    start = DecodedEvent("start", "u1", "tv", "e-1", None, None)
    core.expect(0, 0, start, T0, None)
    stop_tv = DecodedEvent("terminate", "u1", "console", "e-2", None, None, "tv")
    core.expect(0, 1, stop_tv, T0 + 1, None, issued_by="support:agent-7")
    base = {"verdictId": "v-2", "eventId": "e-2", "userId": "u1", "sessionId": "console", "type": "terminate",
            "decision": "allow", "reason": "terminated", "activeStreams": 0, "maxStreams": 3,
            "leaseExpiresAt": None, "decidedAt": T0 + 1, "token": None, "policy": "default"}  # fmt: skip
    assert core.receive({**base, "issuedBy": "support:agent-7"}).wrong == {}
    # The revoke without the field is wrong; so is an event's verdict with a field it must not have.
    revoke = {**base, "verdictId": "v-3", "sessionId": "tv", "decision": "revoke"}
    assert core.receive(revoke).wrong == {"issuedBy": {"expected": "support:agent-7", "got": None}}
    player = DecodedEvent("terminate", "u1", "phone", "e-4", None, None, "gone")
    core.expect(0, 2, player, T0 + 2, None)
    by_player = {**base, "verdictId": "v-4", "eventId": "e-4", "sessionId": "phone", "reason": "not_active"}
    assert core.receive({**by_player, "decidedAt": T0 + 2, "issuedBy": "support:x"}).wrong == {
        "issuedBy": {"expected": None, "got": "support:x"}
    }
