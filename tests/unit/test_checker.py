"""The simulator's checker: it must catch every kind of wrong verdict (no Kafka needed).

Policies, deny advice, terminates and the offline verifier: test_checker_policies.py.
"""

from __future__ import annotations

import orjson
import pytest

from processor.reference_model import ReferenceModel
from producer_sim.checker import Checker
from producer_sim.faults import MALFORMED_KINDS, FaultConfig, Faults, malformed_record
from producer_sim.population import SimEvent
from tests.unit.checker_support import SECRET, T0, corrupt, event, play, verdicts_for


@pytest.fixture
def checker() -> Checker:
    return Checker(ReferenceModel(max_streams=2, lease_ttl_ms=90_000), jwt_secret=SECRET)


def scenario() -> list[SimEvent]:
    return [
        event(1, "start", "s1"),
        event(2, "start", "s2", ts=T0 + 1),
        event(3, "start", "s3", ts=T0 + 2),  # denied: limit 2
        event(4, "heartbeat", "s1", ts=T0 + 30_000),
        event(5, "stop", "s2", ts=T0 + 40_000),
        event(6, "heartbeat", "s9", ts=T0 + 41_000),  # no lease
    ]


def test_correct_verdicts_give_no_failures_and_latencies(checker: Checker) -> None:
    for values in play(checker, scenario()):
        for v in values:
            checker.on_verdict(v, 10.0)
    assert checker.finish() == 0
    assert (checker.mismatches, checker.malformed_verdicts, checker.failures) == (0, 0, 0)
    assert checker.by_decision == {"allow": 4, "deny": 2}
    assert checker.latency_summary()["count"] == 6


def test_a_verdict_with_the_wrong_decision_is_a_mismatch(checker: Checker) -> None:
    produced = play(checker, scenario())
    produced[2][0] = corrupt(produced[2][0], decision="allow", reason="started")
    for values in produced:
        for v in values:
            checker.on_verdict(v, 10.0)
    checker.finish()
    assert checker.mismatches == 1
    assert checker.mismatch_kinds == {"decision": 1}
    assert checker.examples[0]["eventId"] == "e-3"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("activeStreams", 3),
        ("maxStreams", 5),
        ("leaseExpiresAt", T0),
        ("decidedAt", T0 + 5),
        ("sessionId", "zz"),
    ],
)
def test_each_compared_field_is_checked(checker: Checker, field: str, value: object) -> None:
    produced = play(checker, scenario())
    produced[0][0] = corrupt(produced[0][0], **{field: value})
    for values in produced:
        for v in values:
            checker.on_verdict(v, 10.0)
    assert checker.mismatches >= 1


def test_a_verdict_that_never_comes_is_missing(checker: Checker) -> None:
    produced = play(checker, scenario())
    del produced[3]
    for values in produced:
        for v in values:
            checker.on_verdict(v, 10.0)
    assert checker.outstanding == 1
    assert checker.finish() == 1
    assert checker.missing_examples[0]["eventId"] == "e-4"
    assert checker.failures == 1


@pytest.mark.parametrize(
    "value",
    [b"not json", b"{}", b'{"verdictId": "x"}', None],
    ids=["not-json", "empty-object", "missing-fields", "null"],
)
def test_a_verdict_that_fails_validation_is_malformed(checker: Checker, value: bytes | None) -> None:
    play(checker, scenario()[:1])
    checker.on_verdict(value, 1.0)
    assert checker.malformed_verdicts == 1
    assert checker.failures >= 1


