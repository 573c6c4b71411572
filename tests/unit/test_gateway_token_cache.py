"""The gateway's token cache (gateway/auth.py TokenCache) on its own, and the Authorization
header's size bound through the app (no services: both answer before a call reaches Kafka).

Issue 28: the cache was keyed by the raw header while the parser ignores the scheme's case and
the spaces around the token, so one valid token gave any number of entries; its bound was a count
of entries, each up to a header's size (none was bounded), and one player's entries flushed
everyone's (oldest first).
"""

from __future__ import annotations

import time
import tracemalloc

import httpx
import jwt
import pytest

from gateway.app import create_app
from gateway.auth import (
    ENTRY_OVERHEAD_BYTES,
    MAX_AUTHORIZATION_BYTES,
    TOKENS_PER_USER,
    AuthError,
    TokenCache,
    Verifier,
    make_verifier,
)
from gateway.settings import load_gateway_settings
from tests.gateway_harness import bearer_spellings

SECRET = "unit-test-auth-secret-0123456789abcdef"


def token(user: str, ttl: int = 3600, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl, **claims}, SECRET, algorithm="HS256")


class CountingVerifier(Verifier):
    """The real HS256 verifier, counting the tokens it had to check (a miss of the cache)."""

    checked = 0

    def verified(self, token: str):
        self.checked += 1
        return super().verified(token)


def counting_cache(max_bytes: int = 16 * 1024 * 1024) -> tuple[TokenCache, CountingVerifier]:
    verifier = CountingVerifier(SECRET.encode(), "HS256")
    return TokenCache(verifier, max_bytes), verifier


def test_a_thousand_spellings_of_one_token_are_one_entry_and_one_check():
    tokens, verifier = counting_cache()
    headers = bearer_spellings(token("u1", plan="gold"), 1000)
    assert len(set(headers)) == 1000
    assert {(c.user_id, c.plan) for c in map(tokens.caller, headers)} == {("u1", "gold")}
    assert len(tokens) == 1 and verifier.checked == 1
    assert tokens.bytes <= ENTRY_OVERHEAD_BYTES + 1000


def test_the_cache_stays_within_its_byte_budget_counted_and_in_real_memory():
    budget = 256 * 1024
    signed = [b"Bearer " + token(f"user-{i:05d}", plan="gold").encode() for i in range(3000)]
    tracemalloc.start()
    try:
        tokens, verifier = counting_cache(budget)
        before = tracemalloc.get_traced_memory()[0]
        for header in signed:
            tokens.caller(header)
            assert tokens.bytes <= budget
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert verifier.checked == 3000
    assert 0 < len(tokens) < 3000  # full: the oldest went
    # The accounting is an upper bound of what the entries really hold, not a fiction: the
    # memory traced while filling it (what it keeps) is within the budget, and not far below.
    assert budget / 2 < held <= budget, held
    assert tokens.caller(signed[-1]).user_id == "user-02999" and verifier.checked == 3000  # kept
    tokens.caller(signed[0])
    assert verifier.checked == 3001  # evicted: checked again


def test_one_user_with_many_tokens_evicts_only_its_own_entries():
    tokens, verifier = counting_cache()
    others = [b"Bearer " + token(f"other-{i}").encode() for i in range(50)]
    for header in others:
        tokens.caller(header)
    for i in range(1000):  # one player with a thousand valid tokens (a login loop, say)
        assert tokens.caller(b"Bearer " + token("flood", jti=str(i)).encode()).user_id == "flood"
    assert len(tokens) == 50 + TOKENS_PER_USER
    checked = verifier.checked
    for header in others:
        tokens.caller(header)
    assert verifier.checked == checked  # every other player's entry is still there


def test_a_zero_budget_remembers_nothing_and_still_answers():
    tokens, verifier = counting_cache(max_bytes=0)
    header = b"Bearer " + token("u1").encode()
    assert tokens.caller(header).user_id == tokens.caller(header).user_id == "u1"
    assert len(tokens) == 0 and tokens.bytes == 0 and verifier.checked == 2


def test_an_expired_entry_is_forgotten_with_its_bytes(monkeypatch):
    tokens, _ = counting_cache()
    now = time.time()
    header = b"Bearer " + token("u1", ttl=60).encode()
    tokens.caller(header)
    assert tokens.bytes > 0
    monkeypatch.setattr(time, "time", lambda: now + 61)
    with pytest.raises(AuthError, match="expired"):
        tokens.caller(header)
    assert len(tokens) == 0 and tokens.bytes == 0


AUTHED_CALLS = [
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions/s1/heartbeat"),
    ("DELETE", "/v1/sessions/s1"),
    ("POST", "/v1/sessions/s1/terminate"),
]


async def test_an_authorization_header_past_its_bound_is_431_on_every_call_and_never_kept():
    app = create_app(load_gateway_settings(gateway_auth_secret=SECRET))
    at_bound = "Bearer " + "x" * (MAX_AUTHORIZATION_BYTES - len("Bearer "))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        for method, path in AUTHED_CALLS:
            over = await http.request(method, path, headers={"Authorization": at_bound + "x"})
            assert over.status_code == 431, (method, path)
            assert over.json() == {
                "error": "header_too_large",
                "detail": f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes",
            }
            huge = await http.request(method, path, headers={"Authorization": "Bearer " + "x" * 262_144})
            assert huge.status_code == 431, (method, path)
            at = await http.request(method, path, headers={"Authorization": at_bound})
            assert at.status_code == 401, (method, path)  # read, and refused as a token
    assert len(app.calls._tokens) == 0


def test_the_budget_is_a_setting():
    settings = load_gateway_settings(gateway_auth_secret=SECRET, gateway_token_cache_bytes=4096)
    app = create_app(settings)
    assert app.calls._tokens.max_bytes == 4096
    assert TokenCache(make_verifier(settings)).max_bytes == 16 * 1024 * 1024
