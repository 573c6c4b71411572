"""The console's HTTP surface under /console (the contract's "The support console").

- `GET /console`: the page (static HTML from the package) and `/console/static/<file>` its
  script and style sheet. No data is in the page: the script signs in and asks the API.
- `/console/api/*`: JSON, each call with `Authorization: Bearer <support JWT>`: 401 without a
  valid token, 403 with a valid token whose `role` is not `support` (a player's).
- The credential travels only in the Authorization header (never a URL, never a cookie), so a
  page elsewhere cannot make the browser send it: the actions are CSRF-safe by construction;
  the terminate also wants a JSON body, which a cross-site form cannot send.
- The page's forms have no named inputs and the policy allows no form action: without the
  script, a submitted form sends nothing anywhere.
- Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
  only, nothing inline, images only from here (the icon), no frames; `frame-ancestors
  'none'`), X-Frame-Options DENY, nosniff, no referrer and no caching.
- Every call is logged with the support principal (`support`), the action and the account.

Starlette routes on the gateway's app, outside its OpenAPI document (the players' API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import MAX_AUTHORIZATION_BYTES, AuthError
from gateway.console.service import ConsoleService
from gateway.console.support_auth import Forbidden, Support, SupportAuth
from processor.wire import MAX_ID_CHARS

log = logging.getLogger("gateway.console")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "font-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}
STATIC = {  # file -> content type; nothing else is served
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_KEY_CHARS = 128
MAX_BODY_BYTES = 4096

Handler = Callable[[Request, Support], Awaitable[Response]]


def _static_files() -> dict[str, bytes]:
    folder = resources.files("gateway.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def respond(status: int, body: bytes, content_type: str = "application/json", **extra: str) -> Response:
    return Response(body, status, headers={**SECURITY_HEADERS, "content-type": content_type, **extra})


def json(status: int, value: object) -> Response:
    return respond(status, orjson.dumps(value))


def problem(status: int, code: str, detail: str, **extra: str) -> Response:
    return respond(status, orjson.dumps({"error": code, "detail": detail}), **extra)


def _account_id(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS else None


class LookupAudit:
    """At what level an account lookup is logged: INFO the first time an agent looks an account
    up and again once REPEAT_S passed; DEBUG for the page's refreshes in between (one every 2 s).
    Bounded: past MAX_KEYS pairs it starts over (every next lookup at INFO again)."""

    REPEAT_S = 300.0
    MAX_KEYS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def level(self, principal: str, user_id: str) -> int:
        now, key = self._clock(), (principal, user_id)
        last = self._last.get(key)
        if last is not None and now - last < self.REPEAT_S:
            return logging.DEBUG
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
        self._last[key] = now
        return logging.INFO


def console_routes(service: ConsoleService, auth: SupportAuth) -> list[Route]:
    files = _static_files()
    lookups = LookupAudit()

    async def page(_request: Request) -> Response:
        return respond(200, files["index.html"], STATIC["index.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            return problem(404, "not_found", "no such file")
        return respond(200, files[name], STATIC[name])

    def guarded(action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization")
            if header is not None and len(header) > MAX_AUTHORIZATION_BYTES:  # as the player calls
                return problem(
                    431,
                    "header_too_large",
                    f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes",
                )
            try:
                support = auth.support(header.encode("latin-1") if header else None)
            except AuthError as exc:
                return problem(
                    401, "unauthorized", str(exc), **{"www-authenticate": 'Bearer realm="console"'}
                )
            except Forbidden as exc:
                log.warning("console: refused a token without the support role", extra={"action": action})
                return problem(403, "forbidden", str(exc))
            return await handler(request, support)

        return endpoint

    async def whoami(_request: Request, support: Support) -> Response:
        log.info("console: signed in", extra={"support": support.principal})
        return json(200, {"principal": support.principal})

    async def account(request: Request, support: Support) -> Response:
        user_id = _account_id(request.query_params.get("userId"))
        if user_id is None:
            return problem(400, "bad_request", f"userId must be 1 to {MAX_ID_CHARS} characters")
        # The server decides what is audited: the page's own refresh flag would let a caller
        # keep its lookups out of the INFO log.
        level = lookups.level(support.principal, user_id)
        log.log(level, "console: account looked up", extra={"support": support.principal, "user_id": user_id})
        return json(200, await service.account(user_id))

    async def terminate(request: Request, support: Support) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return problem(415, "unsupported_media_type", "send the body as application/json")
        body = await _read_capped(request, MAX_BODY_BYTES)
        try:
            value = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            value = None
        user_id = _account_id(value.get("userId")) if isinstance(value, dict) else None
        session_id = _account_id(value.get("sessionId")) if isinstance(value, dict) else None
        if user_id is None or session_id is None:
            return problem(
                400, "bad_request", f'send {{"userId", "sessionId"}}, each 1 to {MAX_ID_CHARS} characters'
            )
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            return problem(400, "bad_request", f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
        answer = await service.terminate(support, user_id, session_id, key)
        log.info(
            "console: session terminated" if answer.status == 200 else "console: terminate failed",
            extra={
                "support": support.principal,
                "user_id": user_id,
                "session_id": session_id,
                "status": answer.status,
            },
        )
        return respond(
            answer.status, answer.body, **{k: v for k, v in answer.headers.items() if k != "content-type"}
        )

    async def live(_request: Request, support: Support) -> Response:
        log.debug("console: live picture", extra={"support": support.principal})
        return json(200, service.live())

    async def policies(_request: Request, support: Support) -> Response:
        log.debug("console: policies", extra={"support": support.principal})
        return json(200, service.policies_in_force())

    return [
        Route("/console", page, methods=["GET"]),
        Route("/console/", page, methods=["GET"]),
        Route("/console/static/{name}", static, methods=["GET"]),
        Route("/console/api/whoami", guarded("whoami", whoami), methods=["GET"]),
        Route("/console/api/account", guarded("account", account), methods=["GET"]),
        Route("/console/api/terminate", guarded("terminate", terminate), methods=["POST"]),
        Route("/console/api/live", guarded("live", live), methods=["GET"]),
        Route("/console/api/policies", guarded("policies", policies), methods=["GET"]),
    ]


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be over `limit` (by its Content-Length before
    any of it is read, else at the first chunk past it): a caller cannot make the gateway buffer
    more than the limit."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
