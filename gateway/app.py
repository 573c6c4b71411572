"""The HTTP routes of the gateway (FastAPI), as the contract's "The HTTP gateway" lists them.

Why FastAPI on uvicorn: the request bodies are pydantic models already (the processor's wire
limits), FastAPI generates /openapi.json from them and from the response models, so the
document cannot drift from what is accepted; it is async, well kept and the most used Python
API framework. uvicorn (with uvloop and httptools) is its usual ASGI server, runs one process
here, and is programmable (tests start it in-process on a free port). The four call routes
are declared here (their OpenAPI description) but served by calls.py's plain ASGI handlers
before FastAPI's machinery (`GatewayApp.__call__`); they read their input through parsing.py
(the same models) and hand it to `Gateway` (service.py). Bad input is the contract's 400
`{"error", "detail"}` (FastAPI's 422 nowhere, in the document neither).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from gateway import parsing
from gateway.auth import MAX_AUTHORIZATION_BYTES, TokenCache, make_verifier
from gateway.calls import CallRoutes, bad_request_detail, header_too_large, too_large, unauthorized
from gateway.console.routes import console_routes
from gateway.console.service import ConsoleService
from gateway.console.settings import ConsoleSettings
from gateway.console.support_auth import SupportAuth
from gateway.models import (
    ErrorBody,
    HealthBody,
    SessionsBody,
    StartRequest,
    TerminateRequest,
    TimeoutBody,
    VerdictBody,
)
from gateway.service import Answer, Gateway, error
from gateway.settings import GatewaySettings

_WHAT = {
    400: "bad input, never published (a body over 65536 bytes: too_large, refused by its Content-Length "
    "before it is read)",
    401: "missing, malformed, badly signed or expired token, or a playback token (sid claim)",
    429: "this user has GATEWAY_MAX_IN_FLIGHT_PER_USER calls waiting already: retry after Retry-After",
    431: f"header_too_large: the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes "
    "(refused before it is read as a token)",
    503: "not ready, or too many calls in flight: retry after Retry-After",
    504: "no verdict in time: retry with the same Idempotency-Key",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before a retry (GATEWAY_RETRY_AFTER_SECONDS)",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
    504: _RETRY_AFTER,
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers: the {"error", "detail"} body (504's with its eventId) and their headers."""
    return {
        s: {
            "model": TimeoutBody if s == 504 else ErrorBody,
            "description": _WHAT[s],
            **({"headers": _HEADERS[s]} if s in _HEADERS else {}),
        }
        for s in statuses
    }


