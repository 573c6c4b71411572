"""The gateway when verdicts do not come: 504 then a retry, fail-open, a full wait map, no reply partition."""

from __future__ import annotations

import asyncio

import httpx
import jwt

from tests.gateway_harness import bearer, running_gateway
from tests.harness import TEST_SECRET, wait_until


def metric(text: str, line_start: str) -> float:
    """The value of the first /metrics sample line starting with `line_start`."""
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    assert found, line_start
    return float(found[0].rsplit(" ", 1)[1])


async def test_no_verdict_is_504_with_retry_after_and_the_same_key_succeeds_once_the_processor_is_back(
    flow_factory,
):
    async with flow_factory() as flow:
        running = await flow.start_processor()
        async with (
            running_gateway(flow, gateway_verdict_timeout_ms=1000, gateway_retry_after_seconds=7) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
        ):
            me = bearer("u-late")
            first = {"Idempotency-Key": "first"}

            async def answered() -> httpx.Response | None:
                # The first call is the cold path (producers, reply consumer): retried like a client.
                r = await http.post("/v1/sessions", json={"sessionId": "s-1"}, headers={**me, **first})
                return None if r.status_code == 504 else r

            r = await wait_until(answered, 30, interval=0.2, what="the first call answered")
            assert r.status_code == 200, r.text
            await running.stop()
            key = {"Idempotency-Key": "retry-me"}
            r = await http.post("/v1/sessions", json={"sessionId": "s-2"}, headers={**me, **key})
            assert r.status_code == 504, r.text
            timed_out = r.json()
            assert timed_out["error"] == "verdict_timeout" and "Idempotency-Key" in timed_out["detail"]
            assert r.headers["retry-after"] == "7"  # GATEWAY_RETRY_AFTER_SECONDS
            await flow.start_processor()

            # The first attempt is decided when the processor is back; a retry is the same event.
            # A client retries while it gets 504 (a busy machine can still be slow once back).
            async def retried() -> httpx.Response | None:
                r = await http.post("/v1/sessions", json={"sessionId": "s-2"}, headers={**me, **key})
                return None if r.status_code == 504 else r

            retry = await wait_until(retried, 30, interval=0.2, what="an answer to the retry")
            assert retry.status_code == 200, retry.text
            got = retry.json()
            assert got["eventId"] == timed_out["eventId"]
            assert (got["reason"], got["activeStreams"]) == ("started", 2)
            metrics = (await http.get("/metrics")).text
        assert metric(metrics, 'gateway_verdict_timeouts_total{call="start"}') >= 1
        await flow.wait_events(timed_out["eventId"])  # the reply may come before the verdicts reader has it
        ids = {v["verdictId"] for v in flow.verdicts() if v["eventId"] == timed_out["eventId"]}
        assert ids == {got["verdictId"]}


async def test_fail_open_gives_starts_and_heartbeats_a_60_s_token_counted_and_stops_still_504(flow):
    await flow._running[0].stop()  # no processor: no verdict comes
    async with (
        running_gateway(flow, gateway_on_timeout="allow", gateway_verdict_timeout_ms=500) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        me = bearer("u-open")
        r = await http.post("/v1/sessions", json={"sessionId": "s-1"}, headers=me)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["decision"], body["reason"], body["sessionId"]) == ("allow", "degraded", "s-1")
        claims = jwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["sid"], claims["exp"] - claims["iat"]) == ("u-open", "s-1", 60)
        assert body["leaseExpiresAt"] - body["decidedAt"] == 60_000
        r = await http.post("/v1/sessions/s-1/heartbeat", headers=me)
        assert (r.status_code, r.json()["reason"]) == (200, "degraded")
        for method, path in (("DELETE", "/v1/sessions/s-1"), ("POST", "/v1/sessions/s-9/terminate")):
            r = await http.request(method, path, headers=me)
            assert (r.status_code, r.json()["error"]) == (504, "verdict_timeout"), path
        metrics = (await http.get("/metrics")).text
    assert metric(metrics, 'gateway_fail_open_total{call="start"}') == 1
    assert metric(metrics, 'gateway_fail_open_total{call="heartbeat"}') == 1
    assert metric(metrics, 'gateway_verdict_timeouts_total{call="stop"}') == 1


