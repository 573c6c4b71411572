"""Limits by plan, user and device class from the policies topic, through Kafka, Redis and the processor.

Policies written before a processor starts are read before its first decision (the contract),
so most tests write them first; a test that changes one mid-stream waits until probe events
are decided under the new one (`Flow.wait_policy`) instead of sleeping.
"""

from __future__ import annotations

import logging
import re

import aiohttp
import orjson
import pytest

from tests.harness import Flow, only, revokes, wait_until

TTL = 90_000


def outcome(v: dict) -> tuple:
    return v["decision"], v["reason"], v["activeStreams"], v["maxStreams"], v["policy"]


async def metrics_text(port: int) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


# -- which policy applies ---------------------------------------------------------------


async def test_plan_limit_denies_the_second_start_as_limit_exceeded_under_the_plan(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="e1", plan="basic")
        await flow.send("start", "u1", "s2", at=10, event_id="e2", plan="basic")
        await flow.send("start", "u2", "s1", at=20, event_id="no-plan")
        verdicts = await flow.wait_events("e1", "e2", "no-plan")
        assert outcome(only(verdicts, "e1")) == ("allow", "started", 1, 1, "plan:basic")
        denied = only(verdicts, "e2")
        assert outcome(denied) == ("deny", "limit_exceeded", 1, 1, "plan:basic")
        assert (denied["leaseExpiresAt"], denied["token"]) == (None, None)
        assert outcome(only(verdicts, "no-plan")) == ("allow", "started", 1, 3, "default")


async def test_a_user_override_beats_the_plan(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        await flow.send_policy("user:vip", {"maxStreams": 2})
        await flow.start_processor()
        for i in range(3):
            await flow.send("start", "vip", f"s{i}", at=i, event_id=f"vip-{i}", plan="basic")
            await flow.send("start", "other", f"s{i}", at=i, event_id=f"other-{i}", plan="basic")
        verdicts = await flow.wait_events(*(f"{u}-{i}" for u in ("vip", "other") for i in range(3)))
        assert [outcome(only(verdicts, f"vip-{i}")) for i in range(3)] == [
            ("allow", "started", 1, 2, "user:vip"),
            ("allow", "started", 2, 2, "user:vip"),
            ("deny", "limit_exceeded", 2, 2, "user:vip"),
        ]
        assert [outcome(only(verdicts, f"other-{i}"))[1:] for i in range(3)] == [
            ("started", 1, 1, "plan:basic"),
            ("limit_exceeded", 1, 1, "plan:basic"),
            ("limit_exceeded", 1, 1, "plan:basic"),
        ]


async def test_the_default_record_beats_the_settings_and_is_reported_as_default(flow_factory):
    async with flow_factory() as flow:  # settings: MAX_STREAMS 3
        await flow.send_policy("default", {"maxStreams": 2})
        await flow.start_processor()
        for i in range(3):
            await flow.send("start", "u1", f"s{i}", at=i, event_id=f"e{i}")
        await flow.send("start", "u2", "s0", at=0, event_id="unknown-plan", plan="gold")  # no plan:gold
        verdicts = await flow.wait_events("e0", "e1", "e2", "unknown-plan")
        assert [outcome(only(verdicts, f"e{i}")) for i in range(3)] == [
            ("allow", "started", 1, 2, "default"),
            ("allow", "started", 2, 2, "default"),
            ("deny", "limit_exceeded", 2, 2, "default"),
        ]
        assert outcome(only(verdicts, "unknown-plan")) == ("allow", "started", 1, 2, "default")


async def test_without_any_policy_the_settings_apply_and_are_reported_as_default(flow: Flow):
    await flow.send("start", "u1", "s1", at=0, event_id="e1", plan="basic")
    v = only(await flow.wait_events("e1"), "e1")
    assert outcome(v) == ("allow", "started", 1, 3, "default")


# -- device class caps ------------------------------------------------------------------


async def test_class_cap_denies_a_start_as_device_class_limit_listing_only_that_classs_leases(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 4, "deviceClasses": {"tv": 1}})
        await flow.start_processor()
        await flow.send("start", "u1", "tv-1", at=0, event_id="tv-1", deviceClass="tv", deviceId="living")
        await flow.send("start", "u1", "m-1", at=10, event_id="m-1", deviceClass="mobile", deviceId="phone")
        await flow.send("start", "u1", "tv-2", at=20, event_id="tv-2", deviceClass="tv", deviceId="bedroom")
        await flow.send("start", "u1", "m-2", at=30, event_id="m-2", deviceClass="mobile")
        verdicts = await flow.wait_events("tv-1", "m-1", "tv-2", "m-2")
        denied = only(verdicts, "tv-2")
        assert outcome(denied) == ("deny", "device_class_limit", 2, 4, "default")
        assert denied["conflicts"] == [
            {
                "sessionId": "tv-1",
                "deviceId": "living",
                "deviceClass": "tv",
                "contentId": None,
                "startedAt": flow.t0,
                "leaseExpiresAt": flow.t0 + TTL,
            }
        ]
        assert denied["nextFreeAt"] == flow.t0 + TTL
        # Another class is not held by the tv cap: only the total of 4 counts for it.
        assert outcome(only(verdicts, "m-2")) == ("allow", "started", 3, 4, "default")


