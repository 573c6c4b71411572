"""The simulator's checker and the offline verifier under plan policies: deny advice, terminates."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from processor.reference_model import ReferenceModel
from producer_sim.checker import Checker
from producer_sim.faults import encode_event
from producer_sim.plans import policy_records, policy_table
from producer_sim.population import SimEvent
from producer_sim.verifier import Verifier
from tests.unit.checker_support import SECRET, T0, corrupt, play, verdicts_for

# --- policies, deny advice, terminate ---------------------------------------------------------


def pevent(
    n: int, kind: str, session: str, ts: int, plan: str = "premium", device_class: str = "tv",
    target: str | None = None,
) -> SimEvent:  # fmt: skip
    return SimEvent(
        kind, "u1", session, f"dev-{session}", f"c-{n}", f"e-{n}", ts, "family", plan, device_class, target
    )


@pytest.fixture
def plan_checker() -> Checker:
    policies = policy_table(3, "reject", policy_records())
    return Checker(ReferenceModel(max_streams=3, lease_ttl_ms=90_000), jwt_secret=SECRET, policies=policies)


def feed(checker: Checker, produced: list[list[bytes]]) -> None:
    for values in produced:
        for v in values:
            checker.on_verdict(v, 10.0)


def three_tvs() -> list[SimEvent]:
    """Premium (4 streams, 2 on TVs): the third TV is denied by the class cap."""
    return [
        pevent(1, "start", "a", T0),
        pevent(2, "start", "b", T0 + 1000),
        pevent(3, "start", "c", T0 + 2000),
        pevent(4, "start", "m", T0 + 3000, device_class="mobile"),
    ]


def test_a_class_cap_deny_carries_the_plans_policy_and_its_advice(plan_checker: Checker) -> None:
    produced = play(plan_checker, three_tvs())
    deny = orjson.loads(produced[2][0])
    assert (deny["reason"], deny["policy"], deny["maxStreams"]) == ("device_class_limit", "plan:premium", 4)
    assert [c["sessionId"] for c in deny["conflicts"]] == ["a", "b"]
    assert deny["conflicts"][0] == {
        "sessionId": "a", "deviceId": "dev-a", "deviceClass": "tv", "contentId": "c-1",
        "startedAt": T0, "leaseExpiresAt": T0 + 90_000,
    }  # fmt: skip
    assert deny["nextFreeAt"] == T0 + 90_000
    assert orjson.loads(produced[3][0])["reason"] == "started"  # a phone still fits
    feed(plan_checker, produced)
    assert plan_checker.finish() == 0 and plan_checker.failures == 0
    assert plan_checker.advice_examples["device_class_limit"]["conflicts"][1]["sessionId"] == "b"
    assert plan_checker.starts_by_plan[("premium", "device_class_limit")] == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("policy", "default"),
        ("maxStreams", 3),
        ("nextFreeAt", T0 + 91_000),
        ("nextFreeAt", None),
        ("conflicts", None),
        ("conflicts", []),
    ],
)
def test_each_policy_and_advice_field_is_checked(plan_checker: Checker, field: str, value: object) -> None:
    produced = play(plan_checker, three_tvs())
    produced[2][0] = corrupt(produced[2][0], **{field: value})
    feed(plan_checker, produced)
    assert plan_checker.mismatch_kinds == {field: 1}


@pytest.mark.parametrize("change", ["swapped", "altered"])
def test_conflicts_out_of_order_or_altered_are_a_mismatch(plan_checker: Checker, change: str) -> None:
    produced = play(plan_checker, three_tvs())
    first, second = orjson.loads(produced[2][0])["conflicts"]
    conflicts = [second, first] if change == "swapped" else [{**first, "deviceId": "x"}, second]
    produced[2][0] = corrupt(produced[2][0], conflicts=conflicts)
    feed(plan_checker, produced)
    assert plan_checker.mismatch_kinds == {"conflicts": 1}


def test_a_verdict_under_the_settings_instead_of_the_plan_is_a_mismatch(plan_checker: Checker) -> None:
    basic = [pevent(1, "start", "a", T0, plan="basic"), pevent(2, "start", "b", T0 + 5, plan="basic")]
    produced = play(plan_checker, basic)
    deny = orjson.loads(produced[1][0])
    assert (deny["reason"], deny["maxStreams"], deny["policy"]) == ("limit_exceeded", 1, "plan:basic")
    # a processor that ignored the plan would have allowed the second start under MAX_STREAMS=3
    produced[1][0] = corrupt(
        produced[1][0], decision="allow", reason="started", maxStreams=3, policy="default", conflicts=None
    )
    feed(plan_checker, produced)
    assert plan_checker.mismatch_kinds == {"decision": 1}


def terminate_scenario() -> list[SimEvent]:
    """Standard (2 streams): the third start is denied; it terminates the oldest, then gets in."""
    std = {"plan": "standard", "device_class": "mobile"}
    return [
        pevent(1, "start", "a", T0, **std),
        pevent(2, "start", "b", T0 + 1, **std),
        pevent(3, "start", "c", T0 + 2, **std),
        pevent(4, "terminate", "c", T0 + 3000, target="a", **std),
        pevent(5, "start", "c", T0 + 5000, **std),
        pevent(6, "terminate", "c", T0 + 6000, target="a", **std),  # gone by now: not_active
    ]


def test_a_terminate_expects_its_verdict_and_a_terminated_revoke(plan_checker: Checker) -> None:
    produced = play(plan_checker, terminate_scenario())
    own, revoke = (orjson.loads(v) for v in produced[3])
    assert (own["sessionId"], own["reason"], own["activeStreams"], own["token"]) == (
        "c",
        "terminated",
        1,
        None,
    )
    assert (revoke["sessionId"], revoke["decision"], revoke["reason"]) == ("a", "revoke", "terminated")
    assert orjson.loads(produced[4][0])["reason"] == "started"
    assert orjson.loads(produced[5][0])["reason"] == "not_active"
    feed(plan_checker, produced)
    assert plan_checker.finish() == 0 and plan_checker.failures == 0
    assert plan_checker.revokes_by_reason == {"terminated": 1}
    assert plan_checker.by_type_reason[("terminate", "terminated")] == 1
    assert plan_checker.by_type_reason[("terminate", "not_active")] == 1


def test_a_terminate_revoke_that_says_evicted_or_never_comes_is_caught(plan_checker: Checker) -> None:
    produced = play(plan_checker, terminate_scenario())
    produced[3][1] = corrupt(produced[3][1], reason="evicted")
    feed(plan_checker, produced)
    assert plan_checker.mismatch_kinds == {"decision": 1}

    again = Checker(ReferenceModel(max_streams=3), policies=policy_table(3, "reject", policy_records()))
    produced = play(again, terminate_scenario())
    del produced[3][1]
    feed(again, produced)
    assert again.finish() == 1
    assert again.missing_examples[0]["missing"] == ["revoke of a"]


def test_a_plan_population_against_a_correct_processor_checks_clean() -> None:
    """The runner's loop without Kafka: players, the model as the gateway, a correct processor."""
    from producer_sim.population import Population, PopulationConfig

    policies = policy_table(3, "reject", policy_records())
    checker = Checker(ReferenceModel(max_streams=3), jwt_secret=SECRET, policies=policies)
    processor = ReferenceModel(max_streams=3)  # decides on its own, under the same policies
    pop = Population(
        PopulationConfig(users=150, seed=2, sharers=0.3, families=0.3, plans=True, terminates=0.5)
    )
    for i in range(8000):
        ev = pop.next_event()
        d = checker.expect(ev, ev.ts)
        pop.feedback(ev, d.decision == "allow", [c.session_id for c in d.conflicts or ()], d.evicted)
        got = processor.apply(
            ev.user_id, ev.session_id, ev.type, ev.ts, ev.event_id, ev.device_id, ev.content_id,
            policy=policies.resolve(ev.user_id, ev.plan), device_class=ev.device_class,
            target_session_id=ev.target_session_id,
        )  # fmt: skip
        checker.acked(ev.event_id, float(i))
        for v in verdicts_for(ev, got):
            checker.on_verdict(v, float(i))
    assert checker.finish() == 0 and checker.failures == 0, checker.examples[:3]
    assert checker.by_type_reason[("start", "device_class_limit")] > 0
    assert checker.by_type_reason[("start", "limit_exceeded")] > 0
    assert checker.revokes_by_reason["terminated"] > 0
    assert {plan for plan, _reason in checker.starts_by_plan} == {"basic", "standard", "premium"}
    assert set(checker.advice_examples) == {"limit_exceeded", "device_class_limit"}


