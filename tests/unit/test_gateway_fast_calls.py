"""The call routes' own fast paths without services: the token cache, the route match, random ids."""

from __future__ import annotations

import functools
import operator
import re
import time
import uuid

import jwt
import pytest

from gateway.app import create_app
from gateway.auth import ENTRY_OVERHEAD_BYTES, AuthError, TokenCache, make_verifier
from gateway.events import event_id, new_session_id
from gateway.settings import load_gateway_settings

SECRET = "unit-test-auth-secret-0123456789abcdef"


def header(claims: dict, secret: str = SECRET) -> bytes:
    return b"Bearer " + jwt.encode(claims, secret, algorithm="HS256").encode()


def cache(max_bytes: int = 16 * 1024 * 1024) -> TokenCache:
    return TokenCache(make_verifier(load_gateway_settings(gateway_auth_secret=SECRET)), max_bytes)


def test_a_cached_token_answers_its_caller_until_its_exp_and_is_refused_after(monkeypatch):
    tokens = cache()
    now = time.time()
    auth = header({"sub": "u1", "plan": "gold", "exp": int(now) + 60})
    first = tokens.caller(auth)
    assert (first.user_id, first.plan) == ("u1", "gold") and len(tokens) == 1
    assert tokens.caller(auth) is first  # a hit: the remembered caller
    monkeypatch.setattr(time, "time", lambda: now + 61)  # past its exp
    with pytest.raises(AuthError, match="expired"):
        tokens.caller(auth)
    assert len(tokens) == 0


def test_refused_tokens_are_never_remembered_and_the_cache_keeps_its_bound():
    exp = int(time.time()) + 60
    entry = ENTRY_OVERHEAD_BYTES + len(header({"sub": "u0", "exp": exp})) - len("Bearer ") + 4 * len("u0")
    tokens = cache(max_bytes=3 * entry)  # three of these tokens' entries
    bad = header({"sub": "u1", "exp": exp}, secret="another-secret-" * 3)
    for _ in range(2):
        with pytest.raises(AuthError, match="signature"):
            tokens.caller(bad)
    with pytest.raises(AuthError, match="Bearer"):
        tokens.caller(b"Basic dTE6cHc=")
    assert len(tokens) == 0
    for i in range(5):
        assert tokens.caller(header({"sub": f"u{i}", "exp": exp})).user_id == f"u{i}"
    assert len(tokens) == 3


def test_a_bearer_header_is_read_as_before_scheme_in_any_case_and_spaces_around_the_token():
    tokens = cache()
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert tokens.caller(b"bearer  " + token.encode() + b" ").user_id == "u1"


def test_only_the_four_call_routes_are_served_before_fastapi():
    calls = create_app(load_gateway_settings(gateway_auth_secret=SECRET)).calls

    def route(method: str, path: str, root_path: str = ""):
        found = calls.match({"method": method, "path": path, "root_path": root_path})
        return None if found is None else (found[0].__name__, found[1])

    assert route("POST", "/v1/sessions") == ("start", "")
    assert route("POST", "/v1/sessions/s%2F1/heartbeat") == ("heartbeat", "s%2F1")
    assert route("DELETE", "/v1/sessions/s1") == ("stop", "s1")
    assert route("POST", "/v1/sessions/s1/terminate") == ("terminate", "s1")
    for method, path in [
        ("GET", "/v1/sessions"),  # the listing: FastAPI's
        ("POST", "/v1/sessions/"),  # Starlette redirects the slash
        ("GET", "/v1/sessions/s1/heartbeat"),  # 405 from FastAPI
        ("POST", "/v1/sessions/s1"),
        ("DELETE", "/v1/sessions/a/b"),
        ("POST", "/v1/sessions//heartbeat"),
        ("GET", "/health"),
    ]:
        assert route(method, path) is None, (method, path)
    assert route("POST", "/v1/sessions/s1/heartbeat", root_path="/api") is None


def test_random_ids_are_a_canonical_uuid4_and_128_random_bits():
    for _ in range(200):
        sid = new_session_id("u1", None)
        parsed = uuid.UUID(sid)
        assert str(parsed) == sid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    eids = [event_id("u1", "start", "s1", None, None) for _ in range(1000)]
    assert all(re.fullmatch(r"gw-[0-9a-f]{32}", eid) for eid in eids), eids[0]
    assert len(set(eids)) == 1000
    # 128 random bits: each of them is 1 in some id and 0 in another (a uuid4's fixed version
    # and variant bits would not be); by chance a bit is stuck with odds of about 2**-990.
    bits = [int(eid[3:], 16) for eid in eids]
    assert functools.reduce(operator.or_, bits) == 2**128 - 1
    assert functools.reduce(operator.and_, bits) == 0