async def test_a_full_wait_map_answers_503_instead_of_growing(flow):
    await flow._running[0].stop()
    async with (
        running_gateway(flow, gateway_max_in_flight=1, gateway_verdict_timeout_ms=5000) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        me = bearer("u-full")
        waiting = asyncio.create_task(http.post("/v1/sessions", headers=me))

        async def one_in_flight() -> bool:
            return (await http.get("/health")).json()["inFlight"] == 1

        await wait_until(one_in_flight, 5, what="one call waiting")
        r = await http.post("/v1/sessions", headers=me)
        assert (r.status_code, r.json()["error"]) == (503, "overloaded")
        assert "retry-after" in r.headers
        assert (await waiting).status_code == 504
        assert (await http.get("/health")).json()["inFlight"] == 0


async def test_an_instance_without_a_reply_partition_is_unhealthy_and_answers_503(flow_factory):
    async with flow_factory() as flow:
        async with (
            running_gateway(flow, gateway_reply_partitions=1) as first,
            running_gateway(flow, ready=False, gateway_reply_partitions=1) as second,
            httpx.AsyncClient(timeout=10) as http,
        ):
            urls = (first.url, second.url)

            async def one_up() -> list[int] | None:
                # Once both have an assignment, one owns the only partition and the other none.
                codes = [(await http.get(f"{u}/health")).status_code for u in urls]
                joined = first.gateway.router.assignments and second.gateway.router.assignments
                return codes if sorted(codes) == [200, 503] and joined else None

            codes = await wait_until(one_up, 30, what="one instance up, one down")
            idle = urls[codes.index(503)]
            health = (await http.get(f"{idle}/health")).json()
            assert health["status"] == "DOWN" and "reply partition" in health["detail"]
            r = await http.post(f"{idle}/v1/sessions", headers=bearer("u-1"))
            assert (r.status_code, r.json()["error"]) == (503, "unavailable")
            assert "retry-after" in r.headers


async def test_one_user_cannot_hold_every_place_it_gets_429_and_others_still_wait(flow):
    await flow._running[0].stop()  # no verdict comes: the calls stay in flight
    async with (
        running_gateway(
            flow,
            gateway_max_in_flight=10,
            gateway_max_in_flight_per_user=2,
            gateway_verdict_timeout_ms=8000,
            gateway_retry_after_seconds=7,
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        greedy = bearer("u-greedy")
        waiting = [asyncio.create_task(http.post("/v1/sessions", headers=greedy)) for _ in range(2)]

        def in_flight(n: int):
            async def check() -> bool:
                return (await http.get("/health")).json()["inFlight"] == n

            return check

        await wait_until(in_flight(2), 5, what="two calls waiting")
        r = await http.post("/v1/sessions/s-1/heartbeat", headers=greedy)
        assert (r.status_code, r.json()["error"]) == (429, "too_many_requests"), r.text
        assert "GATEWAY_MAX_IN_FLIGHT_PER_USER" in r.json()["detail"]
        assert r.headers["retry-after"] == "7"  # GATEWAY_RETRY_AFTER_SECONDS
        # Another user still gets a place (and, with no processor, its 504).
        other = asyncio.create_task(http.post("/v1/sessions", headers=bearer("u-modest")))
        await wait_until(in_flight(3), 5, what="the other user's call waiting")
        assert [(await w).status_code for w in waiting] == [504, 504]
        assert (await other).status_code == 504
        assert (await http.get("/health")).json()["inFlight"] == 0
        metrics = (await http.get("/metrics")).text
    assert metric(metrics, 'gateway_rejected_total{reason="user_in_flight"}') == 1
    assert metric(metrics, 'gateway_requests_total{call="heartbeat",status="429"}') == 1
