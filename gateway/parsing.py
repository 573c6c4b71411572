"""Reading one call's token, path id, Idempotency-Key and body, and describing them in OpenAPI.

The routes take the raw request and read it here, with the pydantic models and types of
models.py, instead of through FastAPI's parameter injection: that machinery cost about four
times the rest of a call's Python work on this machine (dependency tree walked per request),
and a gateway call is mostly that. The OpenAPI description of the same parameters and bodies
is generated here from the same types (`operation_extra`), so the document and the checks
cannot disagree; bad input raises FastAPI's RequestValidationError, answered as 400.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.auth import AuthError, Caller, Verifier
from gateway.models import PathId
from processor.wire import MAX_VALUE_BYTES

M = TypeVar("M", bound=BaseModel)
_ID = TypeAdapter(PathId)
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_DOC = "a retry with the same key is the same event and gets the same verdict"


class Unauthorized(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


class NotJson(Exception):
    pass


class TooLarge(Exception):
    """A body over MAX_VALUE_BYTES: answered 400 too_large before more of it is read."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


def caller(request: Request, verifier: Verifier) -> Caller:
    authorization = request.headers.get("authorization")
    if not authorization:
        raise Unauthorized("send Authorization: Bearer <JWT>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <JWT> (another scheme was sent)")
    try:
        return verifier.verify(token.strip())
    except AuthError as exc:
        raise Unauthorized(str(exc)) from None


def _checked_id(value: str, where: str, name: str) -> str:
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": (where, name)} for e in exc.errors()]) from None


def session_id(request: Request) -> str:
    return _checked_id(request.path_params["sessionId"], "path", "sessionId")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    return None if key is None else _checked_id(key, "header", IDEMPOTENCY_HEADER)


_TOO_LARGE = f"the body is over {MAX_VALUE_BYTES} bytes"  # the event it would become could never be decided


async def _read_capped(request: Request) -> bytes:
    """The body, refused as soon as it is known to be over the limit: by its Content-Length before
    any of it is read, else (chunked) at the first chunk past it, so a client cannot make the
    gateway buffer more than the limit (nor wait for a huge body it announced)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():  # uvicorn refuses most; never trust the rest
            raise RequestValidationError(
                [{"type": "bad_length", "loc": ("header", "Content-Length"), "msg": "not a number"}]
            )
        if int(length) > MAX_VALUE_BYTES:
            raise TooLarge(_TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_VALUE_BYTES:
            raise TooLarge(_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


async def body(request: Request, model: type[M]) -> M:
    """The JSON body as `model`; an absent (empty) body is the model's defaults."""
    raw = await _read_capped(request)
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