async def test_the_class_cap_is_checked_before_the_total_limit(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 2, "deviceClasses": {"tv": 1}})
        await flow.start_processor()
        await flow.send("start", "u1", "tv-1", at=0, event_id="tv-1", deviceClass="tv")
        await flow.send("start", "u1", "web-1", at=10, event_id="web-1", deviceClass="web")
        await flow.send("start", "u1", "tv-2", at=20, event_id="tv-2", deviceClass="tv")  # both full
        await flow.send("start", "u1", "web-2", at=30, event_id="web-2", deviceClass="web")
        verdicts = await flow.wait_events("tv-1", "web-1", "tv-2", "web-2")
        tv = only(verdicts, "tv-2")
        assert outcome(tv) == ("deny", "device_class_limit", 2, 2, "default")
        assert [c["sessionId"] for c in tv["conflicts"]] == ["tv-1"]
        web = only(verdicts, "web-2")
        assert outcome(web) == ("deny", "limit_exceeded", 2, 2, "default")
        assert [c["sessionId"] for c in web["conflicts"]] == ["tv-1", "web-1"]


async def test_starts_without_a_class_or_of_an_uncapped_class_count_towards_the_total_only(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 3, "deviceClasses": {"tv": 0}})
        await flow.start_processor()
        await flow.send("start", "u1", "a", at=0, event_id="no-class")
        await flow.send("start", "u1", "b", at=10, event_id="uncapped", deviceClass="mobile")
        await flow.send("start", "u1", "c", at=20, event_id="capped-at-0", deviceClass="tv")
        verdicts = await flow.wait_events("no-class", "uncapped", "capped-at-0")
        assert only(verdicts, "no-class")["reason"] == "started"
        assert only(verdicts, "uncapped")["reason"] == "started"
        zero = only(verdicts, "capped-at-0")  # a cap of 0 admits no lease of its class (spec 1)
        assert outcome(zero) == ("deny", "device_class_limit", 2, 3, "default")
        assert (zero["conflicts"], zero["nextFreeAt"]) == ([], None)


async def test_class_cap_with_evict_oldest_evicts_the_oldest_lease_of_that_class_not_of_another(
    flow_factory,
):
    async with flow_factory() as flow:
        await flow.send_policy(
            "plan:family", {"maxStreams": 4, "overflow": "evict_oldest", "deviceClasses": {"tv": 2}}
        )
        await flow.start_processor()
        plan = {"plan": "family"}
        await flow.send("start", "u1", "m1", at=0, event_id="m1", deviceClass="mobile", **plan)  # oldest
        await flow.send("start", "u1", "t1", at=10, event_id="t1", deviceClass="tv", **plan)
        await flow.send("start", "u1", "t2", at=20, event_id="t2", deviceClass="tv", **plan)
        await flow.send("start", "u1", "t3", at=30, event_id="t3", deviceClass="tv", **plan)
        await flow.send("heartbeat", "u1", "m1", at=40, event_id="hb-m1", **plan)
        await flow.send("heartbeat", "u1", "t1", at=50, event_id="hb-t1", **plan)
        verdicts = await flow.wait_events("m1", "t1", "t2", "t3", "hb-m1", "hb-t1")
        assert outcome(only(verdicts, "t3")) == ("allow", "started", 3, 4, "plan:family")
        [revoke] = revokes(verdicts, "t3")
        assert (revoke["sessionId"], revoke["decision"], revoke["reason"], revoke["type"]) == (
            "t1",
            "revoke",
            "evicted",
            "start",
        )
        assert (revoke["policy"], revoke["maxStreams"], revoke["leaseExpiresAt"], revoke["token"]) == (
            "plan:family",
            4,
            None,
            None,
        )
        assert only(verdicts, "hb-m1")["reason"] == "renewed"
        assert only(verdicts, "hb-t1")["reason"] == "no_lease"
        assert sum(v["decision"] == "revoke" for v in verdicts) == 1


