"""The simulated population: deterministic, realistic enough, and safe for Kafka's clock limits."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import orjson
import pytest

from processor.reference_model import Decision, ReferenceModel
from producer_sim.faults import encode_event
from producer_sim.plans import DEVICE_CLASSES, PLANS, policy_records, policy_table
from producer_sim.population import FAMILY, NORMAL, SHARER, Population, PopulationConfig, SimEvent
from producer_sim.runner import CLOCK_MARGIN_MS, Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig

HOUR_MS = 3_600_000


def take(pop: Population, n: int) -> list[SimEvent]:
    return [pop.next_event() for _ in range(n)]


def test_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    cfg = PopulationConfig(users=200, seed=7, start_ms=1_000_000, run_id="r1")
    first = take(Population(cfg), 3000)
    assert take(Population(cfg), 3000) == first
    other = take(Population(PopulationConfig(users=200, seed=8, start_ms=1_000_000, run_id="r1")), 3000)
    assert other != first


def test_the_same_seed_in_another_run_keeps_the_behaviour_but_not_the_ids() -> None:
    a = take(Population(PopulationConfig(users=50, seed=3, run_id="a")), 500)
    b = take(Population(PopulationConfig(users=50, seed=3, run_id="b")), 500)
    assert [(e.type, e.ts, e.kind) for e in a] == [(e.type, e.ts, e.kind) for e in b]
    assert not {e.event_id for e in a} & {e.event_id for e in b}
    assert not {e.user_id for e in a} & {e.user_id for e in b}


def test_events_come_in_time_order_with_unique_event_ids() -> None:
    events = take(Population(PopulationConfig(users=300, seed=1, sharers=0.2)), 20_000)
    times = [e.ts for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == len(events)


def test_every_session_heartbeats_at_the_interval_and_stops_within_one() -> None:
    interval = 20_000
    events = take(Population(PopulationConfig(users=200, seed=5, heartbeat_interval_ms=interval)), 20_000)
    by_session: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        by_session[e.session_id].append(e)
    stops = 0
    for session in by_session.values():
        assert session[0].type == "start"
        for prev, cur in itertools.pairwise(session):
            if cur.type == "heartbeat":
                assert cur.ts - prev.ts == interval
            else:
                assert cur.type == "stop"
                assert 0 < cur.ts - prev.ts <= interval
                assert cur is session[-1]
                stops += 1
    assert stops > 0


def _max_concurrent_attempts(events: list[SimEvent], interval: int) -> dict[str, int]:
    """Per user, the most sessions that were playing (or trying to) at one start."""
    last_seen: dict[str, dict[str, int]] = defaultdict(dict)
    most: dict[str, int] = defaultdict(int)
    for e in events:
        sessions = last_seen[e.user_id]
        if e.type == "stop":
            sessions.pop(e.session_id, None)
            continue
        sessions[e.session_id] = e.ts
        if e.type == "start":
            live = sum(1 for ts in sessions.values() if e.ts - ts < interval)
            most[e.user_id] = max(most[e.user_id], live)
    return most


def test_sharers_try_more_streams_than_the_limit_and_normal_viewers_do_not() -> None:
    cfg = PopulationConfig(users=400, seed=11, sharers=0.1, families=0.2, max_streams=3)
    pop = Population(cfg)
    most = _max_concurrent_attempts(take(pop, 30_000), cfg.heartbeat_interval_ms)
    kinds = pop.kind_of
    sharers = [u for u in most if kinds[u] == SHARER]
    assert len(sharers) > 20
    over = [u for u in sharers if most[u] > cfg.max_streams]
    assert len(over) >= 0.9 * len(sharers)
    assert all(most[u] <= 2 for u in most if kinds[u] == NORMAL)
    assert max(most[u] for u in most if kinds[u] == FAMILY) >= cfg.max_streams


def test_a_denied_start_is_sometimes_retried_with_the_same_session() -> None:
    pop = Population(PopulationConfig(users=100, seed=2, sharers=1.0, families=0.0))
    retried = 0
    denied: set[str] = set()
    for _ in range(5000):
        e = pop.next_event()
        if e.type == "start" and e.session_id in denied:
            retried += 1
        allowed = not (e.type == "start" and e.session_id not in denied)  # deny every first start
        if not allowed:
            denied.add(e.session_id)
        pop.feedback(e, allowed)
    assert retried > 0


def test_feedback_must_be_for_the_last_event() -> None:
    pop = Population(PopulationConfig(users=5))
    first = pop.next_event()
    pop.next_event()
    with pytest.raises(ValueError):
        pop.feedback(first, True)


@pytest.mark.parametrize(
    "cfg",
    [
        SimConfig(speed=20, duration=30, rate=300, users=300, run_id="t"),
        SimConfig(events=20_000, users=100, run_id="t"),
        SimConfig(rate=5000, duration=10, users=100, run_id="t"),
    ],
    ids=["paced-by-speed", "unpaced-by-count", "paced-by-rate"],
)
def test_record_timestamps_stay_within_the_brokers_one_hour_future_limit(cfg: SimConfig) -> None:
    wall_start = time.time() * 1000
    sim = Simulation(cfg, SimSettings(_env_file=None))
    assert sim.origin_ms + sim.span_s * 1000 <= wall_start - CLOCK_MARGIN_MS + 1000
    n = cfg.events or int((cfg.rate or 0) * (cfg.duration or 0))
    events = take(sim.population, n)
    for i, e in enumerate(events):
        # the wall time at which the runner may send it at the earliest
        sent_at = wall_start
        if cfg.speed is not None:
            sent_at = max(sent_at, wall_start + (e.ts - sim.origin_ms) / cfg.speed)
        if cfg.rate is not None:
            sent_at = max(sent_at, wall_start + i / cfg.rate * 1000)
        assert e.ts <= sent_at + HOUR_MS


# --- plans, device classes, terminates ------------------------------------------------------


def drive(pop: Population, n: int, overflow: str = "reject") -> list[tuple[SimEvent, Decision]]:
    """Play `n` events against the reference model under the plans' policies, as the runner does."""
    table = policy_table(3, overflow, policy_records())
    model = ReferenceModel(max_streams=3, policy=overflow)
    out = []
    for _ in range(n):
        e = pop.next_event()
        d = model.apply(
            e.user_id, e.session_id, e.type, e.ts, e.event_id, e.device_id, e.content_id,
            policy=table.resolve(e.user_id, e.plan), device_class=e.device_class,
            target_session_id=e.target_session_id,
        )  # fmt: skip
        pop.feedback(e, d.decision == "allow", [c.session_id for c in d.conflicts or ()], d.evicted)
        out.append((e, d))
    return out


