"""The HTTP gateway through real Kafka, Redis, processor and gateway: the rule table by HTTP status."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import orjson

from gateway.demo_session import run
from tests.gateway_harness import GATEWAY_TEST_SECRET, bearer, running_gateway
from tests.harness import TEST_SECRET

CONFLICT_KEYS = {"sessionId", "deviceId", "deviceClass", "contentId", "startedAt", "leaseExpiresAt"}


def verdict_bytes(flow, event_id: str) -> list[bytes]:
    return [
        r.value
        for r in flow.verdict_records()
        if orjson.loads(r.value)["eventId"] == event_id and orjson.loads(r.value)["decision"] != "revoke"
    ]


async def test_every_rule_answers_with_its_status_and_the_verdict_bytes_of_the_verdicts_topic(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("plan:tvonly", {"maxStreams": 5, "deviceClasses": {"tv": 1}})
        await flow.start_processor()
        await flow.wait_policy("u-tv", "plan:tvonly", 5, plan="tvonly")
        async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            me = bearer("u-1")
            started = []
            for n in range(3):
                r = await http.post(
                    "/v1/sessions", json={"deviceId": f"phone-{n}", "contentId": "c"}, headers=me
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert (body["decision"], body["reason"], body["activeStreams"]) == (
                    "allow",
                    "started",
                    n + 1,
                )
                claims = jwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"])
                assert (claims["sub"], claims["sid"]) == ("u-1", body["sessionId"])
                started.append(body)
            # The fourth is denied, with the advice: every active lease, oldest first, and nextFreeAt.
            r = await http.post(
                "/v1/sessions", json={"sessionId": "s-4", "deviceId": "tv", "deviceClass": "tv"}, headers=me
            )
            assert r.status_code == 409, r.text
            denied = r.json()
            assert (denied["decision"], denied["reason"], denied["token"]) == ("deny", "limit_exceeded", None)
            assert [c["sessionId"] for c in denied["conflicts"]] == [b["sessionId"] for b in started]
            assert all(set(c) == CONFLICT_KEYS for c in denied["conflicts"])
            assert denied["conflicts"][0]["deviceId"] == "phone-0"
            assert denied["nextFreeAt"] == min(c["leaseExpiresAt"] for c in denied["conflicts"])
            # The body is the verdict as the processor published it, byte for byte (the reply
            # and the verdict are produced side by side: wait for the verdicts reader too).
            await flow.wait_events(denied["eventId"])
            assert [r.content] == verdict_bytes(flow, denied["eventId"])

            first = started[0]["sessionId"]
            r = await http.post("/v1/sessions", json={"sessionId": first}, headers=me)
            assert (r.status_code, r.json()["reason"]) == (200, "already_active")
            r = await http.post(f"/v1/sessions/{first}/heartbeat", headers=me)
            assert (r.status_code, r.json()["reason"]) == (200, "renewed")
            assert r.json()["token"]
            r = await http.post("/v1/sessions/never-started/heartbeat", headers=me)
            assert (r.status_code, r.json()["decision"], r.json()["reason"]) == (410, "deny", "no_lease")

            r = await http.get("/v1/sessions", headers=me)
            assert r.status_code == 200
            listing = r.json()
            assert listing["userId"] == "u-1"
            assert [s["sessionId"] for s in listing["sessions"]] == [b["sessionId"] for b in started]
            assert all(set(s) == CONFLICT_KEYS for s in listing["sessions"])

            r = await http.delete(f"/v1/sessions/{first}", headers=me)
            assert (r.status_code, r.json()["reason"], r.json()["activeStreams"]) == (200, "stopped", 2)
            r = await http.delete(f"/v1/sessions/{first}", headers=me)
            assert (r.status_code, r.json()["reason"]) == (200, "not_active")

            second = started[1]["sessionId"]
            r = await http.post(
                f"/v1/sessions/{second}/terminate", json={"sessionId": "phone-app"}, headers=me
            )
            assert r.status_code == 200, r.text
            ended = r.json()
            assert (ended["reason"], ended["type"], ended["sessionId"]) == (
                "terminated",
                "terminate",
                "phone-app",
            )
            assert ended["activeStreams"] == 1
            await flow.wait_events(ended["eventId"])  # its revoke is in the same record batch
            revokes = [
                v for v in flow.verdicts() if v["eventId"] == ended["eventId"] and v["decision"] == "revoke"
            ]
            assert [(v["sessionId"], v["reason"]) for v in revokes] == [(second, "terminated")]
            r = await http.post(f"/v1/sessions/{second}/terminate", headers=me)
            assert (r.status_code, r.json()["reason"], r.json()["sessionId"]) == (
                200,
                "not_active",
                "account",
            )
            r = await http.get("/v1/sessions", headers=me)
            assert [s["sessionId"] for s in r.json()["sessions"]] == [started[2]["sessionId"]]

            # The token's plan claim names the event's plan: its class cap denies a second TV.
            tv = bearer("u-tv", plan="tvonly")
            r = await http.post("/v1/sessions", json={"deviceClass": "tv"}, headers=tv)
            assert (r.status_code, r.json()["policy"], r.json()["maxStreams"]) == (200, "plan:tvonly", 5)
            r = await http.post("/v1/sessions", json={"deviceClass": "tv", "deviceId": "tv-2"}, headers=tv)
            assert r.status_code == 409, r.text
            assert r.json()["reason"] == "device_class_limit"
            assert [c["deviceClass"] for c in r.json()["conflicts"]] == ["tv"]
            r = await http.post("/v1/sessions", json={"deviceClass": "mobile"}, headers=tv)
            assert (r.status_code, r.json()["activeStreams"]) == (200, 2)
        assert not flow._dlq.records  # nothing the gateway sent was a bad record


async def test_a_heartbeat_after_eviction_is_410_and_the_player_must_stop(flow_factory):
    async with flow_factory(max_streams=1, overflow_policy="evict_oldest") as flow:
        await flow.start_processor()
        async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            me = bearer("u-evict")
            r = await http.post("/v1/sessions", json={"sessionId": "old"}, headers=me)
            assert r.status_code == 200
            r = await http.post("/v1/sessions", json={"sessionId": "new"}, headers=me)
            assert (r.status_code, r.json()["reason"]) == (200, "started")
            r = await http.post("/v1/sessions/old/heartbeat", headers=me)
            assert (r.status_code, r.json()["reason"]) == (410, "no_lease")
            r = await http.post("/v1/sessions/new/heartbeat", headers=me)
            assert r.status_code == 200


async def test_the_demo_curl_session_runs_with_real_curl_and_gets_the_expected_answers(flow, capsys):
    async with running_gateway(flow) as gw:
        code = await asyncio.to_thread(run, gw.url, "u-demo", GATEWAY_TEST_SECRET)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("$ curl ") == 8 and "Bearer $TOKEN" in out
    assert out.count("HTTP 200") == 7 and out.count("HTTP 409") == 1
    assert '"reason":"limit_exceeded"' in out and '"conflicts":[' in out
    assert '"reason":"terminated"' in out and '"reason":"stopped"' in out
