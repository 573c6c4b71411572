"""The Lua script, run by real Redis, equals the pure-Python reference model of the contract."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from redis.asyncio import Redis

from processor import rules as codes
from processor.lease_store import LeaseStore, Result, Rules
from processor.reference_model import ReferenceModel
from processor.wire import DecodedEvent

# (type, user, session, timestamp step, eventId, resend): a few eventIds, so that they are
# reused, mostly for other events (conflicts); `resend` k > 0 re-sends the k-th previous
# event instead, same eventId and all (an upstream duplicate, or a new event beyond memory).
event = st.tuples(
    st.sampled_from(["start", "start", "heartbeat", "stop"]),
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["s1", "s2", "s3", "s4", "s5"]),
    st.integers(min_value=-20_000, max_value=60_000),  # late events included
    st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(12)])),
    st.sampled_from([0, 0, 0, 1, 2, 5]),
)
# eventIds remembered per user, per batch: as if the processor restarted with another setting
memory = st.sampled_from([1, 2, 4, 40])


def expected(decision) -> Result:
    if decision.code == codes.EVENT_ID_CONFLICT:
        return Result(decision.code)
    out = [
        decision.code,
        decision.active_streams,
        decision.max_streams,
        decision.lease_expires_at or 0,
        decision.decided_at,
    ]
    if decision.evicted:
        out.append(list(decision.evicted))
    return Result(*out)


def rules_with(policy: str, event_id_memory: int) -> Rules:
    return Rules(
        max_streams=3,
        lease_ttl_ms=90_000,
        overflow_policy=policy,
        event_id_memory=event_id_memory,
        idle_user_ttl_ms=3_600_000,
    )


async def run_both(redis_url: str, policy: str, batches: list[tuple[int, list[tuple]]]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        topic = f"prop-{uuid.uuid4().hex}"
        claim = await LeaseStore(redis, topic, rules_with(policy, 4)).claim(0)
        model = ReferenceModel(3, 90_000, policy, event_id_memory=4)
        offset, clock = 0, 1_700_000_000_000
        sent: list[DecodedEvent] = []
        history: list[tuple[tuple[int, int, DecodedEvent], Result]] = []
        for event_id_memory, batch in batches:
            store = LeaseStore(redis, topic, rules_with(policy, event_id_memory))
            model.event_id_memory = event_id_memory
            events = []
            for kind, user, session, step, event_id, resend in batch:
                clock += step
                ev = DecodedEvent(kind, user, session, event_id, "tv", None)
                if resend and len(sent) >= resend and sent[-resend].event_id is not None:
                    ev = sent[-resend]
                sent.append(ev)
                events.append((offset, clock, ev))
                offset += 1
            committed = events[0][0]  # earlier results are trimmed as the processor commits
            got = await store.decide(0, claim.epoch, committed, offset - 1, events)
            want = [
                expected(model.apply(ev.user_id, ev.session_id, ev.type, ts, ev.event_id, ev.device_id))
                for _, ts, ev in events
            ]
            assert got == want
            if codes.EVENT_ID_CONFLICT in [r.code for r in want]:
                label("a batch with a conflict")
            # A replay of the same batch changes nothing and answers the same.
            assert await store.decide(0, claim.epoch, committed, offset - 1, events) == want
            history += zip(events, want, strict=True)
        known = [(ev.user_id, ev.event_id) for (_, _, ev), _ in history if ev.event_id is not None]
        reused = len(known) - len(set(known))
        label(f"reused eventIds: {'none' if reused == 0 else '1-4' if reused < 5 else '5 or more'}")
        label(f"memories used: {len({m for m, _ in batches})}")
        for user in ("u1", "u2"):
            leases = await store.active_leases(0, user)
            assert {sid: lease["expiresAt"] for sid, lease in leases.items()} == model.active_leases(user)
        # A rewound group: offsets whose results were trimmed answer from the eventId memory
        # with a result of the same event (never another event's), else [0].
        replay = await store.decide(0, claim.epoch, offset, offset - 1, [ev for ev, _ in history])
        results_of: dict[DecodedEvent, list[Result]] = {}
        for (_, _, ev), first in history:
            if ev.event_id is not None and first.code != codes.EVENT_ID_CONFLICT:
                results_of.setdefault(ev, []).append(first)
        for ((_, _, ev), first), again in zip(history, replay, strict=True):
            assert again in [first, Result(0), *results_of.get(ev, [])], (ev, first, again)
    finally:
        await redis.aclose()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.tuples(memory, st.lists(event, min_size=1, max_size=12)), min_size=1, max_size=6),
    policy=st.sampled_from(["reject", "evict_oldest"]),
)
def test_script_decisions_equal_the_reference_model_for_random_event_sequences(redis_url, batches, policy):
    asyncio.run(run_both(redis_url, policy, batches))
