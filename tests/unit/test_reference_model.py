"""The reference model (the simulator's oracle) against every row of the contract's rule table."""

from __future__ import annotations

import pytest

from processor import rules
from processor.reference_model import ReferenceModel

TTL = 90_000
T0 = 1_763_800_000_000


def model(policy: str = "reject", max_streams: int = 3, memory: int = 16) -> ReferenceModel:
    return ReferenceModel(max_streams=max_streams, lease_ttl_ms=TTL, policy=policy, event_id_memory=memory)


def fill(m: ReferenceModel, n: int, user: str = "u", at: int = T0) -> None:
    for i in range(n):
        assert m.apply(user, f"s{i}", "start", at + i).reason == "started"


# --- the rule table, row by row ------------------------------------------------------------


def test_start_of_an_active_session_is_allowed_already_active_and_renews_the_expiry() -> None:
    m = model()
    m.apply("u", "s", "start", T0)
    d = m.apply("u", "s", "start", T0 + 10_000)
    assert (d.decision, d.reason, d.active_streams, d.max_streams) == ("allow", "already_active", 1, 3)
    assert d.lease_expires_at == T0 + 10_000 + TTL
    assert m.active_leases("u") == {"s": T0 + 10_000 + TTL}


def test_start_below_the_limit_is_allowed_started_and_creates_a_lease() -> None:
    m = model()
    fill(m, 2)
    d = m.apply("u", "new", "start", T0 + 100)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at, d.decided_at) == (
        "allow", "started", 3, T0 + 100 + TTL, T0 + 100,
    )  # fmt: skip
    assert "new" in m.active_leases("u")


def test_start_at_the_limit_with_policy_reject_is_denied_and_changes_nothing() -> None:
    m = model("reject")
    fill(m, 3)
    before = m.active_leases("u")
    d = m.apply("u", "fourth", "start", T0 + 100)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at, d.evicted) == (
        "deny", "limit_exceeded", 3, None, (),
    )  # fmt: skip
    assert m.active_leases("u") == before


def test_start_at_the_limit_with_policy_evict_oldest_is_allowed_and_evicts_the_oldest() -> None:
    m = model("evict_oldest")
    fill(m, 3)
    d = m.apply("u", "fourth", "start", T0 + 100)
    assert (d.decision, d.reason, d.active_streams, d.evicted) == ("allow", "started", 3, ("s0",))
    assert set(m.active_leases("u")) == {"s1", "s2", "fourth"}


def test_heartbeat_of_an_active_session_is_allowed_renewed_and_renews_the_expiry() -> None:
    m = model()
    m.apply("u", "s", "start", T0)
    d = m.apply("u", "s", "heartbeat", T0 + 30_000)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at) == (
        "allow",
        "renewed",
        1,
        T0 + 30_000 + TTL,
    )


def test_heartbeat_without_a_lease_is_denied_no_lease_and_creates_nothing() -> None:
    m = model()
    d = m.apply("u", "s", "heartbeat", T0)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at) == ("deny", "no_lease", 0, None)
    assert m.active_leases("u") == {}


def test_stop_of_an_active_session_is_allowed_stopped_and_removes_the_lease() -> None:
    m = model()
    fill(m, 2)
    d = m.apply("u", "s0", "stop", T0 + 10)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at) == ("allow", "stopped", 1, None)
    assert set(m.active_leases("u")) == {"s1"}


def test_stop_without_a_lease_is_allowed_not_active() -> None:
    d = model().apply("u", "s", "stop", T0)
    assert (d.decision, d.reason, d.active_streams, d.lease_expires_at) == ("allow", "not_active", 0, None)


@pytest.mark.parametrize(
    ("setup", "event", "policy", "expected"),
    [
        (["s"], ("s", "start"), "reject", ("allow", "already_active")),
        (["a"], ("s", "start"), "reject", ("allow", "started")),
        (["a", "b", "c"], ("s", "start"), "reject", ("deny", "limit_exceeded")),
        (["a", "b", "c"], ("s", "start"), "evict_oldest", ("allow", "started")),
        (["s"], ("s", "heartbeat"), "reject", ("allow", "renewed")),
        ([], ("s", "heartbeat"), "reject", ("deny", "no_lease")),
        (["s"], ("s", "stop"), "reject", ("allow", "stopped")),
        ([], ("s", "stop"), "reject", ("allow", "not_active")),
        (["s"], ("s", "terminate"), "reject", ("allow", "terminated")),
        (["a"], ("s", "terminate"), "reject", ("allow", "not_active")),
    ],
)
def test_rule_table_row(
    setup: list[str], event: tuple[str, str], policy: str, expected: tuple[str, str]
) -> None:
    m = model(policy)
    for i, sid in enumerate(setup):
        m.apply("u", sid, "start", T0 + i)
    target = "s" if event[1] == "terminate" else None
    d = m.apply("u", event[0], event[1], T0 + 1000, target_session_id=target)
    assert (d.decision, d.reason) == expected
    assert rules.OUTCOMES[d.code] == expected


