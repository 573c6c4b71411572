"""The gateway's edges through the real services: idempotent retries, 401s, 400s, the document."""

from __future__ import annotations

import asyncio

import httpx
import jwt
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.gateway_harness import GATEWAY_TEST_SECRET, bearer, running_gateway
from tests.harness import TEST_SECRET


async def events_written(flow) -> int:
    """How many records the events topic holds in all (its end offsets added up)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=flow.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        s = flow.settings
        tps = [TopicPartition(s.events_topic, p) for p in range(s.topic_partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def test_a_retry_with_the_same_idempotency_key_is_the_same_event_and_gets_the_same_verdict(flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        me = bearer("u-idem")
        key = {"Idempotency-Key": "k-1"}
        first = await http.post("/v1/sessions", json={"deviceId": "tv"}, headers={**me, **key})
        again = await http.post("/v1/sessions", json={"deviceId": "tv"}, headers={**me, **key})
        assert first.status_code == again.status_code == 200
        assert first.content == again.content  # same verdictId, same session, same token
        a, b = first.json(), again.json()
        assert (a["verdictId"], a["sessionId"], a["reason"]) == (b["verdictId"], b["sessionId"], "started")
        # Another user's same key, and the same user's other key, are other events and sessions.
        other = (await http.post("/v1/sessions", json={}, headers={**bearer("u-other"), **key})).json()
        fresh = (await http.post("/v1/sessions", headers={**me, "Idempotency-Key": "k-2"})).json()
        assert len({a["sessionId"], other["sessionId"], fresh["sessionId"]}) == 3
        assert len({a["eventId"], other["eventId"], fresh["eventId"]}) == 3
        # A key reused for another call is another event: decided, not a dead letter.
        hb = await http.post(f"/v1/sessions/{a['sessionId']}/heartbeat", headers={**me, **key})
        assert (hb.status_code, hb.json()["reason"]) == (200, "renewed")
        hb2 = await http.post(f"/v1/sessions/{a['sessionId']}/heartbeat", headers={**me, **key})
        assert hb2.json()["verdictId"] == hb.json()["verdictId"]
        stop = await http.delete(f"/v1/sessions/{a['sessionId']}", headers={**me, **key})
        assert stop.json()["reason"] == "stopped"
        # Without a key every call is a new event.
        x = (await http.post("/v1/sessions", json={"sessionId": "s-x"}, headers=me)).json()
        y = (await http.post("/v1/sessions", json={"sessionId": "s-x"}, headers=me)).json()
        assert (x["reason"], y["reason"]) == ("started", "already_active")
        assert x["verdictId"] != y["verdictId"]
    assert not flow._dlq.records


async def test_a_missing_malformed_badly_signed_or_expired_token_is_401_and_never_published(flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        now_claims = {"sub": "u-1", "exp": 4_000_000_000}
        cases = {
            "missing": {},
            "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
            "malformed": {"Authorization": "Bearer not-a-jwt"},
            "bad signature": {
                "Authorization": "Bearer " + jwt.encode(now_claims, "x" * 40, algorithm="HS256")
            },
            "expired": bearer("u-1", ttl=-10),
            "no exp": {"Authorization": "Bearer " + jwt.encode({"sub": "u-1"}, GATEWAY_TEST_SECRET)},
            "sub too long": bearer("u" * 129),
            "alg none": {"Authorization": "Bearer " + jwt.encode(now_claims, None, algorithm="none")},
        }
        for name, headers in cases.items():
            for method, path in (("POST", "/v1/sessions"), ("GET", "/v1/sessions")):
                r = await http.request(method, path, headers=headers, json={} if method == "POST" else None)
                assert r.status_code == 401, (name, r.text)
                assert r.json()["error"] == "unauthorized" and r.json()["detail"], name
                assert r.headers["www-authenticate"] == "Bearer"
            r = await http.delete("/v1/sessions/s1", headers=headers)
            assert r.status_code == 401, name
        expired = await http.post("/v1/sessions", headers=bearer("u-1", ttl=-10))
        assert "expired" in expired.json()["detail"]
    assert await events_written(flow) == 0


async def test_bad_bodies_paths_and_headers_are_400_with_error_and_detail_and_never_published(flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        me = bearer("u-bad")
        json_type = {"content-type": "application/json"}
        bodies = [
            ({"sessionId": "s" * 129}, "bad_request"),
            ({"sessionId": ""}, "bad_request"),
            ({"deviceId": "d" * 257}, "bad_request"),
            ({"contentId": "c" * 257}, "bad_request"),
            ({"deviceClass": "k" * 33}, "bad_request"),
            ({"sessionId": 42}, "bad_request"),
            ({"deviceId": ["tv"]}, "bad_request"),
            ({"deviceClass": True}, "bad_request"),
            ([], "bad_request"),
            ("just a string", "bad_request"),
        ]
        for body, code in bodies:
            r = await http.post("/v1/sessions", json=body, headers=me)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"] == code and r.json()["detail"], body
        for raw in (b"{not json", b'{"sessionId": "s1"', b"\xff\xfe"):
            r = await http.post("/v1/sessions", content=raw, headers={**me, **json_type})
            assert (r.status_code, r.json()["error"]) == (400, "not_json"), raw
        long_id = "s" * 129
        for method, path in (
            ("POST", f"/v1/sessions/{long_id}/heartbeat"),
            ("DELETE", f"/v1/sessions/{long_id}"),
            ("POST", f"/v1/sessions/{long_id}/terminate"),
        ):
            r = await http.request(method, path, headers=me)
            assert r.status_code == 400 and "sessionId" in r.json()["detail"], (path, r.text)
        r = await http.post("/v1/sessions", json={"deviceId": "tv", "pad": "x" * 70_000}, headers=me)
        assert (r.status_code, r.json()["error"]) == (400, "too_large") and "65536" in r.json()["detail"]
        # Control characters in a path id (or the Idempotency-Key) are refused, never published.
        for bad in ("a%00b", "a%0Ab", "a%1Fb", "a%7Fb"):
            for method, path in (
                ("POST", f"/v1/sessions/{bad}/heartbeat"),
                ("DELETE", f"/v1/sessions/{bad}"),
                ("POST", f"/v1/sessions/{bad}/terminate"),
            ):
                r = await http.request(method, path, headers=me)
                assert r.status_code == 400 and "sessionId" in r.json()["detail"], (path, r.text)
        r = await http.post("/v1/sessions", headers={**me, "Idempotency-Key": "k\tx"})
        assert r.status_code == 400 and "Idempotency-Key" in r.json()["detail"]
        r = await http.post("/v1/sessions/s1/terminate", json={"sessionId": 7}, headers=me)
        assert r.status_code == 400
        r = await http.post("/v1/sessions", headers={**me, "Idempotency-Key": "k" * 129})
        assert r.status_code == 400 and "Idempotency-Key" in r.json()["detail"]
        r = await http.get("/v1/nothing-here", headers=me)
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert await events_written(flow) == 0


async def test_a_terminate_reusing_a_key_from_another_requester_is_another_event_and_is_decided(flow):
    # The eventId covers the requester's sessionId: with the same id the processor would
    # dead-letter the second terminate as event_id_conflict and the call would wait to a 504.
    async with (
        running_gateway(flow, gateway_verdict_timeout_ms=5000) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        me = bearer("u-term-key")
        key = {"Idempotency-Key": "term-1"}
        assert (await http.post("/v1/sessions", json={"sessionId": "tv"}, headers=me)).status_code == 200
        first = await http.post(
            "/v1/sessions/tv/terminate", json={"sessionId": "phone"}, headers={**me, **key}
        )
        assert (first.status_code, first.json()["reason"]) == (200, "terminated"), first.text
        other = await http.post("/v1/sessions/tv/terminate", json={"sessionId": "web"}, headers={**me, **key})
        assert (other.status_code, other.json()["reason"]) == (200, "not_active"), other.text
        assert other.json()["eventId"] != first.json()["eventId"]
        again = await http.post(
            "/v1/sessions/tv/terminate", json={"sessionId": "phone"}, headers={**me, **key}
        )
        assert again.content == first.content  # the same requester's retry is the same event
    assert not flow._dlq.records


async def test_a_playback_token_is_refused_as_a_credential_even_when_the_secrets_are_one(flow):
    # Development only (ALLOW_INSECURE_DEV_SECRET): the auth secret is the processor's JWT_SECRET,
    # so its playback tokens verify; they carry a sid claim and are refused anyway.
    async with (
        running_gateway(
            flow, gateway_auth_secret=TEST_SECRET, jwt_secret=TEST_SECRET, allow_insecure_dev_secret=True
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        r = await http.post(
            "/v1/sessions", json={"sessionId": "s-1"}, headers=bearer("u-pb", secret=TEST_SECRET)
        )
        assert r.status_code == 200, r.text
        playback = {"Authorization": "Bearer " + r.json()["token"]}
        for method, path in (
            ("POST", "/v1/sessions"),
            ("GET", "/v1/sessions"),
            ("DELETE", "/v1/sessions/s-1"),
        ):
            refused = await http.request(method, path, headers=playback)
            assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized"), path
            assert "sid" in refused.json()["detail"]


async def _raw_exchange(url: str, head: bytes, body: bytes) -> bytes:
    """Send a request head and part of a body, never the rest; the answer's first bytes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        # A gateway that waits for the whole body never answers: bounded so the test fails, not hangs.
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


async def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(flow):
    async with running_gateway(flow) as gw:
        auth = bearer("u-big")["Authorization"].encode()
        common = b"Host: gw\r\nAuthorization: " + auth + b"\r\nContent-Type: application/json\r\n"
        # Announced too large: refused by its Content-Length, none of it sent.
        head = b"POST /v1/sessions HTTP/1.1\r\n" + common + b"Content-Length: 100000000\r\n\r\n"
        answer = await _raw_exchange(gw.url, head, b"")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"error":"too_large"' in answer and b"65536" in answer
        # Chunked without a length: refused at the chunk past the limit, the end never sent.
        head = b"POST /v1/sessions/tv/terminate HTTP/1.1\r\n" + common + b"Transfer-Encoding: chunked\r\n\r\n"
        chunk = b"x" * 8192
        chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 9  # 72 KiB
        answer = await _raw_exchange(gw.url, head, chunks)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"error":"too_large"' in answer
    assert await events_written(flow) == 0