# -- following the topic ----------------------------------------------------------------


async def test_a_policy_changed_mid_stream_applies_to_the_events_decided_after_it_is_read(flow: Flow):
    for i in range(2):
        await flow.send("start", "u1", f"s{i}", at=i, event_id=f"before-{i}", plan="basic")
    verdicts = await flow.wait_events("before-0", "before-1")
    assert [outcome(only(verdicts, f"before-{i}"))[1:] for i in range(2)] == [
        ("started", 1, 3, "default"),
        ("started", 2, 3, "default"),
    ]
    await flow.send_policy("plan:basic", {"maxStreams": 1})
    await flow.wait_policy("u1", "plan:basic", 1, plan="basic", at=10)
    await flow.send("start", "u1", "s2", at=20, event_id="after", plan="basic")
    await flow.send("heartbeat", "u1", "s0", at=30, event_id="hb-after", plan="basic")
    verdicts = await flow.wait_events("after", "hb-after")
    assert outcome(only(verdicts, "after")) == ("deny", "limit_exceeded", 2, 1, "plan:basic")
    # Leases granted under the old limit are not revoked by the lower one: they still renew.
    assert outcome(only(verdicts, "hb-after")) == ("allow", "renewed", 2, 1, "plan:basic")


async def test_deleting_a_plan_policy_falls_back_to_the_default_record_then_to_the_settings(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 2})
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        await flow.start_processor()
        plan = {"plan": "basic"}
        await flow.send("start", "u1", "s0", at=0, event_id="e0", **plan)
        await flow.send("start", "u1", "s1", at=10, event_id="e1", **plan)
        verdicts = await flow.wait_events("e0", "e1")
        assert outcome(only(verdicts, "e1")) == ("deny", "limit_exceeded", 1, 1, "plan:basic")

        await flow.send_policy("plan:basic", None)  # tombstone
        await flow.wait_policy("u1", "default", 2, plan="basic", at=20)
        await flow.send("start", "u1", "s1", at=30, event_id="e1-again", **plan)
        await flow.send("start", "u1", "s2", at=40, event_id="e2", **plan)
        verdicts = await flow.wait_events("e1-again", "e2")
        assert outcome(only(verdicts, "e1-again")) == ("allow", "started", 2, 2, "default")
        assert outcome(only(verdicts, "e2")) == ("deny", "limit_exceeded", 2, 2, "default")

        await flow.send_policy("default", None)
        await flow.wait_policy("u1", "default", 3, plan="basic", at=50)
        await flow.send("start", "u1", "s2", at=60, event_id="e2-again", **plan)
        verdicts = await flow.wait_events("e2-again")
        assert outcome(only(verdicts, "e2-again")) == ("allow", "started", 3, 3, "default")


