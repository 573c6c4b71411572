"""The four call routes (start, heartbeat, stop, terminate) as plain ASGI handlers.

A call's own work (a token check, an id or two, maybe a small JSON body, one produce, one
reply) is small next to what a framework does per request: Starlette's middleware stack and
router, a Request object, FastAPI's handler wrapping, a Response object. Profiled at 1,000
starts/s that machinery was most of the gateway's CPU above the bare ASGI floor, so
`GatewayApp` (app.py) hands these four routes to `CallRoutes.dispatch` before the framework
sees them. The same handlers serve the FastAPI route declarations, which stay because they
generate /openapi.json (with the same models and parameter schemas as parsing.py reads), so
the document and the behaviour cannot drift; everything else (listing, health, metrics, the
document, 404/405) is FastAPI's as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi.exceptions import RequestValidationError

from gateway import parsing
from gateway.auth import TokenCache
from gateway.events import new_session_id
from gateway.models import StartRequest, TerminateRequest
from gateway.service import Answer, Gateway, error

DEFAULT_REQUESTER = "account"  # the requester's sessionId of a terminate that names none

Handler = Callable[[dict, Callable, str], Awaitable[Answer]]

# As Starlette compiles `/v1/sessions/{sessionId}...` (a `str` parameter is `[^/]+`).
_SESSION_PATH = re.compile(r"^/v1/sessions/(?P<sessionId>[^/]+)(?P<action>/heartbeat|/terminate)?$")
_SESSIONS = "/v1/sessions"


def bad_request_detail(exc: RequestValidationError) -> str:
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
    )
    return detail[:1000]


def unauthorized(detail: str) -> Answer:
    answer = error(401, "unauthorized", detail)
    answer.headers["www-authenticate"] = "Bearer"
    return answer


def header_too_large(detail: str) -> Answer:
    return error(431, "header_too_large", detail)


def too_large(detail: str) -> Answer:
    # 400 as all bad input (the contract); the connection is closed as the body is not read.
    answer = error(400, "too_large", detail)
    answer.headers["connection"] = "close"
    return answer


def input_error(exc: Exception) -> Answer | None:
    """The answer to bad input raised by parsing.py (None: not bad input)."""
    if isinstance(exc, parsing.Unauthorized):
        return unauthorized(exc.detail)
    if isinstance(exc, parsing.HeaderTooLarge):
        return header_too_large(exc.detail)
    if isinstance(exc, RequestValidationError):
        return error(400, "bad_request", bad_request_detail(exc))
    if isinstance(exc, parsing.NotJson):
        return error(400, "not_json", "the body must be a JSON object")
    if isinstance(exc, parsing.TooLarge):
        return too_large(exc.detail)
    return None


_INTERNAL_ERROR_START = {
    "type": "http.response.start",
    "status": 500,
    "headers": [(b"content-length", b"21"), (b"content-type", b"text/plain; charset=utf-8")],
}
_INTERNAL_ERROR_BODY = {"type": "http.response.body", "body": b"Internal Server Error"}


_JSON = (b"content-type", b"application/json")


async def send_answer(send, answer: Answer) -> None:
    if len(answer.headers) == 1 and answer.headers.get("content-type") == "application/json":
        headers = [_JSON]  # nearly every answer: no encoding per call
    else:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    headers.append((b"content-length", b"%d" % len(answer.body)))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class CallRoutes:
    def __init__(self, gateway: Gateway, tokens: TokenCache) -> None:
        self._gw = gateway
        self._tokens = tokens
        # (method, action after the session id) -> handler
        self._by_session = {
            ("POST", "/heartbeat"): self.heartbeat,
            ("DELETE", None): self.stop,
            ("POST", "/terminate"): self.terminate,
        }

    def match(self, scope: dict) -> tuple[Handler, str] | None:
        """The handler and path sessionId of a call route, or None (FastAPI's then)."""
        path = scope["path"]
        if path == _SESSIONS:
            return (self.start, "") if scope["method"] == "POST" else None
        if not path.startswith("/v1/sessions/") or scope.get("root_path"):
            return None
        found = _SESSION_PATH.match(path)
        if found is None:
            return None
        handler = self._by_session.get((scope["method"], found["action"]))
        return None if handler is None else (handler, found["sessionId"])

    async def dispatch(self, handler: Handler, path_id: str, scope: dict, receive, send) -> None:
        """Serve one call: its answer, 400/401/431 for bad input, a bare 500 (re-raised) otherwise."""
        try:
            answer = await handler(scope, receive, path_id)
        except parsing.Disconnected:
            return  # nobody to answer
        except Exception as exc:
            answer = input_error(exc)
            if answer is None:  # a bug: answered as Starlette's ServerErrorMiddleware would, then logged
                await send(_INTERNAL_ERROR_START)
                await send(_INTERNAL_ERROR_BODY)
                raise
        await send_answer(send, answer)

    async def start(self, scope: dict, receive, _path_id: str = "") -> Answer:
        who = parsing.caller(scope, self._tokens)
        key = parsing.idempotency_key(scope)
        body = await parsing.body(scope, receive, StartRequest)
        session_id = body.sessionId or new_session_id(who.user_id, key)
        return await self._gw.call(
            "start",
            who,
            session_id,
            key,
            deviceId=body.deviceId,
            deviceClass=body.deviceClass,
            contentId=body.contentId,
        )

    async def heartbeat(self, scope: dict, _receive, path_id: str) -> Answer:
        who = parsing.caller(scope, self._tokens)
        session_id, key = parsing.session_id(path_id), parsing.idempotency_key(scope)
        return await self._gw.call("heartbeat", who, session_id, key)

    async def stop(self, scope: dict, _receive, path_id: str) -> Answer:
        who = parsing.caller(scope, self._tokens)
        session_id, key = parsing.session_id(path_id), parsing.idempotency_key(scope)
        return await self._gw.call("stop", who, session_id, key)

    async def terminate(self, scope: dict, receive, path_id: str) -> Answer:
        who = parsing.caller(scope, self._tokens)
        target, key = parsing.session_id(path_id), parsing.idempotency_key(scope)
        requester = (await parsing.body(scope, receive, TerminateRequest)).sessionId or DEFAULT_REQUESTER
        return await self._gw.call("terminate", who, requester, key, targetSessionId=target)
