"""The served /openapi.json, pinned byte for byte.

tests/fixtures/gateway_openapi.json holds the bytes `GET /openapi.json` answers (generated from
the app, same settings as here). It was the document main served at 92dd5fb, before the hot
routes left FastAPI's machinery; it was regenerated on purpose for issue 28, when the document
came to list every status each operation answers (431 for an oversized Authorization header)
and the headers of its error answers (WWW-Authenticate, Retry-After). The call routes are served
by gateway/calls.py, but their document is generated from the route declarations and pydantic
models; this pins it, so a change to either shows up here, on purpose or not. Regenerate the
fixture only with a deliberate change to the contract.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from gateway.app import create_app
from gateway.settings import load_gateway_settings

SECRET = "unit-test-auth-secret-0123456789abcdef"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gateway_openapi.json"


async def test_the_served_openapi_document_is_byte_identical_to_the_pinned_one():
    app = create_app(load_gateway_settings(gateway_auth_secret=SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        served = await http.get("/openapi.json")
    assert served.status_code == 200
    before = FIXTURE.read_bytes()
    assert orjson.loads(served.content) == orjson.loads(before)  # a readable diff first
    assert served.content == before