async def test_a_malformed_policy_record_is_logged_counted_and_the_last_good_value_stays(
    flow_factory, caplog: pytest.LogCaptureFixture
):
    async with flow_factory() as flow:
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        running = await flow.start_processor()
        port = running.processor.http_port
        with caplog.at_level(logging.ERROR, logger="processor"):
            bad = await flow.send_policy("plan:basic", b'{"maxStreams": "two"}')
            await wait_until(
                lambda: any(getattr(r, "key", None) == "plan:basic" for r in caplog.records),
                what="the malformed policy record logged",
            )
        [record] = [r for r in caplog.records if getattr(r, "key", None) == "plan:basic"]
        fields = " ".join(str(v) for v in record.__dict__.values())
        assert flow.settings.policies_topic in fields, record.__dict__
        offsets = re.findall(r"\d+", fields.replace(flow.settings.policies_topic, ""))
        assert str(bad.offset) in offsets, record.__dict__
        metrics = await metrics_text(port)
        assert "concurrency_policy_errors_total 1.0" in metrics, metrics

        await flow.send("start", "u1", "s0", at=0, event_id="e0", plan="basic")
        await flow.send("start", "u1", "s1", at=10, event_id="e1", plan="basic")
        verdicts = await flow.wait_events("e0", "e1")
        assert outcome(only(verdicts, "e0")) == ("allow", "started", 1, 1, "plan:basic")
        assert outcome(only(verdicts, "e1")) == ("deny", "limit_exceeded", 1, 1, "plan:basic")

        # A good record of the same key after the bad one applies as usual.
        await flow.send_policy("plan:basic", {"maxStreams": 2})
        await flow.wait_policy("u1", "plan:basic", 2, plan="basic", at=20)
        await flow.send("start", "u1", "s1", at=30, event_id="e1-again", plan="basic")
        assert only(await flow.wait_events("e1-again"), "e1-again")["reason"] == "started"


async def test_a_processor_started_after_the_policies_were_written_applies_them_to_its_first_event(
    flow_factory, tmp_path
):
    async with flow_factory() as flow:
        # Other policies first, the one that matters last; the events wait on their topic already.
        for i in range(50):
            await flow.send_policy(f"user:filler-{i}", {"maxStreams": 5})
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        await flow.send("start", "u1", "s0", at=0, event_id="first", plan="basic")
        await flow.send("start", "u1", "s1", at=10, event_id="second", plan="basic")
        proc = flow.spawn_processor(tmp_path)  # POLICIES_TOPIC from the environment
        try:
            verdicts = await flow.wait_events("first", "second", timeout=60)
        except TimeoutError:
            raise AssertionError(f"no verdicts; the processor's log:\n{proc.log()}") from None
        assert outcome(only(verdicts, "first")) == ("allow", "started", 1, 1, "plan:basic")
        assert outcome(only(verdicts, "second")) == ("deny", "limit_exceeded", 1, 1, "plan:basic")
        assert proc.terminate() == 0, proc.log()


# -- every verdict names its policy -----------------------------------------------------


