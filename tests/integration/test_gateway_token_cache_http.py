"""The gateway's token cache through a real gateway over HTTP (issue 28): every spelling of one
token is one entry, a huge Authorization header is refused with 431 before anything reads it, and
many distinct valid tokens keep the cache within GATEWAY_TOKEN_CACHE_BYTES. The gauges on
/metrics are what an operator sees of it."""

from __future__ import annotations

import asyncio

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


# A call whose token is checked (and kept) but whose Idempotency-Key is refused after it (400;
# 401 if the token were refused): the token's whole path through the gateway without a Kafka
# round trip. A thousand of them go pipelined on one connection (a client library's own work per
# call would be most of the test's time on this busy machine).
CHECKED_THEN_REFUSED = (
    b"DELETE /v1/sessions/s1 HTTP/1.1\r\nHost: gw\r\nIdempotency-Key: %s\r\nAuthorization: %s\r\n\r\n"
)


async def pipelined(url: str, authorizations: list[bytes]) -> list[tuple[int, bytes]]:
    """Send one checked-then-refused call per Authorization value on one connection, in one write;
    the statuses and bodies of the answers, in order."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(CHECKED_THEN_REFUSED % (b"k" * 129, a) for a in authorizations))
        await writer.drain()
        answers = []
        for _ in authorizations:
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answers.append((status, await reader.readexactly(length)))
        return answers
    finally:
        writer.close()
        await writer.wait_closed()


def assert_checked_then_refused(answers: list[tuple[int, bytes]]) -> None:
    for status, body in answers:
        assert status == 400 and b"Idempotency-Key" in body, (status, body)


async def test_a_thousand_spellings_of_one_token_are_one_cache_entry(flow_factory):
    async with flow_factory() as flow, running_gateway(flow) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
            token = bearer("u-spell")["Authorization"].removeprefix("Bearer ")
            spellings = bearer_spellings(token, 1000)
            answers = await asyncio.wait_for(pipelined(gw.url, spellings), 120)
            assert len(answers) == 1000
            assert_checked_then_refused(answers)
            # And real calls with some of them (HTTP clients refuse trailing whitespace).
            for authorization in [a for a in spellings if a == a.rstrip()][::60]:
                answer = await http.get("/v1/sessions", headers={"Authorization": authorization.decode()})
                assert answer.status_code == 200 and answer.json()["userId"] == "u-spell"
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
            users = [f"u-many-{i}" for i in range(500)]
            signed = [bearer(user)["Authorization"].encode() for user in users]
            assert_checked_then_refused(await asyncio.wait_for(pipelined(gw.url, signed), 120))
            gauges = await cache_gauges(http)
            answer = await http.get("/v1/sessions", headers=bearer(users[0]))  # evicted: checked again
            assert answer.status_code == 200 and answer.json()["userId"] == users[0]
    assert 0 < gauges["gateway_token_cache_bytes"] <= budget
    assert 0 < gauges["gateway_token_cache_entries"] < len(users)