# --- time -----------------------------------------------------------------------------------


def test_expired_leases_do_not_count_towards_the_limit() -> None:
    m = model()
    fill(m, 3)
    d = m.apply("u", "late-comer", "start", T0 + TTL + 5)
    assert (d.reason, d.active_streams) == ("started", 1)


def test_a_lease_whose_expiry_equals_now_is_inactive() -> None:
    m = model()
    m.apply("u", "s", "start", T0)
    assert m.apply("u", "s", "heartbeat", T0 + TTL).reason == "no_lease"

    m = model()
    m.apply("u", "s", "start", T0)
    assert m.apply("u", "s", "heartbeat", T0 + TTL - 1).reason == "renewed"

    m = model(max_streams=1)
    m.apply("u", "a", "start", T0)
    assert m.apply("u", "b", "start", T0 + TTL - 1).reason == "limit_exceeded"
    assert m.apply("u", "b", "start", T0 + TTL).reason == "started"


def test_event_time_never_goes_backwards_within_a_user() -> None:
    m = model()
    m.apply("u", "s", "start", T0 + 60_000)
    late = m.apply("u", "s", "heartbeat", T0)  # an older record timestamp
    assert late.decided_at == T0 + 60_000
    assert late.lease_expires_at == T0 + 60_000 + TTL
    # another user's clock is its own
    assert m.apply("v", "s", "start", T0).decided_at == T0


def test_a_late_event_cannot_revive_an_expired_lease() -> None:
    m = model()
    m.apply("u", "s", "start", T0)
    m.apply("u", "x", "stop", T0 + TTL + 1)  # moves the user's clock past the expiry
    assert m.apply("u", "s", "heartbeat", T0 + 1000).reason == "no_lease"


# --- duplicates and eviction order ------------------------------------------------------------


def test_a_duplicate_event_id_returns_the_first_decision_and_has_no_effect() -> None:
    m = model()
    first = m.apply("u", "s", "start", T0, event_id="e1")
    again = m.apply("u", "s", "start", T0 + 50_000, event_id="e1")
    assert again == first
    assert m.active_leases("u") == {"s": T0 + TTL}  # not renewed by the duplicate
    assert m.users["u"].clock == T0  # and the clock did not move
    # a new eventId for the same start is a new event
    assert m.apply("u", "s", "start", T0 + 50_000, event_id="e2").reason == "already_active"


def test_event_ids_are_remembered_per_user_up_to_the_memory() -> None:
    m = model(memory=2)
    first = m.apply("u", "s", "start", T0, event_id="e1")
    assert m.apply("v", "s", "stop", T0, event_id="e1").reason == "not_active"  # another user's e1
    m.apply("u", "s", "heartbeat", T0 + 1, event_id="e2")
    assert m.apply("u", "s", "start", T0 + 2, event_id="e1") == first
    m.apply("u", "s", "heartbeat", T0 + 3, event_id="e3")
    m.apply("u", "s", "heartbeat", T0 + 4, event_id="e4")
    # e1 fell out of the memory: decided again as a new event
    assert m.apply("u", "s", "start", T0 + 5, event_id="e1").reason == "already_active"


# --- a reused eventId names one event: anything else is a conflict ---------------------------


@pytest.mark.parametrize(
    ("kind", "session"),
    [("start", "s2"), ("stop", "s1"), ("heartbeat", "s1"), ("stop", "s2")],
    ids=["start-of-another-session", "stop-of-the-session", "heartbeat-of-the-session", "stop-of-another"],
)
def test_an_event_id_reused_for_another_event_is_a_conflict_with_no_effect(kind: str, session: str) -> None:
    m = model()
    first = m.apply("u", "s1", "start", T0, event_id="e1")
    d = m.apply("u", session, kind, T0 + 50_000, event_id="e1")
    assert d.code == rules.EVENT_ID_CONFLICT
    assert (d.dead_letter, d.decision, d.reason) == ("event_id_conflict", "dead_letter", "event_id_conflict")
    assert (d.active_streams, d.max_streams, d.lease_expires_at, d.decided_at, d.evicted) == (
        0,
        0,
        None,
        0,
        (),
    )
    assert m.active_leases("u") == {"s1": T0 + TTL}  # no lease made, renewed or removed
    assert m.users["u"].clock == T0  # a dead-lettered event does not move the user's clock
    # The eventId still names the first event: its duplicate gets the first decision.
    assert m.apply("u", "s1", "start", T0 + 60_000, event_id="e1") == first
    assert first.dead_letter is None and rules.EVENT_ID_CONFLICT not in rules.OUTCOMES


