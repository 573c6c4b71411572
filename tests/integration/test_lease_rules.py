"""Every row of the contract's lease rule table, through Kafka, Redis and the processor."""

from __future__ import annotations

import jwt
from aiokafka.partitioner import DefaultPartitioner

from tests.harness import TEST_SECRET, Flow
from tests.redis_targets import ON_SINGLE_AND_CLUSTER

pytestmark = ON_SINGLE_AND_CLUSTER  # the contract holds on one Redis and on a Redis Cluster

TTL = 90_000


def only(verdicts: list[dict], event_id: str) -> dict:
    found = [v for v in verdicts if v["eventId"] == event_id and v["decision"] != "revoke"]
    assert len(found) == 1, found
    return found[0]


async def test_start_under_the_limit_is_allowed_as_started_with_a_valid_token(flow: Flow):
    await flow.send("start", "u1", "s1", at=1000, event_id="e1", deviceId="tv")
    v = only(await flow.wait_verdicts(1), "e1")
    assert (v["decision"], v["reason"], v["activeStreams"], v["maxStreams"]) == ("allow", "started", 1, 3)
    assert v["decidedAt"] == flow.t0 + 1000
    assert v["leaseExpiresAt"] == flow.t0 + 1000 + TTL
    claims = jwt.decode(v["token"], TEST_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["sub"] == "u1" and claims["sid"] == "s1" and claims["jti"] == v["verdictId"]
    assert claims["exp"] == (flow.t0 + 1000 + TTL) // 1000 and claims["iat"] == (flow.t0 + 1000) // 1000


async def test_start_of_an_already_active_session_is_allowed_and_renews_the_expiry(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1")
    await flow.send("start", "u1", "s1", at=5000, event_id="e2")
    verdicts = await flow.wait_verdicts(2)
    v = only(verdicts, "e2")
    assert (v["decision"], v["reason"], v["activeStreams"]) == ("allow", "already_active", 1)
    assert v["leaseExpiresAt"] == flow.t0 + 5000 + TTL
    assert v["token"]


async def test_start_at_the_limit_is_denied_with_the_reject_policy(flow: Flow):
    for i in range(4):
        await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}")
    verdicts = await flow.wait_verdicts(4)
    assert [only(verdicts, f"e{i}")["reason"] for i in range(4)] == ["started"] * 3 + ["limit_exceeded"]
    denied = only(verdicts, "e3")
    assert (denied["decision"], denied["activeStreams"], denied["leaseExpiresAt"], denied["token"]) == (
        "deny",
        3,
        None,
        None,
    )


async def test_start_at_the_limit_evicts_the_oldest_lease_with_a_revoke_verdict(flow_factory):
    async with flow_factory(overflow_policy="evict_oldest") as flow:
        await flow.start_processor()
        for i in range(3):
            await flow.send("start", "u1", f"s{i}", at=i * 10, event_id=f"e{i}")
        await flow.send(
            "start", "u1", "s0", at=100, event_id="renew-s0"
        )  # renewal keeps s0 the oldest by start
        await flow.send("start", "u1", "s3", at=200, event_id="e3")
        verdicts = await flow.wait_verdicts(6)
        v = only(verdicts, "e3")
        assert (v["decision"], v["reason"], v["activeStreams"]) == ("allow", "started", 3)
        revokes = [x for x in verdicts if x["decision"] == "revoke"]
        assert len(revokes) == 1
        r = revokes[0]
        assert (r["sessionId"], r["reason"], r["eventId"], r["leaseExpiresAt"], r["token"]) == (
            "s0",
            "evicted",
            "e3",
            None,
            None,
        )
        assert r["verdictId"] != v["verdictId"]


async def test_heartbeat_of_an_active_session_is_allowed_and_renewed(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1")
    await flow.send("heartbeat", "u1", "s1", at=30_000, event_id="h1")
    v = only(await flow.wait_verdicts(2), "h1")
    assert (v["decision"], v["reason"], v["activeStreams"]) == ("allow", "renewed", 1)
    assert v["leaseExpiresAt"] == flow.t0 + 30_000 + TTL
    assert (
        jwt.decode(v["token"], TEST_SECRET, algorithms=["HS256"], options={"verify_exp": False})["sid"]
        == "s1"
    )


async def test_heartbeat_without_a_lease_is_denied_as_no_lease(flow: Flow):
    await flow.send("heartbeat", "u1", "s1", at=0, event_id="h1")
    v = only(await flow.wait_verdicts(1), "h1")
    assert (v["decision"], v["reason"], v["activeStreams"], v["leaseExpiresAt"], v["token"]) == (
        "deny",
        "no_lease",
        0,
        None,
        None,
    )


async def test_stop_of_an_active_session_is_allowed_and_frees_the_slot(flow: Flow):
    for i in range(3):
        await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}")
    await flow.send("stop", "u1", "s1", at=10, event_id="x1")
    await flow.send("start", "u1", "s9", at=20, event_id="e9")
    verdicts = await flow.wait_verdicts(5)
    stop = only(verdicts, "x1")
    assert (
        stop["decision"],
        stop["reason"],
        stop["activeStreams"],
        stop["leaseExpiresAt"],
        stop["token"],
    ) == ("allow", "stopped", 2, None, None)
    assert only(verdicts, "e9")["reason"] == "started"


async def test_stop_without_a_lease_is_allowed_as_not_active(flow: Flow):
    await flow.send("stop", "u1", "s1", at=0, event_id="x1")
    v = only(await flow.wait_verdicts(1), "x1")
    assert (v["decision"], v["reason"], v["activeStreams"]) == ("allow", "not_active", 0)


async def test_expired_leases_do_not_count_towards_the_limit(flow: Flow):
    for i in range(3):
        await flow.send("start", "u1", f"s{i}", at=0, event_id=f"e{i}")
    await flow.send("start", "u1", "late", at=TTL, event_id="at-expiry")  # expiry == now: no longer active
    await flow.send("heartbeat", "u1", "s0", at=TTL + 1, event_id="hb-expired")
    verdicts = await flow.wait_verdicts(5)
    v = only(verdicts, "at-expiry")
    assert (v["reason"], v["activeStreams"]) == ("started", 1)
    assert only(verdicts, "hb-expired")["reason"] == "no_lease"


async def test_event_time_never_goes_backwards_for_a_user(flow: Flow):
    await flow.send("start", "u1", "s1", at=60_000, event_id="e1")
    await flow.send("heartbeat", "u1", "s1", at=1_000, event_id="late-hb")  # older record timestamp
    verdicts = await flow.wait_verdicts(2)
    v = only(verdicts, "late-hb")
    assert v["decidedAt"] == flow.t0 + 60_000
    assert v["leaseExpiresAt"] == flow.t0 + 60_000 + TTL


async def test_events_published_before_the_processor_started_are_decided(flow_factory):
    async with flow_factory() as flow:
        await flow.send("start", "early", "s1", at=0, event_id="before-start")
        await flow.start_processor()
        assert only(await flow.wait_verdicts(1), "before-start")["reason"] == "started"


async def test_each_verdict_lands_on_the_partition_the_default_partitioner_gives_its_user(flow: Flow):
    users = [f"user-{i}" for i in range(40)]
    for i, user in enumerate(users):
        await flow.send("start", user, "s", at=i, event_id=f"e{i}")
    await flow.wait_verdicts(len(users))
    partitions = list(range(flow.settings.topic_partitions))
    for rec in flow.verdict_records():
        assert rec.key.decode() == orjson_user(rec.value)
        assert rec.partition == DefaultPartitioner()(rec.key, partitions, partitions)


def orjson_user(value: bytes) -> str:
    import orjson

    return orjson.loads(value)["userId"]


async def test_event_without_event_id_gets_its_partition_and_offset_as_identity(flow: Flow):
    meta = await flow.send("start", "u1", "s1", at=0)
    v = (await flow.wait_verdicts(1))[0]
    assert v["eventId"] == f"{flow.settings.events_topic}/{meta.partition}/{meta.offset}"
