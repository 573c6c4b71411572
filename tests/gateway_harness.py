"""Running the HTTP gateway (gateway/) in tests: uvicorn on the test's event loop, on a free
port, on a Flow's topics (tests/harness.py), with the test auth secret."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from tests.harness import TEST_SECRET, Flow, wait_until

GATEWAY_TEST_SECRET = "gateway-test-auth-secret-0123456789abcdef"


def bearer(user: str, plan: str | None = None, ttl: int = 3600, secret: str = GATEWAY_TEST_SECRET) -> dict:
    """An Authorization header for `user`, HS256 with the test gateways' auth secret."""
    import jwt

    now = int(time.time())
    claims: dict = {"sub": user, "iat": now, "exp": now + ttl}
    if plan is not None:
        claims["plan"] = plan
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


def bearer_spellings(token: str, count: int, trailing: bool = True) -> list[bytes]:
    """`count` distinct Authorization values the gateway reads as the one `token`: the scheme in
    every case, spaces and tabs before the token, whitespace after it (`trailing`; HTTP clients
    refuse to send that)."""
    import itertools

    casings = ("".join(c) for c in itertools.product(*[(ch.lower(), ch.upper()) for ch in "bearer"]))
    gaps = [" " * n for n in range(1, 9)] + [" \t" * n for n in range(1, 9)]
    tails = ["", " ", "\t", "  "] if trailing else [""]
    variants = (f"{s}{g}{token}{t}".encode() for s, g, t in itertools.product(casings, gaps, tails))
    found = list(itertools.islice(variants, count))
    assert len(found) == count, f"only {len(found)} spellings"
    return found


@dataclass
class RunningGateway:
    """A gateway served by uvicorn on this test's event loop, on a free port of 127.0.0.1."""

    server: object  # uvicorn.Server
    task: asyncio.Task
    url: str
    app: object  # the FastAPI app; app.state.gateway is the Gateway

    @property
    def gateway(self):
        return self.app.state.gateway  # type: ignore[attr-defined]

    async def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        await asyncio.wait_for(self.task, 30)


def gateway_settings(flow: Flow, **overrides: object):
    """Gateway settings on `flow`'s topics; every gateway of one flow shares its replies topic and group."""
    from gateway.settings import load_gateway_settings

    s = flow.settings
    suffix = s.events_topic.removeprefix("events-")
    values: dict = {
        "kafka_bootstrap_servers": s.kafka_bootstrap_servers,
        "redis_url": s.redis_url,
        "redis_cluster": s.redis_cluster,
        "events_topic": s.events_topic,
        "verdicts_topic": s.verdicts_topic,
        "topic_partitions": s.topic_partitions,
        "event_partitioner": s.event_partitioner,
        "gateway_replies_topic": f"replies-{suffix}",
        "gateway_consumer_group": f"gateway-{suffix}",
        "gateway_reply_partitions": 4,
        # Tests that want a timeout set one; others must not see a 504 on a busy machine.
        "gateway_verdict_timeout_ms": 10_000,
        "gateway_auth_secret": GATEWAY_TEST_SECRET,
        "jwt_secret": TEST_SECRET,
        "gateway_host": "127.0.0.1",
        "gateway_port": 0,
    }
    values.update(overrides)
    return load_gateway_settings(**values)


@contextlib.asynccontextmanager
async def running_gateway(flow: Flow, ready: bool = True, **overrides: object):
    """`async with running_gateway(flow, gateway_on_timeout="allow") as gw:` (gw.url), stopped after.

    With `ready`, waits until GET /health answers 200 (it owns a reply partition).
    """
    import socket

    import httpx
    import uvicorn

    from gateway.app import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the test runner keeps its own signal handlers
            yield

    app = create_app(gateway_settings(flow, **overrides))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, access_log=False, log_config=None, lifespan="on", http="httptools")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    running = RunningGateway(server, task, f"http://127.0.0.1:{sock.getsockname()[1]}", app)
    try:
        if ready:
            async with httpx.AsyncClient(base_url=running.url) as client:

                async def healthy() -> bool:
                    if task.done():
                        task.result()
                    try:
                        return (await client.get("/health")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_until(healthy, 30, interval=0.05, what="gateway /health 200")
        yield running
    finally:
        if not task.done():
            await running.stop()
        sock.close()
