"""GET /health, GET /live and GET /metrics on the processor's event loop.

/health is readiness (200 only while consuming with partitions); /live is liveness: 200 while
the loop runs, partitions or not, so a probe does not restart an idle standby instance.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HttpServer:
    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, dict]],
        live: Callable[[], tuple[bool, dict]] | None = None,
    ) -> None:
        self._port = port
        self._registry = registry
        self._health = health
        self._live = live  # without it /live is not served (404), rather than a blind 200
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._get_health)
        if self._live is not None:
            app.router.add_get("/live", self._get_live)
        app.router.add_get("/metrics", self._get_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self._port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _get_health(self, _request: web.Request) -> web.Response:
        ok, body = self._health()
        return web.json_response(body, status=200 if ok else 503)

    async def _get_live(self, _request: web.Request) -> web.Response:
        ok, body = self._live()  # type: ignore[misc]
        return web.json_response(body, status=200 if ok else 503)

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