def test_a_conflict_does_not_take_a_place_in_the_event_id_memory() -> None:
    m = model(memory=2)
    first = m.apply("u", "s1", "start", T0, event_id="e1")
    m.apply("u", "s2", "start", T0 + 1, event_id="e2")
    for i in range(3):
        assert m.apply("u", f"x{i}", "stop", T0 + 2 + i, event_id="e2").code == rules.EVENT_ID_CONFLICT
    assert m.apply("u", "s1", "start", T0 + 9, event_id="e1") == first  # e1 not pushed out


def test_a_forgotten_event_id_may_name_another_event() -> None:
    m = model(memory=1)
    m.apply("u", "s1", "start", T0, event_id="e1")
    m.apply("u", "s2", "start", T0 + 1, event_id="e2")  # e1 forgotten
    assert m.apply("u", "s1", "stop", T0 + 2, event_id="e1").reason == "stopped"


def test_conflicts_are_per_user() -> None:
    m = model()
    m.apply("u", "s1", "start", T0, event_id="e1")
    assert m.apply("v", "s2", "stop", T0, event_id="e1").reason == "not_active"


def test_a_lowered_event_id_memory_forgets_the_oldest_ids_at_the_users_next_event() -> None:
    m = model(memory=4)
    m.apply("u", "s1", "start", T0, event_id="e1")
    for i in range(2, 5):
        m.apply("u", "s1", "heartbeat", T0 + i, event_id=f"e{i}")
    m.event_id_memory = 2  # a processor restarted with EVENT_ID_MEMORY=2
    # e1 and e2 are forgotten: a stop under e1 is a new event, not a conflict
    assert m.apply("u", "s1", "stop", T0 + 10, event_id="e1").reason == "stopped"
    assert list(m.users["u"].seen) == ["e4", "e1"]
    assert m.apply("u", "s1", "heartbeat", T0 + 11, event_id="e4").reason == "renewed"  # remembered


def test_evict_oldest_evicts_the_oldest_by_start_not_by_last_renewal() -> None:
    m = model("evict_oldest")
    fill(m, 3)
    m.apply("u", "s0", "heartbeat", T0 + 1000)  # s0 renewed last, still the oldest start
    m.apply("u", "s0", "start", T0 + 2000)  # already_active keeps its place too
    d = m.apply("u", "s3", "start", T0 + 3000)
    assert d.evicted == ("s0",)
    d = m.apply("u", "s4", "start", T0 + 4000)
    assert d.evicted == ("s1",)
    assert set(m.active_leases("u")) == {"s2", "s3", "s4"}


def test_evict_oldest_ignores_expired_leases() -> None:
    m = model("evict_oldest", max_streams=2)
    m.apply("u", "old", "start", T0)
    m.apply("u", "b", "start", T0 + TTL - 10)
    d = m.apply("u", "c", "start", T0 + TTL)  # "old" expired exactly now: a free slot, no eviction
    assert (d.reason, d.evicted, d.active_streams) == ("started", (), 2)


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        ReferenceModel(policy="random")


def test_an_event_with_an_issuer_names_it_in_its_decision_and_a_duplicate_names_its_own_record() -> None:
    m = model()
    m.apply("u", "s-tv", "start", T0, "e1")
    d = m.apply("u", "s-phone", "terminate", T0 + 1, "e2", target_session_id="s-tv", issued_by="support:a")
    assert (d.reason, d.evicted, d.issued_by) == ("terminated", ("s-tv",), "support:a")
    assert m.apply("u", "s-phone", "terminate", T0 + 2, "e3", target_session_id="s-x").issued_by is None
    # The header belongs to the record: a duplicate without it names nobody.
    again = m.apply("u", "s-phone", "terminate", T0 + 3, "e2", target_session_id="s-tv")
    assert (again.reason, again.issued_by) == ("terminated", None)
