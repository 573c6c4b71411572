"""The Lua script, run by real Redis, equals the pure-Python reference model of the contract.

Random event sequences (start, heartbeat, stop, terminate; plans and device classes; reused
and re-sent eventIds; late records) under a random policy table per batch (the settings, a
`default` record, plan and user policies with class caps, both overflow policies, limits
including 0). Each event's policy is resolved here from the contract's words, given to the
script (`policies=`) and to the model (None for the settings: its own).

The session ledger: users sit on two events partitions (u1 and u2 share one, u3's is drawn),
so stream times move apart; gaps long enough to expire leases are drawn. Each batch is one
script call per partition; the expire entries (and their place: before which record), and
the partition's active lease counts per device class, equal the model's.
"""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from processor import rules as codes
from processor.lease_store import LeaseStore, Rules
from processor.policies import Policy
from processor.reference_model import Decision, ReferenceModel
from processor.script_results import Expiry, Result
from processor.wire import DecodedEvent
from tests.redis_targets import ON_SINGLE_AND_CLUSTER, RedisTarget

pytestmark = ON_SINGLE_AND_CLUSTER  # the script equals the model on one Redis and on a Redis Cluster

MAX_STREAMS = 3  # the settings: MAX_STREAMS, and OVERFLOW_POLICY drawn per example
SESSIONS = ["s1", "s2", "s3", "s4", "s5"]

# (type, user, session, timestamp step, eventId, resend, target, plan, deviceClass,
# (deviceId, contentId)): a few eventIds, so that they are reused, mostly for other events
# (conflicts); `resend` k > 0 re-sends the k-th previous event instead, same eventId and all
# (an upstream duplicate, or a new event beyond memory). `target` is the targetSessionId of a
# terminate (the decoder gives other types none).
event = st.tuples(
    st.sampled_from(["start", "start", "start", "heartbeat", "stop", "terminate"]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(SESSIONS),
    st.one_of(  # late events included; a long silence expires leases by stream time
        st.integers(min_value=-20_000, max_value=60_000), st.sampled_from([90_000, 150_000, 400_000])
    ),
    st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(12)])),
    st.sampled_from([0, 0, 0, 1, 2, 5]),
    st.sampled_from(SESSIONS),
    st.sampled_from([None, "gold", "basic"]),
    st.sampled_from(["tv", "tv", "mobile", "web", None]),
    st.sampled_from([("dev-1", None), (None, "c-1"), ("dev-2", "c-2"), (None, None)]),  # "": below
)
# eventIds remembered per user, per batch: as if the processor restarted with another setting
memory = st.sampled_from([1, 2, 4, 40])
# One policy record's value: (maxStreams, overflow or None for OVERFLOW_POLICY, deviceClasses)
policy_value = st.tuples(
    st.sampled_from([0, 1, 2, 2, 3, 4]),
    st.sampled_from([None, "reject", "evict_oldest"]),
    st.dictionaries(
        st.sampled_from(["tv", "mobile", "web"]), st.integers(min_value=0, max_value=3), max_size=3
    ),
)
# The policies topic as the processor holds it while deciding a batch (key -> value).
policy_table = st.fixed_dictionaries(
    {}, optional={key: policy_value for key in ("default", "plan:gold", "plan:basic", "user:u1", "user:u2")}
)


def resolve(table: dict[str, Policy], settings: Policy, user_id: str, plan: str | None) -> Policy:
    """Contract, Policies: `user:<userId>` if that exists, else `plan:<plan>` if the event
    names a plan and that exists, else `default` if that exists, else the settings."""
    if f"user:{user_id}" in table:
        return table[f"user:{user_id}"]
    if plan is not None and f"plan:{plan}" in table:
        return table[f"plan:{plan}"]
    return table.get("default", settings)


def policies_of(records: dict[str, tuple], overflow: str) -> dict[str, Policy]:
    kinds = {"default": "d", "plan": "p", "user": "u"}
    return {
        key: Policy(kinds[key.split(":")[0]], limit, (over or overflow) == "evict_oldest", dict(classes))
        for key, (limit, over, classes) in records.items()
    }


def identity(ev: DecodedEvent) -> tuple:
    """The event an eventId names (contract: its type, sessionId and targetSessionId)."""
    return (ev.user_id, ev.event_id, ev.type, ev.session_id, ev.target_session_id)


def normal(r: Result) -> tuple:
    """A result as compared: an empty list (or a script's empty table) equals none."""
    conflicts = [list(c) for c in (r.conflicts or [])]
    policy = "p" if r.policy.startswith("p:") else r.policy  # the plan's name is checked by test_policies
    expired = [tuple(e) for e in r.expired]
    evicted = list(r.evicted or [])
    return (r.code, r.active, r.max_streams, r.expires_at, r.now, evicted, policy, conflicts, expired)


