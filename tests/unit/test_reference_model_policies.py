"""The reference model against the contract's Policies, Deny advice and Terminate sections.

Split from test_reference_model.py (the lease rule table, time, eventIds) to keep each
module short; the open points follow the issue-13 build spec.
"""

from __future__ import annotations

import pytest

from processor import rules
from processor.policies import Policy, PolicyTable
from processor.reference_model import ReferenceModel

TTL = 90_000
T0 = 1_763_800_000_000


def model(policy: str = "reject", max_streams: int = 3) -> ReferenceModel:
    return ReferenceModel(max_streams=max_streams, lease_ttl_ms=TTL, policy=policy)


def fill(m: ReferenceModel, n: int, user: str = "u", at: int = T0) -> None:
    for i in range(n):
        assert m.apply(user, f"s{i}", "start", at + i).reason == "started"


# --- policies: limits by plan, by user, by device class (contract "Policies") ----------------


def plan(max_streams: int, evict: bool = False, **classes: int) -> Policy:
    return Policy("p", max_streams, evict, dict(classes))


def start(m: ReferenceModel, sid: str, at: int, policy: Policy | None = None, cls: str | None = None, **kw):
    return m.apply("u", sid, "start", at, device_id=f"dev-{sid}", content_id=f"c-{sid}",
                   policy=policy, device_class=cls, **kw)  # fmt: skip


def test_without_a_policy_the_settings_apply_and_are_reported_as_the_default() -> None:
    m = model(max_streams=2)
    fill(m, 2)
    d = m.apply("u", "third", "start", T0 + 10)
    assert (d.reason, d.max_streams, d.policy_kind) == ("limit_exceeded", 2, "d")


def test_a_plan_policy_sets_the_limit_and_max_streams_and_is_named_plan() -> None:
    m = model(max_streams=3)
    gold = plan(1)
    first = start(m, "a", T0, gold)
    assert (first.reason, first.max_streams, first.policy_kind) == ("started", 1, "p")
    d = start(m, "b", T0 + 1, gold)
    assert (d.reason, d.active_streams, d.max_streams, d.policy_kind) == ("limit_exceeded", 1, 1, "p")
    # a roomier plan lets the same user start more
    assert start(m, "b", T0 + 2, plan(5)).reason == "started"


@pytest.mark.parametrize(
    ("records", "plan_name", "kind", "limit"),
    [
        ({"default": 2, "plan:gold": 4, "user:u": 1}, "gold", "u", 1),  # user over plan and default
        ({"default": 2, "plan:gold": 4}, "gold", "p", 4),  # plan over default
        ({"default": 2, "plan:gold": 4}, "basic", "d", 2),  # a plan without a record: default
        ({"default": 2, "plan:gold": 4}, None, "d", 2),  # an event without a plan: default
        ({"plan:gold": 4}, "basic", "d", 3),  # nothing: the settings (MAX_STREAMS 3)
        ({"user:v": 1}, None, "d", 3),  # another user's policy does not apply
    ],
)
def test_the_resolved_policy_decides_the_limit_and_kind(
    records: dict[str, int], plan_name: str | None, kind: str, limit: int
) -> None:
    table = PolicyTable(max_streams=3, overflow="reject")
    for key, max_streams in records.items():
        assert table.apply(key.encode(), f'{{"maxStreams": {max_streams}}}'.encode())
    policy = table.resolve("u", plan_name)
    m = model(max_streams=3)
    decisions = [start(m, f"s{i}", T0 + i, policy) for i in range(limit + 1)]
    assert [d.reason for d in decisions] == ["started"] * limit + ["limit_exceeded"]
    assert {(d.max_streams, d.policy_kind) for d in decisions} == {(limit, kind)}


def test_every_decision_carries_its_policy_kind() -> None:
    m = model()
    user = Policy("u", 2, False)
    kinds = [
        start(m, "a", T0, user).policy_kind,
        m.apply("u", "a", "heartbeat", T0 + 1, policy=user).policy_kind,
        m.apply("u", "x", "heartbeat", T0 + 2, policy=plan(2)).policy_kind,
        m.apply("u", "r", "terminate", T0 + 3, policy=user, target_session_id="a").policy_kind,
        m.apply("u", "a", "stop", T0 + 4, policy=plan(2)).policy_kind,
        m.apply("u", "a", "stop", T0 + 5).policy_kind,
    ]
    assert kinds == ["u", "u", "p", "u", "p", "d"]


