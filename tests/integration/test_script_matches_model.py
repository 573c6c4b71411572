"""The Lua script, run by real Redis, equals the pure-Python reference model of the contract."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from processor.lease_store import LeaseStore, Result, Rules
from processor.reference_model import ReferenceModel
from processor.wire import DecodedEvent

event = st.tuples(
    st.sampled_from(["start", "start", "heartbeat", "stop"]),
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["s1", "s2", "s3", "s4", "s5"]),
    st.integers(min_value=-20_000, max_value=60_000),  # timestamp step: late events included
    st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(12)])),  # reused ids: upstream duplicates
)


def expected(decision) -> Result:
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


async def run_both(redis_url: str, policy: str, batches: list[list[tuple]]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        rules = Rules(
            max_streams=3,
            lease_ttl_ms=90_000,
            overflow_policy=policy,
            event_id_memory=4,
            idle_user_ttl_ms=3_600_000,
        )
        store = LeaseStore(redis, f"prop-{uuid.uuid4().hex}", rules)
        claim = await store.claim(0)
        model = ReferenceModel(3, 90_000, policy, event_id_memory=4)
        offset, clock = 0, 1_700_000_000_000
        for batch in batches:
            events = []
            for kind, user, session, step, event_id in batch:
                clock += step
                events.append((offset, clock, DecodedEvent(kind, user, session, event_id, "tv", None)))
                offset += 1
            got = await store.decide(0, claim.epoch, -1, offset - 1, events)
            want = [
                expected(model.apply(ev.user_id, ev.session_id, ev.type, ts, ev.event_id, ev.device_id))
                for _, ts, ev in events
            ]
            assert got == want
            # A replay of the same batch changes nothing and answers the same.
            assert await store.decide(0, claim.epoch, -1, offset - 1, events) == want
        for user in ("u1", "u2"):
            leases = await store.active_leases(0, user)
            assert {sid: lease["expiresAt"] for sid, lease in leases.items()} == model.active_leases(user)
    finally:
        await redis.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(event, min_size=1, max_size=12), min_size=1, max_size=6),
    policy=st.sampled_from(["reject", "evict_oldest"]),
)
def test_script_decisions_equal_the_reference_model_for_random_event_sequences(redis_url, batches, policy):
    asyncio.run(run_both(redis_url, policy, batches))