def test_without_plans_events_name_no_plan_class_or_target_and_encode_as_before() -> None:
    events = take(Population(PopulationConfig(users=100, seed=4, sharers=0.3)), 3000)
    assert all(e.plan is None and e.device_class is None and e.target_session_id is None for e in events)
    assert {e.type for e in events} <= {"start", "heartbeat", "stop"}
    keys = {"type", "userId", "sessionId", "deviceId", "contentId", "eventId", "ts"}
    assert all(set(orjson.loads(encode_event(e))) == keys for e in events[:200])


def test_with_plans_every_user_keeps_one_plan_and_events_name_the_device_class() -> None:
    cfg = PopulationConfig(users=300, seed=9, sharers=0.15, families=0.3, plans=True)
    pop = Population(cfg)
    events = take(pop, 20_000)
    plan_of = {u.user_id: u.plan for u in pop.users}
    assert set(plan_of.values()) == set(PLANS)
    for e in events:
        assert e.plan == plan_of[e.user_id]
        assert e.device_class == DEVICE_CLASSES[e.device_id]
        value = orjson.loads(encode_event(e))
        assert (value["plan"], value["deviceClass"]) == (e.plan, e.device_class)
    for u in pop.users:
        assert u.max_streams == PLANS[u.plan].max_streams
        if u.kind == SHARER:
            assert u.slots > u.max_streams  # sharers try more screens than their plan allows
    assert {e.device_class for e in events} == {"tv", "mobile", "web"}


def test_denied_players_terminate_the_oldest_conflict_then_retry_and_revoked_players_stop() -> None:
    pop = Population(
        PopulationConfig(users=200, seed=3, sharers=0.4, families=0.4, plans=True, terminates=0.8)
    )
    played = drive(pop, 30_000)
    denied: dict[str, Decision] = {}  # sessionId -> its last denied start
    revoked_at: dict[str, int] = {}
    terminates = class_denies = 0
    next_of_terminate: dict[str, str] = {}
    for e, d in played:
        if e.session_id in next_of_terminate:
            assert e.type == next_of_terminate.pop(e.session_id)  # the start is tried again
        if e.session_id in revoked_at:
            pytest.fail(f"{e.type} of {e.session_id} after its lease was revoked")
        if e.type == "start" and d.decision == "deny":
            denied[e.session_id] = d
            class_denies += d.reason == "device_class_limit"
        elif e.type == "terminate":
            terminates += 1
            deny = denied[e.session_id]  # the requester is the denied session, on its own device
            assert deny.conflicts and e.target_session_id == deny.conflicts[0].session_id
            next_of_terminate[e.session_id] = "start"
            if d.reason == "terminated":
                assert d.evicted == (e.target_session_id,)
                revoked_at[e.target_session_id] = e.ts
    assert terminates > 20 and class_denies > 20
    assert len(revoked_at) > 10
    assert pop.stopped_by_revoke > 10


def test_with_plans_evicted_players_stop_too() -> None:
    pop = Population(PopulationConfig(users=200, seed=5, sharers=0.4, plans=True))
    played = drive(pop, 20_000, overflow="evict_oldest")
    evicted = {sid for _e, d in played for sid in d.evicted}
    assert evicted and pop.stopped_by_revoke > 0
    late = [e for e, _d in played if e.session_id in evicted and e.type == "heartbeat"]
    seen_revoke: set[str] = set()
    for e, d in played:
        assert not (e.session_id in seen_revoke and e.type == "heartbeat"), e
        seen_revoke.update(d.evicted)
    assert late  # heartbeats came before the eviction, none after