def test_a_class_cap_denies_a_start_of_that_class_with_its_leases_as_conflicts() -> None:
    m = model()
    p = plan(5, tv=1, mobile=2)
    start(m, "tv1", T0, p, "tv")
    start(m, "ph1", T0 + 1, p, "mobile")
    d = start(m, "tv2", T0 + 2, p, "tv")
    assert (d.decision, d.reason, d.code) == ("deny", "device_class_limit", rules.DEVICE_CLASS_LIMIT)
    assert (d.active_streams, d.max_streams, d.lease_expires_at, d.evicted) == (2, 5, None, ())
    [c] = d.conflicts
    assert (c.session_id, c.device_id, c.device_class, c.content_id, c.started_at, c.lease_expires_at) == (
        "tv1", "dev-tv1", "tv", "c-tv1", T0, T0 + TTL,
    )  # fmt: skip
    assert d.next_free_at == T0 + TTL
    assert set(m.active_leases("u")) == {"tv1", "ph1"}
    # another class, or no class at all, is held only by the total
    assert start(m, "ph2", T0 + 3, p, "mobile").reason == "started"
    assert start(m, "web", T0 + 4, p, "web").reason == "started"  # a class without a cap
    assert start(m, "none", T0 + 5, p, None).reason == "started"
    assert start(m, "ph3", T0 + 6, p, "mobile").reason == "device_class_limit"


def test_the_class_cap_is_checked_before_the_total_limit() -> None:
    m = model()
    p = plan(2, tv=1)
    start(m, "tv1", T0, p, "tv")
    start(m, "ph1", T0 + 1, p, "mobile")
    d = start(m, "tv2", T0 + 2, p, "tv")  # both the class and the total are full
    assert d.reason == "device_class_limit"
    assert [c.session_id for c in d.conflicts] == ["tv1"]


def test_a_class_cap_with_evict_oldest_evicts_the_oldest_lease_of_that_class() -> None:
    m = model()
    p = plan(5, evict=True, tv=2)
    start(m, "tv1", T0, p, "tv")
    start(m, "ph1", T0 + 1, p, "mobile")  # older than tv2, but another class
    start(m, "tv2", T0 + 2, p, "tv")
    d = start(m, "tv3", T0 + 3, p, "tv")
    assert (d.decision, d.reason, d.evicted, d.active_streams, d.conflicts) == (
        "allow",
        "started",
        ("tv1",),
        3,
        None,
    )
    assert set(m.active_leases("u")) == {"ph1", "tv2", "tv3"}


def test_class_evictions_then_total_evictions_in_the_order_removed() -> None:
    m = model()
    start(m, "ph1", T0, cls="mobile")  # made under the settings (3 streams, no caps)
    start(m, "tv1", T0 + 1, cls="tv")
    start(m, "ph2", T0 + 2, cls="mobile")
    d = start(m, "tv2", T0 + 3, plan(2, evict=True, tv=1), "tv")  # now 2 streams, 1 tv
    assert (d.reason, d.evicted, d.active_streams) == ("started", ("tv1", "ph1"), 2)
    assert set(m.active_leases("u")) == {"ph2", "tv2"}


def test_a_class_cap_lowered_below_the_held_leases_evicts_until_below_the_cap() -> None:
    m = model()
    for i in range(3):
        start(m, f"tv{i}", T0 + i, cls="tv")
    d = start(m, "tv3", T0 + 10, plan(5, evict=True, tv=1), "tv")
    assert (d.reason, d.evicted) == ("started", ("tv0", "tv1", "tv2"))


def test_a_total_limit_deny_advises_all_active_leases_oldest_start_first_and_the_next_free_time() -> None:
    m = model()
    p = plan(3)
    start(m, "a", T0, p, "tv")
    start(m, "b", T0 + 1_000, p)  # no class: null in the advice
    m.apply("u", "c", "start", T0 + 2_000, policy=p, device_class="mobile")  # no deviceId/contentId
    m.apply("u", "a", "heartbeat", T0 + 50_000, policy=p)  # the oldest start now expires last
    d = start(m, "d", T0 + 60_000, p, "web")
    assert (d.reason, d.active_streams, d.max_streams) == ("limit_exceeded", 3, 3)
    assert [(c.session_id, c.device_id, c.device_class, c.content_id, c.started_at, c.lease_expires_at)
            for c in d.conflicts] == [
        ("a", "dev-a", "tv", "c-a", T0, T0 + 50_000 + TTL),
        ("b", "dev-b", None, "c-b", T0 + 1_000, T0 + 1_000 + TTL),
        ("c", None, "mobile", None, T0 + 2_000, T0 + 2_000 + TTL),
    ]  # fmt: skip
    assert d.next_free_at == T0 + 1_000 + TTL  # b's: the earliest expiry, not the oldest start's


