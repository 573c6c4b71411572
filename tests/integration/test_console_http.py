"""The support console's HTTP surface, against a real gateway, processor, Kafka and Redis:
who may call it (401 / 403), the headers that keep the page safe, the API's answers."""

from __future__ import annotations

import re
import socket
import time

import httpx
import jwt

from tests.gateway_harness import GATEWAY_TEST_SECRET, bearer, running_gateway
from tests.harness import Flow, wait_until

API_CALLS = [
    ("GET", "/console/api/whoami", None),
    ("GET", "/console/api/account?userId=u1", None),
    ("GET", "/console/api/live", None),
    ("GET", "/console/api/policies", None),
    ("POST", "/console/api/terminate", {"userId": "u1", "sessionId": "s1"}),
]


def support(sub: str = "agent-7", role: str = "support") -> dict:
    now = int(time.time())
    claims = {"sub": sub, "role": role, "iat": now, "exp": now + 600}
    return {"Authorization": "Bearer " + jwt.encode(claims, GATEWAY_TEST_SECRET, algorithm="HS256")}


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: dict | None, headers: dict
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def test_a_player_token_gets_403_on_every_console_call_and_no_token_401(flow: Flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for method, path, body in API_CALLS:
            player = await call(client, method, path, body, bearer("u1"))
            assert player.status_code == 403, (path, player.text)
            assert player.json()["error"] == "forbidden" and "role" in player.json()["detail"]
            other_role = await call(client, method, path, body, support(role="admin"))
            assert other_role.status_code == 403, path
            nobody = await call(client, method, path, body, {})
            assert nobody.status_code == 401 and nobody.headers["www-authenticate"].startswith("Bearer")
            forged = await call(
                client, method, path, body, {"Authorization": support()["Authorization"] + "x"}
            )
            assert forged.status_code == 401, path
        # The refused terminate published nothing: no verdict for u1 ever came.
        assert (await client.get("/console/api/whoami", headers=support())).json() == {
            "principal": "support:agent-7"
        }
        assert not [v for v in flow.verdicts() if v["userId"] == "u1"]


async def test_an_oversized_authorization_gets_431_and_an_oversized_terminate_body_is_refused_unread(
    flow: Flow,
):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        huge = {"Authorization": "Bearer " + "a" * 9000}  # over the players' 8 KiB bound too
        for method, path, body in API_CALLS:
            answer = await call(client, method, path, body, huge)
            assert answer.status_code == 431, (path, answer.status_code)
            assert answer.json()["error"] == "header_too_large"
        # A body announced over the 4 KiB limit is refused by its Content-Length; a chunked one at
        # the first chunk past it: nothing published for either.
        padded = {"userId": "u-big", "sessionId": "s1", "pad": "x" * 8000}
        announced = await client.post("/console/api/terminate", json=padded, headers=support())

        async def chunks():
            yield b'{"userId": "u-big", "sessionId": "s1", "pad": "'
            for _ in range(64):
                yield b"x" * 1024
            yield b'"}'

        streamed = await client.post(
            "/console/api/terminate",
            content=chunks(),
            headers={**support(), "Content-Type": "application/json"},
        )
        assert (announced.status_code, streamed.status_code) == (400, 400)
        assert not [v for v in flow.verdicts() if v["userId"] == "u-big"]


async def test_the_page_and_every_answer_carry_a_strict_csp_no_framing_and_no_inline_script(flow: Flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        answers = [
            await client.get("/console"),
            await client.get("/console/static/console.js"),
            await client.get("/console/api/live", headers=bearer("u1")),
            await client.get("/console/api/live", headers=support()),
        ]
        for answer in answers:
            csp = answer.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
            )
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
        page = answers[0]
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # Every script comes from a file; no inline handler, no style attribute.
        assert re.findall(r"<script\b[^>]*>", page.text) == [
            '<script src="/console/static/console.js" defer>'
        ]
        assert not re.search(r"\son[a-z]+\s*=", page.text) and " style=" not in page.text
        # The credential's input has no name: a form submission cannot carry it anywhere.
        token_input = re.search(r'<input id="token"[^>]*>', page.text)
        assert token_input is not None and "name=" not in token_input.group(0)
        assert (await client.get("/console/static/nothing.js")).status_code == 404
        script = answers[1].text
        assert (
            "innerHTML" not in script
            and "insertAdjacentHTML" not in script
            and "document.write" not in script
        )


async def test_the_account_view_reads_sessions_and_decisions_and_a_terminate_names_the_agent(flow: Flow):
    async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        console = gw.app.state.console
        await wait_until(lambda: console.ledger_stale() is None, 60, what="the console's ledger live")
        for device in ("tv", "phone", "web", "tablet"):
            await client.post(
                "/v1/sessions", json={"sessionId": device, "deviceId": device}, headers=bearer("u1")
            )

        async def decided() -> bool:
            view = (await client.get("/console/api/account?userId=u1", headers=support())).json()
            return len(view["recent"]) == 4

        await wait_until(decided, 30, what="four decisions indexed")
        view = (await client.get("/console/api/account?userId=u1", headers=support())).json()
        assert [s["sessionId"] for s in view["sessions"]] == ["tv", "phone", "web"]
        assert view["recent"][0]["reason"] == "limit_exceeded"
        assert [c["deviceId"] for c in view["recent"][0]["conflicts"]] == ["tv", "phone", "web"]
        assert view["policy"] == {
            "name": "settings", "maxStreams": 3, "overflow": "reject", "deviceClasses": {}, "plan": None,
        }  # fmt: skip
        assert view["sessionsStale"] is None and view["ledgerStale"] is None

        bad = await client.post("/console/api/terminate", json={"userId": "u1"}, headers=support())
        assert bad.status_code == 400
        form = await client.post(
            "/console/api/terminate", content=b"userId=u1&sessionId=tv", headers={
                **support(), "content-type": "application/x-www-form-urlencoded"
            },
        )  # fmt: skip
        assert form.status_code == 415
        done = await client.post(
            "/console/api/terminate", json={"userId": "u1", "sessionId": "tv"}, headers=support()
        )
        assert done.status_code == 200
        assert (done.json()["reason"], done.json()["issuedBy"]) == ("terminated", "support:agent-7")
        view = (await client.get("/console/api/account?userId=u1", headers=support())).json()
        assert [s["sessionId"] for s in view["sessions"]] == ["phone", "web"]


async def test_sessions_are_shown_stale_not_empty_when_redis_is_away(flow: Flow):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    async with (
        running_gateway(flow, redis_url=dead) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        view = (await client.get("/console/api/account?userId=u1", headers=support())).json()
        assert view["sessions"] is None
        assert "Redis" in view["sessionsStale"]
