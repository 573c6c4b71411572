"""The gateway's token cache through a real gateway over HTTP (issue 28): every spelling of one
token is one entry, a huge Authorization header is refused with 431 before anything reads it, and
many distinct valid tokens keep the cache within GATEWAY_TOKEN_CACHE_BYTES. The gauges on
/metrics are what an operator sees of it."""

from __future__ import annotations

import httpx

from gateway.auth import MAX_AUTHORIZATION_BYTES
from tests.gateway_harness import bearer, bearer_spellings, running_gateway


async def cache_gauges(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get("/metrics")).text
    return {
        name: float(value)
        for name, value in (
            line.split(" ", 1) for line in text.splitlines() if line.startswith("gateway_token_cache_")
        )
    }


async def test_a_thousand_spellings_of_one_token_are_one_cache_entry(flow_factory):
    async with flow_factory() as flow, running_gateway(flow) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
            token = bearer("u-spell")["Authorization"].removeprefix("Bearer ")
            for authorization in bearer_spellings(token, 1000, trailing=False):
                answer = await http.get("/v1/sessions", headers={"Authorization": authorization.decode()})
                assert answer.status_code == 200, (authorization, answer.text)
                assert answer.json()["userId"] == "u-spell"
            gauges = await cache_gauges(http)
    assert gauges["gateway_token_cache_entries"] == 1
    assert 0 < gauges["gateway_token_cache_bytes"] < 2048


async def test_a_huge_authorization_header_is_431_and_many_valid_tokens_stay_within_the_budget(flow_factory):
    budget = 64 * 1024
    async with flow_factory() as flow, running_gateway(flow, gateway_token_cache_bytes=budget) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
            huge = {"Authorization": "Bearer " + "x" * 256 * 1024}
            for answer in (
                await http.get("/v1/sessions", headers=huge),
                await http.post("/v1/sessions", json={}, headers=huge),
                await http.post("/v1/sessions/s1/heartbeat", headers=huge),
            ):
                assert answer.status_code == 431, answer.text
                assert answer.json()["error"] == "header_too_large"
                assert str(MAX_AUTHORIZATION_BYTES) in answer.json()["detail"]
            users = [f"u-many-{i}" for i in range(300)]
            for user in users:
                answer = await http.get("/v1/sessions", headers=bearer(user))
                assert answer.status_code == 200 and answer.json()["userId"] == user
            gauges = await cache_gauges(http)
            # The newest are kept (a repeat of the last user is a hit: still answered).
            assert (await http.get("/v1/sessions", headers=bearer(users[-1]))).status_code == 200
    assert 0 < gauges["gateway_token_cache_bytes"] <= budget
    assert 0 < gauges["gateway_token_cache_entries"] < len(users)