def test_the_advice_counts_only_active_leases() -> None:
    m = model(max_streams=2)
    start(m, "old", T0)
    start(m, "a", T0 + TTL - 100)
    start(m, "b", T0 + TTL)  # "old" expired exactly now
    d = start(m, "c", T0 + TTL + 1)
    assert [c.session_id for c in d.conflicts] == ["a", "b"]


def test_only_advice_denies_carry_conflicts() -> None:
    m = model(max_streams=1)
    assert start(m, "a", T0).conflicts is None
    assert start(m, "a", T0 + 1).conflicts is None  # already_active
    assert m.apply("u", "x", "heartbeat", T0 + 2).conflicts is None  # no_lease: a deny without advice
    assert start(m, "b", T0 + 3).conflicts is not None
    assert m.apply("u", "r", "terminate", T0 + 4, target_session_id="a").conflicts is None
    d = m.apply("u", "x", "heartbeat", T0 + 5)
    assert d.next_free_at is None


@pytest.mark.parametrize("evict", [False, True])
def test_a_limit_of_zero_admits_no_new_lease_whatever_the_overflow_policy(evict: bool) -> None:
    m = model()
    zero = plan(0, evict)
    d = start(m, "a", T0, zero)
    assert (d.reason, d.active_streams, d.max_streams, d.evicted, d.conflicts) == (
        "limit_exceeded",
        0,
        0,
        (),
        (),
    )
    assert d.next_free_at is None
    start(m, "a", T0 + 1)  # under the settings
    d = start(m, "b", T0 + 2, zero)
    assert (d.reason, d.evicted, [c.session_id for c in d.conflicts]) == ("limit_exceeded", (), ["a"])
    assert d.next_free_at == T0 + 1 + TTL
    # a session already active is always allowed, even under a limit of 0
    assert start(m, "a", T0 + 3, zero).reason == "already_active"


@pytest.mark.parametrize("evict", [False, True])
def test_a_class_cap_of_zero_denies_that_class_whatever_the_overflow_policy(evict: bool) -> None:
    m = model()
    p = plan(5, evict, tv=0)
    d = start(m, "tv1", T0, p, "tv")
    assert (d.reason, d.evicted, d.conflicts, d.next_free_at) == ("device_class_limit", (), (), None)
    start(m, "tv1", T0 + 1, cls="tv")  # made under the settings
    d = start(m, "tv2", T0 + 2, p, "tv")
    assert (d.reason, d.evicted, [c.session_id for c in d.conflicts]) == ("device_class_limit", (), ["tv1"])
    assert start(m, "ph", T0 + 3, p, "mobile").reason == "started"


def test_a_start_denied_by_a_total_of_zero_evicts_nothing_even_with_a_full_class() -> None:
    # The class step would evict under evict_oldest, but the total (0) denies: a deny's
    # effect is "none" (rule table), so nothing is evicted and all leases are the advice.
    m = model()
    start(m, "tv1", T0, cls="tv")
    start(m, "ph1", T0 + 1, cls="mobile")
    d = start(m, "tv2", T0 + 2, plan(0, evict=True, tv=1), "tv")
    assert (d.reason, d.evicted, [c.session_id for c in d.conflicts]) == (
        "limit_exceeded",
        (),
        ["tv1", "ph1"],
    )
    assert set(m.active_leases("u")) == {"tv1", "ph1"}


def test_a_lease_keeps_the_class_and_start_of_its_start_event() -> None:
    m = model()
    p = plan(5, tv=1)
    start(m, "s", T0, p, "mobile")
    m.apply("u", "s", "heartbeat", T0 + 10, policy=p, device_class="tv")  # a heartbeat changes no class
    start(m, "s", T0 + 20, p, "tv")  # already_active: renews only
    lease = m.lease("u", "s")
    assert (lease.device_class, lease.started_at, lease.device_id, lease.expires_at) == (
        "mobile", T0, "dev-s", T0 + 20 + TTL,
    )  # fmt: skip
    assert start(m, "t", T0 + 30, p, "tv").reason == "started"  # s holds no tv slot


def test_expired_leases_do_not_count_towards_a_class_cap() -> None:
    m = model()
    p = plan(5, tv=1)
    start(m, "tv1", T0, p, "tv")
    assert start(m, "tv2", T0 + TTL - 1, p, "tv").reason == "device_class_limit"
    assert start(m, "tv2", T0 + TTL, p, "tv").reason == "started"