# --- the offline verifier, with policies ------------------------------------------------------


def _records(topic: str, values: list[tuple[bytes, bytes, int]]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(topic, 0, i, ts, 0, key, value, None, len(key), len(value), [])
        for i, (key, value, ts) in enumerate(values)
    ]


def verify_scenario(events: list[SimEvent], corrupt_at: tuple[int, int, dict] | None = None) -> Verifier:
    """The verifier over an events topic and the verdicts a correct processor gives (one corrupted)."""
    policies = policy_table(3, "reject", policy_records())
    processor = ReferenceModel(max_streams=3)
    verdicts: list[list[bytes]] = []
    for ev in events:
        d = processor.apply(
            ev.user_id, ev.session_id, ev.type, ev.ts, ev.event_id, ev.device_id, ev.content_id,
            policy=policies.resolve(ev.user_id, ev.plan), device_class=ev.device_class,
            target_session_id=ev.target_session_id,
        )  # fmt: skip
        verdicts.append(verdicts_for(ev, d))
    if corrupt_at is not None:
        i, j, changes = corrupt_at
        verdicts[i][j] = corrupt(verdicts[i][j], **changes)
    v = Verifier("playback.events", policies=policies)
    v.feed_events(_records("playback.events", [(e.user_id.encode(), encode_event(e), e.ts) for e in events]))
    v.feed_verdicts(_records("playback.verdicts", [(b"u1", x, T0) for vs in verdicts for x in vs]))
    v.finish_verdicts()
    v.feed_dead_letters([], "playback.events")
    return v