def test_a_wrong_enum_value_in_a_verdict_is_malformed(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.on_verdict(corrupt(value, decision="maybe"), 1.0)
    assert checker.malformed_verdicts == 1


def test_redelivered_identical_verdicts_are_counted_not_failed(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.on_verdict(value, 1.0)
    checker.on_verdict(value, 2.0)
    assert (checker.redelivered, checker.mismatches, checker.unique) == (1, 0, 1)


def test_a_known_verdict_id_with_other_content_is_a_mismatch(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.on_verdict(value, 1.0)
    checker.on_verdict(corrupt(value, activeStreams=2), 2.0)
    assert checker.mismatch_kinds == {"verdict_id_reused_with_other_content": 1}


def test_a_duplicate_event_expects_the_first_verdict(checker: Checker) -> None:
    ev = event(1)
    d1 = checker.expect(ev, T0)
    d2 = checker.expect(ev, T0 + 4000)  # re-sent later, same eventId
    assert d1 == d2
    [value] = verdicts_for(ev, d1)
    checker.on_verdict(value, 1.0)
    checker.on_verdict(value, 2.0)
    assert checker.finish() == 0
    assert (checker.failures, checker.redelivered) == (0, 1)


def test_a_second_verdict_id_for_one_event_is_a_mismatch(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.on_verdict(value, 1.0)
    checker.on_verdict(corrupt(value, verdictId="another"), 2.0)
    assert checker.mismatch_kinds == {"second_verdict_for_event": 1}


def test_verdicts_of_one_user_out_of_event_order_are_a_mismatch(checker: Checker) -> None:
    produced = play(checker, scenario()[:2])
    checker.on_verdict(produced[1][0], 1.0)
    checker.on_verdict(produced[0][0], 1.0)
    assert checker.mismatch_kinds == {"out_of_order": 1}


def test_a_forged_token_is_a_mismatch(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    token = orjson.loads(value)["token"]
    checker.on_verdict(corrupt(value, token=token[:-4] + "AAAA"), 1.0)
    assert checker.mismatch_kinds == {"token": 1}


def test_a_missing_token_on_an_allow_is_a_mismatch(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.on_verdict(corrupt(value, token=None), 1.0)
    assert checker.mismatch_kinds == {"token": 1}


def test_evictions_expect_a_revoke_verdict_each() -> None:
    checker = Checker(ReferenceModel(max_streams=1, lease_ttl_ms=90_000, policy="evict_oldest"))
    produced = play(checker, [event(1, "start", "a"), event(2, "start", "b", ts=T0 + 5)])
    assert len(produced[1]) == 2  # the allow, then the revoke of "a"
    for v in produced[0] + produced[1][:1]:
        checker.on_verdict(v, 1.0)
    assert checker.outstanding == 1
    assert checker.finish() == 1  # the revoke never came
    checker.on_verdict(produced[1][1], 2.0)
    assert checker.finish() == 0
    assert checker.by_decision["revoke"] == 1
    assert checker.mismatches == 0


def test_a_revoke_of_the_wrong_session_is_a_mismatch() -> None:
    checker = Checker(ReferenceModel(max_streams=1, lease_ttl_ms=90_000, policy="evict_oldest"))
    produced = play(checker, [event(1, "start", "a"), event(2, "start", "b", ts=T0 + 5)])
    checker.on_verdict(produced[1][1].replace(b'"a"', b'"q"'), 1.0)
    assert checker.mismatch_kinds == {"unexpected_revoke": 1}


def test_a_verdict_for_a_malformed_event_is_a_mismatch_and_foreign_ones_are_counted(checker: Checker) -> None:
    [[value]] = play(checker, scenario()[:1])
    checker.expect_malformed("me-1")
    checker.on_verdict(corrupt(value, eventId="me-1", verdictId="v-m"), 1.0)
    checker.on_verdict(corrupt(value, eventId="from-elsewhere", verdictId="v-x"), 1.0)
    assert checker.mismatch_kinds == {"verdict_for_malformed_event": 1}
    assert checker.unexpected == 1


def test_latency_is_measured_from_the_ack_even_when_the_verdict_comes_first(checker: Checker) -> None:
    ev = event(1)
    [value] = verdicts_for(ev, checker.expect(ev, T0))
    checker.on_verdict(value, 5.0)
    assert checker.latencies_ms == []
    checker.acked(ev.event_id, 4.75)
    assert checker.latencies_ms == [250.0]


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_record_is_refused_by_the_processors_decoder(kind: str) -> None:
    from processor.wire import DecodeError, decode_event

    record = malformed_record(kind, event(1))
    with pytest.raises(DecodeError):
        decode_event(record.value, record.key)


def test_faults_are_drawn_at_their_fractions_and_duplicates_come_later() -> None:
    faults = Faults(FaultConfig(duplicates=0.1, late=0.1, malformed=0.1), seed=1)
    late = bad = 0
    for n in range(5000):
        ev = event(n, ts=T0 + n * 100)
        ts, is_late = faults.record_timestamp(ev)
        late += is_late
        assert (ts < ev.ts) == is_late
        bad += faults.maybe_malformed(ev) is not None
        faults.maybe_duplicate(ev, b"v")
        for due, dup, _ in faults.due_duplicates(ev.ts):
            assert dup.ts < due <= ev.ts
    assert 350 < late < 650 and 350 < bad < 650
    assert faults.pending_duplicates < 100