def test_a_redelivered_deny_gets_the_same_advice_and_policy_even_after_policies_changed() -> None:
    m = model()
    start(m, "a", T0, plan(1))
    first = start(m, "b", T0 + 1, plan(1), event_id="e-b")
    assert first.reason == "limit_exceeded"
    again = start(m, "b", T0 + 5, Policy("u", 10, True), event_id="e-b")
    assert again == first
    assert (again.policy_kind, again.max_streams, again.conflicts[0].session_id) == ("p", 1, "a")


# --- terminate: stop a session from elsewhere (contract "Terminate") -------------------------


def test_terminate_of_an_active_session_removes_it_and_names_it_for_a_revoke() -> None:
    m = model()
    fill(m, 3)
    d = m.apply("u", "phone", "terminate", T0 + 10, event_id="e-t", target_session_id="s1")
    assert (d.decision, d.reason, d.code) == ("allow", "terminated", rules.TERMINATED)
    assert (d.active_streams, d.max_streams, d.lease_expires_at, d.decided_at) == (2, 3, None, T0 + 10)
    assert d.evicted == ("s1",)  # the verdict builder names its revoke `terminated`
    assert d.conflicts is None
    assert set(m.active_leases("u")) == {"s0", "s2"}
    assert m.apply("u", "s1", "heartbeat", T0 + 20).reason == "no_lease"


def test_terminate_of_an_unknown_or_expired_session_is_not_active_and_changes_nothing() -> None:
    m = model()
    fill(m, 1)
    d = m.apply("u", "phone", "terminate", T0 + 10, target_session_id="nope")
    assert (d.decision, d.reason, d.code, d.evicted, d.active_streams, d.lease_expires_at) == (
        "allow", "not_active", rules.NOT_ACTIVE, (), 1, None,
    )  # fmt: skip
    d = m.apply("u", "phone", "terminate", T0 + TTL, target_session_id="s0")  # expired exactly now
    assert (d.reason, d.evicted, d.active_streams) == ("not_active", (), 0)


def test_terminate_needs_no_lease_of_the_requester_and_leaves_the_requesters_lease() -> None:
    m = model()
    fill(m, 2)
    d = m.apply("u", "s0", "terminate", T0 + 10, target_session_id="s1")
    assert (d.reason, d.evicted, d.lease_expires_at) == ("terminated", ("s1",), None)
    assert set(m.active_leases("u")) == {"s0"}


def test_a_session_may_terminate_itself() -> None:
    m = model()
    fill(m, 1)
    d = m.apply("u", "s0", "terminate", T0 + 10, target_session_id="s0")
    assert (d.reason, d.evicted, d.active_streams) == ("terminated", ("s0",), 0)


def test_terminate_reaches_only_the_users_own_sessions() -> None:
    m = model()
    fill(m, 1, user="v")
    assert m.apply("u", "x", "terminate", T0 + 1, target_session_id="s0").reason == "not_active"
    assert set(m.active_leases("v")) == {"s0"}


def test_a_terminate_without_a_target_is_refused() -> None:
    with pytest.raises(ValueError):
        model().apply("u", "s", "terminate", T0)


def test_the_event_id_of_a_terminate_names_its_target_too() -> None:
    m = model()
    fill(m, 2)
    first = m.apply("u", "r", "terminate", T0 + 10, event_id="e1", target_session_id="s0")
    assert m.apply("u", "r", "terminate", T0 + 20, event_id="e1", target_session_id="s0") == first
    other = m.apply("u", "r", "terminate", T0 + 20, event_id="e1", target_session_id="s1")
    assert other.code == rules.EVENT_ID_CONFLICT
    assert set(m.active_leases("u")) == {"s1"}  # the conflict terminated nothing


def test_a_target_session_id_on_another_type_is_ignored_identity_included() -> None:
    m = model()
    first = m.apply("u", "s", "start", T0, event_id="e1", target_session_id="x")
    assert first.reason == "started"
    assert m.apply("u", "s", "start", T0 + 1, event_id="e1", target_session_id="y") == first
    assert m.apply("u", "s", "start", T0 + 2, event_id="e1") == first
    # a start and a terminate under one eventId are two events
    conflict = m.apply("u", "s", "terminate", T0 + 3, event_id="e1", target_session_id="s")
    assert conflict.code == rules.EVENT_ID_CONFLICT