def mixed_events() -> list[SimEvent]:
    """Premium TVs (a class-cap deny), then a standard user's limit deny and terminates."""
    later = [
        pevent(10 + n, e.type, f"{e.session_id}2", e.ts + 100_000, "standard", "mobile",
               e.target_session_id and f"{e.target_session_id}2")
        for n, e in enumerate(terminate_scenario())
    ]  # fmt: skip
    return three_tvs() + later


def test_the_verifier_checks_policies_advice_and_terminates() -> None:
    rep = verify_scenario(mixed_events()).report
    assert rep.clean, rep.summary() + str(rep.examples)
    assert (rep.revokes, rep.over_limit, rep.expected_verdicts) == (1, 0, 11)


@pytest.mark.parametrize(
    ("at", "kind"),
    [
        ((2, 0, {"policy": "default"}), "policy"),
        ((2, 0, {"nextFreeAt": 1}), "nextFreeAt"),
        ((2, 0, {"conflicts": []}), "conflicts"),
        ((6, 0, {"conflicts": [], "nextFreeAt": 1}), "conflicts+nextFreeAt"),  # the standard user's deny
        ((7, 1, {"reason": "evicted"}), "revoke"),  # the terminate's revoke
    ],
    ids=["policy", "nextFreeAt", "conflicts", "limit-advice", "revoke-reason"],
)
def test_the_verifier_reports_wrong_policy_advice_and_revokes(at: tuple, kind: str) -> None:
    rep = verify_scenario(mixed_events(), at).report
    assert not rep.clean
    assert dict(rep.mismatch_kinds) == {kind: 1}


def test_the_verifier_holds_each_user_to_its_plans_limit() -> None:
    rep = verify_scenario(mixed_events(), (1, 0, {"activeStreams": 5})).report
    assert rep.over_limit == 1 and rep.mismatch_kinds == {"activeStreams": 1}