def _verdict(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": VerdictBody, "description": description}}


_CALL_ERRORS = _errors(400, 401, 429, 431, 503, 504)


def allowed_methods(routes: list[BaseRoute], scope: dict) -> str:
    """Every method served at the scope's path. Starlette's 405 names the first matching route's
    only, so a PUT on /v1/sessions said `Allow: POST` though GET is served there too."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _respond(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


class GatewayApp(FastAPI):
    """FastAPI with the call routes served first, by calls.py, without the framework per request."""

    calls: CallRoutes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            found = self.calls.match(scope)
            if found is not None:
                await self.calls.dispatch(*found, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: GatewaySettings, gateway: Gateway | None = None, console: ConsoleSettings | None = None
) -> GatewayApp:
    gw = gateway or Gateway(settings)
    tokens = TokenCache(make_verifier(settings), settings.gateway_token_cache_bytes)
    gw.metrics.watch_token_cache(tokens)
    calls = CallRoutes(gw, tokens)
    console = console or ConsoleSettings()
    support = ConsoleService(settings, console, gw) if console.console_enabled else None  # /console

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        gw.start()
        if support is not None:
            support.start()
        try:
            yield
        finally:
            if support is not None:
                await support.stop()
            await gw.stop()

    app = GatewayApp(
        title="Stream concurrency gateway",
        version="1.0",
        description="Players' HTTP calls become player events on Kafka; each answer is the event's verdict.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    app.state.console = support
    app.calls = calls
    if support is not None:  # the support console (gateway/console/), outside the OpenAPI document
        app.router.routes.extend(console_routes(support, SupportAuth(tokens.verifier)))

    @app.exception_handler(parsing.Unauthorized)
    async def _unauthorized(_request: Request, exc: parsing.Unauthorized) -> Response:
        return _respond(unauthorized(exc.detail))

    @app.exception_handler(parsing.HeaderTooLarge)
    async def _header_too_large(_request: Request, exc: parsing.HeaderTooLarge) -> Response:
        return _respond(header_too_large(exc.detail))

    @app.exception_handler(parsing.NotJson)
    async def _not_json(_request: Request, _exc: parsing.NotJson) -> Response:
        return _respond(error(400, "not_json", "the body must be a JSON object"))

    @app.exception_handler(parsing.TooLarge)
    async def _too_large(_request: Request, exc: parsing.TooLarge) -> Response:
        return _respond(too_large(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> Response:
        return _respond(error(400, "bad_request", bad_request_detail(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        answer = error(exc.status_code, code, str(exc.detail))
        headers = {**answer.headers, **(exc.headers or {})}
        if exc.status_code == 405:
            headers.pop("Allow", None)
            headers["allow"] = allowed_methods(app.router.routes, request.scope)
        return Response(answer.body, exc.status_code, headers=headers)

    @app.post(
        "/v1/sessions",
        summary="start a session (a new UUID when sessionId is absent)",
        responses={
            **_verdict(200, "allow: started or already_active, with the playback token"),
            **_verdict(409, "deny: limit_exceeded or device_class_limit, with conflicts and nextFreeAt"),
            **_CALL_ERRORS,
        },
        openapi_extra=parsing.operation_extra(request_body=StartRequest),
        response_class=Response,
    )
    async def start(request: Request) -> Response:  # served by calls.py first (GatewayApp)
        return _respond(await calls.start(request.scope, request.receive))

    @app.post(
        "/v1/sessions/{sessionId}/heartbeat",
        summary="renew a session's lease",
        responses={
            **_verdict(200, "allow: renewed, with a new token"),
            **_verdict(410, "deny: no_lease (the player must stop)"),
            **_CALL_ERRORS,
        },
        openapi_extra=parsing.operation_extra(path_id=True),
        response_class=Response,
    )
    async def heartbeat(request: Request) -> Response:
        return _respond(
            await calls.heartbeat(request.scope, request.receive, request.path_params["sessionId"])
        )

    @app.delete(
        "/v1/sessions/{sessionId}",
        summary="stop a session",
        responses={**_verdict(200, "allow: stopped or not_active"), **_CALL_ERRORS},
        openapi_extra=parsing.operation_extra(path_id=True),
        response_class=Response,
    )
    async def stop(request: Request) -> Response:
        return _respond(await calls.stop(request.scope, request.receive, request.path_params["sessionId"]))

    @app.post(
        "/v1/sessions/{sessionId}/terminate",
        summary="end another session of the same user (e.g. from the account page)",
        responses={**_verdict(200, "allow: terminated or not_active"), **_CALL_ERRORS},
        openapi_extra=parsing.operation_extra(path_id=True, request_body=TerminateRequest),
        response_class=Response,
    )
    async def terminate(request: Request) -> Response:
        return _respond(
            await calls.terminate(request.scope, request.receive, request.path_params["sessionId"])
        )

    @app.get(
        "/v1/sessions",
        summary="the caller's active sessions, from Redis",
        responses={200: {"model": SessionsBody, "description": "active leases"}, **_errors(401, 431, 503)},
        openapi_extra={"security": [{"bearer": []}]},
        response_class=Response,
    )
    async def list_sessions(request: Request) -> Response:
        return _respond(await gw.sessions(parsing.caller(request.scope, tokens)))

    @app.get(
        "/health",
        summary="200 while the gateway can route replies, else 503",
        responses={
            200: {"model": HealthBody, "description": "UP"},
            503: {"model": HealthBody, "description": "DOWN, and why"},
        },
        response_class=Response,
    )
    async def health() -> Response:
        ok, body = gw.health()
        return _respond(Answer(200 if ok else 503, HealthBody(**body).model_dump_json().encode()))

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}
        },
        response_class=Response,
    )
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request models and the bearer scheme of parsing.py."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        parsing.add_components(doc, [StartRequest, TerminateRequest])
        for path in doc["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)  # never sent: bad input is 400
        doc["components"]["schemas"].pop("HTTPValidationError", None)
        doc["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = doc
    return app.openapi_schema