async def test_every_verdict_carries_the_policy_it_was_decided_under(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("plan:basic", {"maxStreams": 1, "overflow": "evict_oldest"})
        await flow.send_policy("user:vip", {"maxStreams": 2, "deviceClasses": {"tv": 1}})
        await flow.start_processor()
        sends = [
            ("start", "plain", "s0", {}),  # settings
            ("heartbeat", "plain", "s0", {}),
            ("heartbeat", "plain", "ghost", {}),  # no_lease
            ("stop", "plain", "s0", {}),
            ("stop", "plain", "s0", {}),  # not_active
            ("start", "basic", "s0", {"plan": "basic"}),
            ("start", "basic", "s0", {"plan": "basic"}),  # already_active
            ("start", "basic", "s1", {"plan": "basic"}),  # evicts s0
            ("start", "vip", "tv", {"plan": "basic", "deviceClass": "tv"}),
            ("start", "vip", "tv2", {"plan": "basic", "deviceClass": "tv"}),  # device_class_limit
            ("start", "vip", "phone", {"plan": "basic"}),
            ("start", "vip", "web", {"plan": "basic"}),  # limit_exceeded
            ("terminate", "vip", "phone", {"plan": "basic", "targetSessionId": "tv"}),  # + revoke
        ]
        for n, (kind, user, session, extra) in enumerate(sends):
            await flow.send(kind, user, session, at=n * 10, event_id=f"ev-{n}", **extra)
        verdicts = await flow.wait_events(*(f"ev-{n}" for n in range(len(sends))))
        expected = {"plain": ("default", 3), "basic": ("plan:basic", 1), "vip": ("user:vip", 2)}
        assert len(verdicts) == len(sends) + 2  # the eviction's and the terminate's revoke
        for v in verdicts:
            assert (v["policy"], v["maxStreams"]) == expected[v["userId"]], v
        assert {v["reason"] for v in verdicts} == {
            "started",
            "renewed",
            "no_lease",
            "stopped",
            "not_active",
            "already_active",
            "evicted",
            "device_class_limit",
            "limit_exceeded",
            "terminated",
        }


# -- bad input ---------------------------------------------------------------------------

START = {"type": "start", "userId": "u1", "sessionId": "s1"}
TERMINATE = {"type": "terminate", "userId": "u1", "sessionId": "s1", "targetSessionId": "s2"}

BAD_INPUT: dict[str, tuple[dict, str]] = {
    "terminate_without_target": (
        {k: v for k, v in TERMINATE.items() if k != "targetSessionId"},
        "missing_field",
    ),
    "terminate_with_a_null_target": ({**TERMINATE, "targetSessionId": None}, "missing_field"),
    "target_over_128": ({**TERMINATE, "targetSessionId": "t" * 129}, "id_too_long"),
    "target_empty": ({**TERMINATE, "targetSessionId": ""}, "empty_id"),
    "target_a_number": ({**TERMINATE, "targetSessionId": 42}, "wrong_type"),
    "plan_over_64": ({**START, "plan": "p" * 65}, "id_too_long"),
    "plan_empty": ({**START, "plan": ""}, "empty_id"),
    "plan_a_number": ({**START, "plan": 5}, "wrong_type"),
    "plan_a_list": ({**START, "plan": ["basic"]}, "wrong_type"),
    "device_class_over_32": ({**START, "deviceClass": "c" * 33}, "id_too_long"),
    "device_class_empty": ({**START, "deviceClass": ""}, "empty_id"),
    "device_class_an_object": ({**START, "deviceClass": {"tv": True}}, "wrong_type"),
    "device_class_a_bool": ({**START, "deviceClass": True}, "wrong_type"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_bad_policy_or_terminate_field_is_dead_lettered_and_the_next_event_is_decided(
    flow: Flow, case: str
):
    obj, error = BAD_INPUT[case]
    value = orjson.dumps(obj)
    bad = await flow.send_raw(value, at=0)
    await flow.send("start", "u1", "s1", at=10, event_id="after-bad")
    [letter] = await flow.wait_dead_letters(1)
    assert letter.value == value and letter.key == b"u1"
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["error"] == error
    assert (headers["source.partition"], headers["source.offset"]) == (str(bad.partition), str(bad.offset))
    verdicts = await flow.wait_events("after-bad")
    assert [(v["eventId"], v["reason"]) for v in verdicts] == [("after-bad", "started")]


async def test_a_plan_of_64_and_a_device_class_of_32_characters_are_decided(flow_factory):
    plan = "p" * 64
    async with flow_factory() as flow:
        await flow.send_policy(f"plan:{plan}", {"maxStreams": 1, "deviceClasses": {"c" * 32: 1}})
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="e1", plan=plan, deviceClass="c" * 32)
        await flow.send("start", "u1", "s2", at=10, event_id="e2", plan=plan, deviceClass="c" * 32)
        verdicts = await flow.wait_events("e1", "e2")
        assert outcome(only(verdicts, "e1")) == ("allow", "started", 1, 1, f"plan:{plan}")
        assert outcome(only(verdicts, "e2")) == ("deny", "device_class_limit", 1, 1, f"plan:{plan}")
        assert flow._dlq.records == []


async def test_a_duplicate_naming_another_plan_gets_the_first_verdict_byte_for_byte(flow_factory):
    # The plan's name is stored with the result: a redelivery never reports a policy it was not
    # decided under (found by an attacker's read: it used to say plan:<the duplicate's plan>).
    async with flow_factory() as flow:
        await flow.send_policy("plan:premium", {"maxStreams": 4})
        await flow.send_policy("plan:basic", {"maxStreams": 1})
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="e1", plan="premium")
        await flow.send("start", "u1", "s1", at=10, event_id="e1", plan="basic")
        await flow.send("start", "u1", "s1", at=20, event_id="e1")
        await flow.wait_verdicts(3)
        records = [r for r in flow.verdict_records() if orjson.loads(r.value)["eventId"] == "e1"]
        assert len(records) == 3 and len({r.value for r in records}) == 1
        assert outcome(orjson.loads(records[0].value)) == ("allow", "started", 1, 4, "plan:premium")