def expected(decision: Decision) -> Result:
    expired = tuple(
        Expiry(e.user_id, e.session_id, e.lease_expires_at, e.active_streams, e.device_class, e.decided_at)
        for e in decision.expired
    )
    if decision.code == codes.EVENT_ID_CONFLICT:
        return Result(decision.code, expired=expired)
    conflicts = None
    if decision.conflicts is not None:
        conflicts = [
            [c.session_id, c.device_id, c.device_class, c.content_id, c.started_at, c.lease_expires_at]
            for c in decision.conflicts
        ]
    return Result(
        decision.code,
        decision.active_streams,
        decision.max_streams,
        decision.lease_expires_at or 0,
        decision.decided_at,
        list(decision.evicted),
        decision.policy_kind,
        conflicts,
        expired,
    )


def rules_with(policy: str, event_id_memory: int, max_expiries_per_call: int = 0) -> Rules:
    return Rules(
        max_streams=MAX_STREAMS,
        lease_ttl_ms=90_000,
        overflow_policy=policy,
        event_id_memory=event_id_memory,
        idle_user_ttl_ms=3_600_000,
        max_expiries_per_call=max_expiries_per_call,
    )


def decided(
    model: ReferenceModel, ts: int, ev: DecodedEvent, policy: Policy | None, partition: int = 0
) -> Result:
    decision = model.apply(
        ev.user_id, ev.session_id, ev.type, ts, ev.event_id, ev.device_id, ev.content_id,
        policy=policy, device_class=ev.device_class, target_session_id=ev.target_session_id,
        partition=partition,
    )  # fmt: skip
    return expected(decision)


def labels(want: list[Result]) -> None:
    got = {r.code for r in want}
    for code, name in [
        (codes.EVENT_ID_CONFLICT, "a conflict"),
        (codes.DEVICE_CLASS_LIMIT, "a class deny"),
        (codes.LIMIT_EXCEEDED, "a limit deny"),
        (codes.TERMINATED, "a terminate"),
    ]:
        if code in got:
            label(f"a batch with {name}")
    if any(r.evicted and r.code == codes.STARTED for r in want):
        label("a batch with an eviction")
    expiries = sum(len(r.expired) for r in want)
    if expiries:
        label(f"a batch with {'one expiry' if expiries == 1 else 'several expiries'}")


async def run_both(
    redis_target: RedisTarget,
    overflow: str,
    u3_partition: int,
    batches: list[tuple[int, dict, list[tuple]]],
    expiry_bound: int = 0,
) -> None:
    """`expiry_bound`: MAX_EXPIRIES_PER_CALL (small ones split a batch into several calls, which
    the model knows nothing of: the verdicts must not change)."""
    redis = redis_target.connect()
    partition_of = {"u1": 0, "u2": 0, "u3": u3_partition}
    try:
        topic = f"prop-{uuid.uuid4().hex}"
        epochs = {p: (await LeaseStore(redis, topic, rules_with(overflow, 4)).claim(p)).epoch for p in (0, 1)}
        model = ReferenceModel(MAX_STREAMS, 90_000, overflow, event_id_memory=4)
        settings_policy = Policy("d", MAX_STREAMS, overflow == "evict_oldest")
        offsets, clock = {0: 0, 1: 0}, 1_700_000_000_000
        sent: list[DecodedEvent] = []
        history: dict[int, list[tuple[tuple[int, int, DecodedEvent], Result]]] = {0: [], 1: []}
        for event_id_memory, records, batch in batches:
            store = label_split_calls(
                LeaseStore(redis, topic, rules_with(overflow, event_id_memory, expiry_bound))
            )
            model.event_id_memory = event_id_memory
            table = policies_of(records, overflow)
            events: dict[int, list] = {0: [], 1: []}
            policies: dict[int, list[Policy]] = {0: [], 1: []}
            want: dict[int, list[Result]] = {0: [], 1: []}
            for kind, user, session, step, event_id, resend, target, plan, device_class, ids in batch:
                clock += step
                ev = DecodedEvent(
                    kind, user, session, event_id, *ids,
                    target if kind == "terminate" else None, plan, device_class,
                )  # fmt: skip
                if resend and len(sent) >= resend and sent[-resend].event_id is not None:
                    ev = sent[-resend]
                sent.append(ev)
                p = partition_of[ev.user_id]
                policy = resolve(table, settings_policy, ev.user_id, ev.plan)
                events[p].append((offsets[p], clock, ev))
                policies[p].append(policy)
                offsets[p] += 1
                # In log order across partitions: each partition's stream time is its own.
                want[p].append(decided(model, clock, ev, None if policy is settings_policy else policy, p))
            for p in (0, 1):
                if not events[p]:
                    continue
                committed = events[p][0][0]  # earlier results are trimmed as the processor commits
                got = await store.decide(
                    p, epochs[p], committed, offsets[p] - 1, events[p], policies=policies[p]
                )
                assert [normal(r) for r in got] == [normal(r) for r in want[p]], mismatch(
                    events[p], policies[p], got, want[p]
                )
                assert counts_of(got.leases) == model.active_by_class(p)
                labels(want[p])
                # A replay of the same batch changes nothing and answers the same.
                again = await store.decide(
                    p, epochs[p], committed, offsets[p] - 1, events[p], policies=policies[p]
                )
                assert [normal(r) for r in again] == [normal(r) for r in want[p]]
                assert again.leases == got.leases
                history[p] += zip(events[p], want[p], strict=True)
        known = [(ev.user_id, ev.event_id) for p in (0, 1) for (_, _, ev), _ in history[p] if ev.event_id]
        reused = len(known) - len(set(known))
        label(f"reused eventIds: {'none' if reused == 0 else '1-4' if reused < 5 else '5 or more'}")
        for user in ("u1", "u2", "u3"):
            leases = await store.active_leases(partition_of[user], user)
            assert {sid: lease["expiresAt"] for sid, lease in leases.items()} == model.active_leases(user)
        for p in (0, 1):
            if history[p]:
                await rewound_group_replay(store, p, epochs[p], offsets[p], history[p])
    finally:
        await redis.aclose()


