"""Deny advice (what holds the slots, when one frees) and terminate, through Kafka, Redis, processor."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.harness import Flow, only, revokes

TTL = 90_000
CONFLICT_KEYS = {"sessionId", "deviceId", "deviceClass", "contentId", "startedAt", "leaseExpiresAt"}


def values_of(flow: Flow, event_id: str) -> list[bytes]:
    """The raw verdict records of one eventId, in topic order."""
    return [r.value for r in flow.verdict_records() if orjson.loads(r.value)["eventId"] == event_id]


async def rewind_group(flow: Flow) -> None:
    """Commit offset 0 on every events partition: the next processor decides the whole log again."""
    s = flow.settings
    consumer = AIOKafkaConsumer(
        bootstrap_servers=flow.bootstrap, group_id=s.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(s.events_topic, p) for p in range(s.topic_partitions)]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
    finally:
        await consumer.stop()


# -- deny advice ------------------------------------------------------------------------


async def test_a_limit_exceeded_deny_lists_every_active_lease_oldest_start_first_with_every_field(
    flow: Flow,
):
    t0 = flow.t0
    await flow.send(
        "start", "u1", "s-b", at=0, event_id="b", deviceId="phone-1", deviceClass="mobile", contentId="c-1"
    )
    await flow.send("start", "u1", "s-a", at=10, event_id="a", deviceId="tv-livingroom", deviceClass="tv")
    await flow.send("start", "u1", "s-c", at=20, event_id="c")  # nothing optional: nulls
    await flow.send("heartbeat", "u1", "s-b", at=30_000, event_id="hb-b", deviceClass="web")
    # A start of an active session renews it and changes nothing else (spec 3).
    await flow.send(
        "start", "u1", "s-a", at=40_000, event_id="a-again", deviceId="tv-other", deviceClass="web"
    )
    await flow.send("start", "u1", "s-d", at=50_000, event_id="d", deviceId="laptop", deviceClass="web")
    verdicts = await flow.wait_events("b", "a", "c", "hb-b", "a-again", "d")
    assert only(verdicts, "a-again")["reason"] == "already_active"
    denied = only(verdicts, "d")
    assert (denied["decision"], denied["reason"], denied["activeStreams"], denied["maxStreams"]) == (
        "deny",
        "limit_exceeded",
        3,
        3,
    )
    assert denied["conflicts"] == [
        {
            "sessionId": "s-b",
            "deviceId": "phone-1",
            "deviceClass": "mobile",
            "contentId": "c-1",
            "startedAt": t0,
            "leaseExpiresAt": t0 + 30_000 + TTL,
        },
        {
            "sessionId": "s-a",
            "deviceId": "tv-livingroom",
            "deviceClass": "tv",
            "contentId": None,
            "startedAt": t0 + 10,
            "leaseExpiresAt": t0 + 40_000 + TTL,
        },
        {
            "sessionId": "s-c",
            "deviceId": None,
            "deviceClass": None,
            "contentId": None,
            "startedAt": t0 + 20,
            "leaseExpiresAt": t0 + 20 + TTL,
        },
    ]
    assert all(set(c) == CONFLICT_KEYS for c in denied["conflicts"])
    # The earliest expiry among the conflicts (s-c's), not the oldest start's (s-b's).
    assert denied["nextFreeAt"] == t0 + 20 + TTL
    assert (denied["leaseExpiresAt"], denied["token"]) == (None, None)


async def test_leases_started_at_the_same_time_are_listed_in_the_order_they_were_created(flow: Flow):
    for session in ("z", "m", "a"):
        await flow.send("start", "u1", session, at=0, event_id=f"start-{session}")
    await flow.send("start", "u1", "late", at=10, event_id="late")
    denied = only(await flow.wait_events("start-z", "start-m", "start-a", "late"), "late")
    assert [c["sessionId"] for c in denied["conflicts"]] == ["z", "m", "a"]
    assert [c["startedAt"] for c in denied["conflicts"]] == [flow.t0] * 3
    assert denied["nextFreeAt"] == flow.t0 + TTL


async def test_device_class_advice_lists_and_times_only_the_leases_of_that_class(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 5, "deviceClasses": {"tv": 2}})
        await flow.start_processor()
        await flow.send("start", "u1", "m-1", at=0, event_id="m-1", deviceClass="mobile")  # expires first
        await flow.send("start", "u1", "tv-1", at=10, event_id="tv-1", deviceClass="tv", contentId="film")
        await flow.send("start", "u1", "tv-2", at=20, event_id="tv-2", deviceClass="tv", deviceId="den")
        await flow.send("heartbeat", "u1", "tv-1", at=5_000, event_id="hb-tv-1")
        await flow.send("start", "u1", "tv-3", at=6_000, event_id="tv-3", deviceClass="tv")
        verdicts = await flow.wait_events("m-1", "tv-1", "tv-2", "hb-tv-1", "tv-3")
        denied = only(verdicts, "tv-3")
        assert (denied["reason"], denied["activeStreams"], denied["maxStreams"], denied["policy"]) == (
            "device_class_limit",
            3,
            5,
            "default",
        )
        assert denied["conflicts"] == [
            {
                "sessionId": "tv-1",
                "deviceId": None,
                "deviceClass": "tv",
                "contentId": "film",
                "startedAt": flow.t0 + 10,
                "leaseExpiresAt": flow.t0 + 5_000 + TTL,
            },
            {
                "sessionId": "tv-2",
                "deviceId": "den",
                "deviceClass": "tv",
                "contentId": None,
                "startedAt": flow.t0 + 20,
                "leaseExpiresAt": flow.t0 + 20 + TTL,
            },
        ]
        assert denied["nextFreeAt"] == flow.t0 + 20 + TTL  # tv-2's; m-1 expires earlier but is no tv


async def test_verdicts_other_than_limit_denies_carry_no_advice(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="started")
    await flow.send("start", "u1", "s1", at=1, event_id="already")
    await flow.send("heartbeat", "u1", "s1", at=2, event_id="renewed")
    await flow.send("heartbeat", "u1", "ghost", at=3, event_id="no-lease")
    await flow.send("terminate", "u1", "s2", at=4, event_id="not-active", targetSessionId="ghost")
    await flow.send("stop", "u1", "s1", at=5, event_id="stopped")
    verdicts = await flow.wait_events("started", "already", "renewed", "no-lease", "not-active", "stopped")
    assert len(verdicts) == 6
    for v in verdicts:
        assert v.get("conflicts") is None and v.get("nextFreeAt") is None, v


async def test_advice_is_byte_identical_on_an_upstream_duplicate_after_leases_and_policy_changed(
    flow_factory,
):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 2})
        await flow.start_processor()
        deny = {"deviceId": "tv", "deviceClass": "tv"}
        for i in range(2):
            await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}", deviceId=f"d{i}")
        await flow.send("start", "u1", "s2", at=10, event_id="denied", **deny)
        await flow.wait_events("e0", "e1", "denied")
        await flow.send("stop", "u1", "s0", at=20, event_id="x0")  # frees a slot
        await flow.send_policy("default", {"maxStreams": 5})
        await flow.wait_policy("u1", "default", 5, at=30)
        await flow.send("start", "u1", "s2", at=40, event_id="denied", **deny)  # upstream retry
        await flow.send("start", "u1", "s3", at=50, event_id="fresh")
        verdicts = await flow.wait_events("x0", "fresh")
        first, again = values_of(flow, "denied")
        assert first == again
        v = orjson.loads(first)
        assert (v["reason"], v["maxStreams"], [c["sessionId"] for c in v["conflicts"]]) == (
            "limit_exceeded",
            2,
            ["s0", "s1"],
        )
        # The duplicate changed nothing: s2 holds no lease, so the fresh start makes 2 of 5.
        fresh = only(verdicts, "fresh")
        assert (fresh["reason"], fresh["activeStreams"], fresh["maxStreams"]) == ("started", 2, 5)


async def test_advice_is_byte_identical_when_the_log_is_replayed_after_a_restart(flow_factory):
    async with flow_factory(partitions=2) as flow:
        running = await flow.start_processor()
        for i in range(3):
            await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}", deviceClass="tv")
        await flow.send("start", "u1", "s3", at=10, event_id="denied", deviceClass="tv")
        await flow.wait_events("e0", "e1", "e2", "denied")
        await running.stop()
        first = values_of(flow, "denied")
        await flow.send_policy("default", {"maxStreams": 9, "deviceClasses": {"tv": 1}})
        await rewind_group(flow)
        await flow.start_processor()  # reads the new policy, then the whole log again
        await flow.send("start", "u1", "s3", at=20, event_id="after", deviceClass="mobile")
        verdicts = await flow.wait_events("after")
        assert len(values_of(flow, "denied")) == 2
        assert values_of(flow, "denied") == first * 2
        after = only(verdicts, "after")  # the replay added no lease: s0, s1, s2 and this one
        assert (after["reason"], after["activeStreams"], after["maxStreams"]) == ("started", 4, 9)


# -- terminate --------------------------------------------------------------------------


async def test_terminate_of_an_active_session_is_allowed_as_terminated_and_revokes_the_target(flow: Flow):
    await flow.send("start", "u1", "tv", at=0, event_id="start-tv", deviceClass="tv")
    await flow.send("start", "u1", "phone", at=10, event_id="start-phone", deviceClass="mobile")
    await flow.send("terminate", "u1", "phone", at=20, event_id="t1", targetSessionId="tv")
    await flow.send("heartbeat", "u1", "tv", at=30, event_id="hb-tv")
    await flow.send("heartbeat", "u1", "phone", at=40, event_id="hb-phone")
    verdicts = await flow.wait_events("start-tv", "start-phone", "t1", "hb-tv", "hb-phone")
    mine = [v for v in verdicts if v["eventId"] == "t1"]
    assert [v["decision"] for v in mine] == ["allow", "revoke"]  # the terminate's verdict first
    v, revoke = mine
    assert (v["sessionId"], v["type"], v["reason"], v["activeStreams"], v["maxStreams"]) == (
        "phone",
        "terminate",
        "terminated",
        1,
        3,
    )
    assert (v["leaseExpiresAt"], v["token"], v["policy"], v["decidedAt"]) == (
        None,
        None,
        "default",
        flow.t0 + 20,
    )
    assert (revoke["sessionId"], revoke["type"], revoke["reason"], revoke["userId"]) == (
        "tv",
        "terminate",
        "terminated",
        "u1",
    )
    assert (revoke["leaseExpiresAt"], revoke["token"], revoke["policy"], revoke["maxStreams"]) == (
        None,
        None,
        "default",
        3,
    )
    assert revoke["verdictId"] != v["verdictId"]
    assert (only(verdicts, "hb-tv")["decision"], only(verdicts, "hb-tv")["reason"]) == ("deny", "no_lease")
    assert only(verdicts, "hb-phone")["reason"] == "renewed"  # the requester keeps its lease


async def test_terminate_of_a_session_without_a_lease_is_allowed_as_not_active_without_a_revoke(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1")
    await flow.send("terminate", "u1", "s1", at=10, event_id="t-unknown", targetSessionId="never-started")
    await flow.send("start", "u1", "s2", at=15, event_id="e2")
    await flow.send("stop", "u1", "s2", at=20, event_id="x2")
    await flow.send("terminate", "u1", "s1", at=30, event_id="t-stopped", targetSessionId="s2")
    verdicts = await flow.wait_events("e1", "t-unknown", "e2", "x2", "t-stopped")
    assert only(verdicts, "x2")["reason"] == "stopped"
    for event_id in ("t-unknown", "t-stopped"):
        v = only(verdicts, event_id)
        assert (v["decision"], v["reason"], v["activeStreams"], v["sessionId"]) == (
            "allow",
            "not_active",
            1,
            "s1",
        )
        assert (v["leaseExpiresAt"], v["token"], v["policy"]) == (None, None, "default")
        assert revokes(verdicts, event_id) == []


async def test_terminate_needs_no_lease_of_the_requester_and_frees_the_slot(flow: Flow):
    for i in range(3):
        await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}")
    await flow.send("terminate", "u1", "account-page", at=10, event_id="t1", targetSessionId="s1")
    await flow.send("start", "u1", "s3", at=20, event_id="e3")
    verdicts = await flow.wait_events("e0", "e1", "e2", "t1", "e3")
    t = only(verdicts, "t1")
    assert (t["sessionId"], t["reason"], t["activeStreams"]) == ("account-page", "terminated", 2)
    assert [r["sessionId"] for r in revokes(verdicts, "t1")] == ["s1"]
    assert (only(verdicts, "e3")["reason"], only(verdicts, "e3")["activeStreams"]) == ("started", 3)


async def test_a_session_can_terminate_itself(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1")
    await flow.send("terminate", "u1", "s1", at=10, event_id="t1", targetSessionId="s1")
    await flow.send("heartbeat", "u1", "s1", at=20, event_id="hb")
    verdicts = await flow.wait_events("e1", "t1", "hb")
    assert (only(verdicts, "t1")["reason"], only(verdicts, "t1")["activeStreams"]) == ("terminated", 0)
    assert [(r["sessionId"], r["reason"]) for r in revokes(verdicts, "t1")] == [("s1", "terminated")]
    assert only(verdicts, "hb")["reason"] == "no_lease"


async def test_a_redelivered_terminate_yields_identical_verdicts_and_ends_no_later_lease(flow: Flow):
    await flow.send("start", "u1", "tv", at=0, event_id="start-tv")
    await flow.send("terminate", "u1", "phone", at=10, event_id="t1", targetSessionId="tv")
    await flow.wait_events("start-tv", "t1")
    first = values_of(flow, "t1")
    await flow.send("start", "u1", "tv", at=20, event_id="tv-back")
    await flow.send("terminate", "u1", "phone", at=30, event_id="t1", targetSessionId="tv")  # upstream retry
    await flow.send("heartbeat", "u1", "tv", at=40, event_id="hb-tv")
    verdicts = await flow.wait_events("tv-back", "hb-tv")
    again = values_of(flow, "t1")
    assert len(first) == 2 and again[:2] == first
    # The retry gets the first verdict again, byte for byte (its revoke, if repeated, too).
    assert first[0] in again[2:] and set(again[2:]) <= set(first)
    assert only(verdicts, "tv-back")["reason"] == "started"
    assert only(verdicts, "hb-tv")["reason"] == "renewed"  # the retry did not end the new lease


async def test_a_terminate_reusing_an_event_id_for_another_target_is_dead_lettered_as_a_conflict(flow: Flow):
    await flow.send("start", "u1", "a", at=0, event_id="start-a")
    await flow.send("start", "u1", "b", at=1, event_id="start-b")
    await flow.send("terminate", "u1", "phone", at=10, event_id="t1", targetSessionId="a")
    await flow.send("terminate", "u1", "phone", at=20, event_id="t1", targetSessionId="b")
    await flow.send("heartbeat", "u1", "b", at=30, event_id="hb-b")
    [letter] = await flow.wait_dead_letters(1)
    assert dict(letter.headers)["error"] == b"event_id_conflict"
    verdicts = await flow.wait_events("start-a", "start-b", "t1", "hb-b")
    assert only(verdicts, "hb-b")["reason"] == "renewed"
    assert [r["sessionId"] for r in verdicts if r["decision"] == "revoke"] == ["a"]


async def test_a_target_session_id_on_an_event_other_than_terminate_is_ignored(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1", targetSessionId=42)
    await flow.send("stop", "u1", "s1", at=10, event_id="x1", targetSessionId="s9")
    verdicts = await flow.wait_events("e1", "x1")
    assert only(verdicts, "e1")["reason"] == "started"
    assert only(verdicts, "x1")["reason"] == "stopped"
    assert flow._dlq.records == []
