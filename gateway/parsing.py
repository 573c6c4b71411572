"""Reading one call's token, path id, Idempotency-Key and body, and describing them in OpenAPI.

The call routes read their input here straight from the ASGI scope and receive channel, with
the pydantic models and types of models.py, instead of through FastAPI's parameter injection
and Starlette's Request: that machinery cost several times the rest of a call's Python work on
this machine, and a gateway call is mostly that. The OpenAPI description of the same
parameters and bodies is generated here from the same types (`operation_extra`), so the
document and the checks cannot disagree; bad input raises FastAPI's RequestValidationError,
answered as 400.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.auth import MAX_AUTHORIZATION_BYTES, AuthError, Caller, TokenCache
from gateway.models import PathId
from processor.wire import MAX_VALUE_BYTES

M = TypeVar("M", bound=BaseModel)
_ID = TypeAdapter(PathId)
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_DOC = "a retry with the same key is the same event and gets the same verdict"
_AUTHORIZATION = b"authorization"
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode()
_CONTENT_LENGTH = b"content-length"


class Unauthorized(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


class HeaderTooLarge(Exception):
    """An Authorization header over MAX_AUTHORIZATION_BYTES: 431, before it is parsed or kept."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


class NotJson(Exception):
    pass


class TooLarge(Exception):
    """A body over MAX_VALUE_BYTES: answered 400 too_large before more of it is read."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


class Disconnected(Exception):
    """The client went away before its body was read: nobody to answer."""


def header(scope: dict, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case, as ASGI servers give names), as Starlette's."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def caller(scope: dict, tokens: TokenCache) -> Caller:
    authorization = header(scope, _AUTHORIZATION)
    if not authorization:
        raise Unauthorized("send Authorization: Bearer <JWT>")
    if len(authorization) > MAX_AUTHORIZATION_BYTES:
        raise HeaderTooLarge(f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes")
    try:
        return tokens.caller(authorization)
    except AuthError as exc:
        raise Unauthorized(str(exc)) from None


def _checked_id(value: str, where: str, name: str) -> str:
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": (where, name)} for e in exc.errors()]) from None


def session_id(value: str) -> str:
    """The path's sessionId (already percent-decoded by the server)."""
    return _checked_id(value, "path", "sessionId")


def idempotency_key(scope: dict) -> str | None:
    key = header(scope, _IDEMPOTENCY)
    return None if key is None else _checked_id(key.decode("latin-1"), "header", IDEMPOTENCY_HEADER)


_TOO_LARGE = f"the body is over {MAX_VALUE_BYTES} bytes"  # the event it would become could never be decided


async def _read_capped(scope: dict, receive) -> bytes:
    """The body, refused as soon as it is known to be over the limit: by its Content-Length before
    any of it is read, else (chunked) at the first chunk past it, so a client cannot make the
    gateway buffer more than the limit (nor wait for a huge body it announced)."""
    length = header(scope, _CONTENT_LENGTH)
    if length is not None:
        if not length.isdigit():  # uvicorn refuses most; never trust the rest
            raise RequestValidationError(
                [{"type": "bad_length", "loc": ("header", "Content-Length"), "msg": "not a number"}]
            )
        if int(length) > MAX_VALUE_BYTES:
            raise TooLarge(_TOO_LARGE)
    message = await receive()
    if message["type"] != "http.request":
        raise Disconnected
    first = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: the whole body in one message
        if len(first) > MAX_VALUE_BYTES:
            raise TooLarge(_TOO_LARGE)
        return first
    chunks = [first]
    size = len(first)
    while True:
        if size > MAX_VALUE_BYTES:
            raise TooLarge(_TOO_LARGE)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] != "http.request":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)


async def body(scope: dict, receive, model: type[M]) -> M:
    """The JSON body as `model`; an absent (empty) body is the model's defaults."""
    raw = await _read_capped(scope, receive)
    if not raw.strip():
        return model()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotJson from None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


# -- the OpenAPI description of the same ------------------------------------------------


def _id_schema() -> dict[str, Any]:
    return _ID.json_schema()


def operation_extra(path_id: bool = False, request_body: type[BaseModel] | None = None) -> dict[str, Any]:
    """`openapi_extra` of a call route: bearer auth, its parameters and its optional JSON body."""
    parameters: list[dict[str, Any]] = []
    if path_id:
        parameters.append({"name": "sessionId", "in": "path", "required": True, "schema": _id_schema()})
    parameters.append(
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": _IDEMPOTENCY_DOC,
            "schema": _id_schema(),
        }
    )
    extra: dict[str, Any] = {"parameters": parameters, "security": [{"bearer": []}]}
    if request_body is not None:
        ref = {"$ref": f"#/components/schemas/{request_body.__name__}"}
        extra["requestBody"] = {"required": False, "content": {"application/json": {"schema": ref}}}
    return extra


def add_components(doc: dict[str, Any], models: list[type[BaseModel]]) -> None:
    """Put the request models and the bearer scheme into the document's components."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in models:
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "sub = userId, optional plan claim; HS256, RS256 or EdDSA as configured",
    }