def label_split_calls(store: LeaseStore) -> LeaseStore:
    """Label the examples where a bound on expiries split a batch into several script calls."""
    call = store._decide

    async def labelled(**kwargs):
        reply = await call(**kwargs)
        if reply.startswith(b"MORE:"):
            label("a batch decided in several calls (expiry bound)")
        return reply

    store._decide = labelled
    return store


def counts_of(leases: dict[str, int]) -> dict[str | None, int]:
    """The script's per-class counts as the model keeps them ('' = None; zero counts dropped)."""
    return {(k or None): n for k, n in leases.items() if n}


async def rewound_group_replay(store: LeaseStore, p: int, epoch: int, end: int, history: list) -> None:
    """A rewound group: offsets whose results were trimmed answer from the eventId memory
    with a result of the same event (never another event's, never its expiries), else [0]."""
    replay = await store.decide(p, epoch, end, end - 1, [ev for ev, _ in history])
    results_of: dict[tuple, list[tuple]] = {}  # by what an eventId names, not deviceClass or plan
    for (_, _, ev), first in history:
        if ev.event_id is not None and first.code != codes.EVENT_ID_CONFLICT:
            results_of.setdefault(identity(ev), []).append(normal(first._replace(expired=())))
    for ((_, _, ev), first), again in zip(history, replay, strict=True):
        allowed = [normal(first), normal(Result(0)), *results_of.get(identity(ev), [])]
        assert normal(again) in allowed, (ev, first, again)


def mismatch(events: list, policies: list[Policy], got: list[Result], want: list[Result]) -> str:
    lines = ["script != model, first differences:"]
    for (offset, ts, ev), policy, g, w in zip(events, policies, got, want, strict=True):
        if normal(g) != normal(w):
            lines.append(f"  @{offset} ts={ts} {ev} policy={policy}\n    script={g}\n    model ={w}")
    return "\n".join(lines[:6])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(memory, policy_table, st.lists(event, min_size=1, max_size=12)), min_size=1, max_size=6
    ),
    overflow=st.sampled_from(["reject", "evict_oldest"]),
    u3_partition=st.sampled_from([0, 1]),
    expiry_bound=st.sampled_from([0, 0, 1, 2, 3]),
)
def test_script_decisions_equal_the_reference_model_for_random_event_sequences(
    redis_target, batches, overflow, u3_partition, expiry_bound
):
    asyncio.run(run_both(redis_target, overflow, u3_partition, batches, expiry_bound))


async def empty_ids_in_the_advice(redis_target: RedisTarget) -> tuple[list[Result], list[Result]]:
    redis = redis_target.connect()
    try:
        store = LeaseStore(redis, f"prop-{uuid.uuid4().hex}", rules_with("reject", 4))
        claim = await store.claim(0)
        model = ReferenceModel(MAX_STREAMS, 90_000, "reject", event_id_memory=4)
        zero = Policy("d", 0, False)
        events = [
            (0, 1_700_000_000_000, DecodedEvent("start", "u1", "s1", None, "", "", None, None, "tv")),
            (1, 1_700_000_000_001, DecodedEvent("start", "u1", "s2", None, "dev-2", None, None, None, "tv")),
        ]
        got = await store.decide(0, claim.epoch, 0, 1, events, policies=[Policy("d", 3, False), zero])
        want = [
            decided(model, ts, ev, policy) for (_, ts, ev), policy in zip(events, [None, zero], strict=True)
        ]
        return got, want
    finally:
        await redis.aclose()


def test_an_empty_device_id_and_content_id_are_kept_with_the_lease_and_shown_in_the_advice(redis_target):
    # Contract: deviceId, contentId are optional strings (so "" is one), "kept with the
    # lease, shown in listings and advice"; the advice has null only "where unknown".
    got, want = asyncio.run(empty_ids_in_the_advice(redis_target))
    assert want[1].conflicts == [["s1", "", "tv", "", 1_700_000_000_000, 1_700_000_090_000]]
    assert [normal(r) for r in got] == [normal(r) for r in want]
