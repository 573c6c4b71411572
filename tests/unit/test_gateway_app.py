"""The gateway's OpenAPI document and its error shapes, from the app alone (no services)."""

from __future__ import annotations

from gateway.app import create_app
from gateway.settings import load_gateway_settings

SECRET = "unit-test-auth-secret-0123456789abcdef"


def test_the_openapi_document_has_every_route_and_says_400_where_fastapi_would_say_422():
    doc = create_app(load_gateway_settings(gateway_auth_secret=SECRET)).openapi()
    paths = doc["paths"]
    assert set(paths) == {
        "/v1/sessions",
        "/v1/sessions/{sessionId}/heartbeat",
        "/v1/sessions/{sessionId}",
        "/v1/sessions/{sessionId}/terminate",
        "/health",
        "/metrics",
    }
    call_errors = {"400", "401", "429", "431", "503", "504"}
    assert set(paths["/v1/sessions"]["post"]["responses"]) == {"200", "409"} | call_errors
    assert (
        set(paths["/v1/sessions/{sessionId}/heartbeat"]["post"]["responses"]) == {"200", "410"} | call_errors
    )
    assert set(paths["/v1/sessions/{sessionId}"]["delete"]["responses"]) == {"200"} | call_errors
    terminate = paths["/v1/sessions/{sessionId}/terminate"]["post"]["responses"]
    assert set(terminate) == {"200"} | call_errors
    assert "GATEWAY_MAX_IN_FLIGHT_PER_USER" in terminate["429"]["description"]
    assert "65536" in terminate["400"]["description"]
    too_many = terminate["429"]["content"]["application/json"]["schema"]["$ref"]
    assert too_many.endswith("/ErrorBody")
    # Path ids (and the Idempotency-Key) say they take no control characters.
    path_id = paths["/v1/sessions/{sessionId}"]["delete"]["parameters"][0]
    assert path_id["name"] == "sessionId" and path_id["schema"]["pattern"] == "^[^\\x00-\\x1f\\x7f]*$"
    assert set(paths["/v1/sessions"]["get"]["responses"]) == {"200", "401", "431", "503"}
    # The headers the error answers carry, declared with them.
    for status, name in [("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")]:
        assert terminate[status]["headers"][name]["required"] is True, (status, name)
    assert "8192" in terminate["431"]["description"]
    assert all("422" not in op["responses"] for path in paths.values() for op in path.values())
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    start = schemas["StartRequest"]["properties"]
    assert [start[f]["anyOf"][0]["maxLength"] for f in ("sessionId", "deviceId", "deviceClass")] == [
        128,
        256,
        32,
    ]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert paths["/v1/sessions"]["post"]["security"] == [{"bearer": []}]
    assert paths["/v1/sessions"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/StartRequest")
    timeout = paths["/v1/sessions"]["post"]["responses"]["504"]
    assert timeout["content"]["application/json"]["schema"]["$ref"].endswith("/TimeoutBody")
    assert timeout["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 0}


async def test_a_405_lists_in_allow_every_method_served_at_its_path():
    import httpx

    app = create_app(load_gateway_settings(gateway_auth_secret=SECRET))
    served = {path: {m.upper() for m in ops} for path, ops in app.openapi()["paths"].items()}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        for path, template in [
            ("/v1/sessions", "/v1/sessions"),  # GET and POST: Starlette named POST alone
            ("/v1/sessions/s1", "/v1/sessions/{sessionId}"),
            ("/v1/sessions/s1/heartbeat", "/v1/sessions/{sessionId}/heartbeat"),
            ("/health", "/health"),
        ]:
            for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - served[template]:
                answer = await http.request(method, path)
                assert answer.status_code == 405, (method, path)
                allow = ", ".join(sorted(served[template]))
                assert answer.headers.get_list("allow") == [allow], (method, path)
                assert answer.json()["error"] == "method_not_allowed"
    assert served["/v1/sessions"] == {"GET", "POST"}
