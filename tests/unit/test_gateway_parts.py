"""The gateway's parts without services: the wait map, eventIds, events, tokens, settings."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.auth import AuthError, dev_token, make_verifier
from gateway.events import build_event, event_id, new_session_id
from gateway.replies import WaitMap, WaitMapFull
from gateway.settings import load_gateway_settings
from processor.config import SettingsError
from processor.wire import decode_event

SECRET = "unit-test-auth-secret-0123456789abcdef"


def verdict(event: str, decision: str = "allow", session: str = "s1") -> bytes:
    return orjson.dumps({"eventId": event, "decision": decision, "sessionId": session, "reason": "started"})


# -- the wait map -------------------------------------------------------------------------


async def test_a_reply_wakes_every_waiter_of_its_event_and_a_revoke_wakes_none():
    waits = WaitMap(10)
    a1, a2, b = waits.add("a"), waits.add("a"), waits.add("b")
    assert waits.size == 3
    assert waits.resolve(verdict("a", "revoke", session="evicted-one")) == "revoke"
    assert not a1.done()
    assert waits.resolve(verdict("a")) == "matched"
    assert a1.result().verdict["decision"] == a2.result().verdict["decision"] == "allow"
    assert a1.result().value == verdict("a")  # the bytes as read, for the response body
    assert waits.size == 1 and not b.done()
    assert waits.resolve(verdict("a")) == "no_waiter"  # a redelivery after the answer
    assert waits.resolve(b"not json") == "not_a_verdict"
    assert waits.resolve(b'{"eventId": null, "decision": "revoke"}') == "revoke"  # a ledger expiry
    assert waits.resolve(b'{"eventId": null, "decision": "allow"}') == "no_waiter"


async def test_the_wait_map_is_bounded_and_a_discarded_waiter_frees_its_place():
    waits = WaitMap(2)
    first, _second = waits.add("a"), waits.add("b")
    with pytest.raises(WaitMapFull):
        waits.add("c")
    waits.discard("a", first)
    waits.discard("a", first)  # twice is harmless
    assert waits.size == 1
    third = waits.add("c")
    waits.discard("c", third)
    assert waits.resolve(verdict("c")) == "no_waiter"
    assert waits.size == 1


async def test_a_timed_out_waiter_is_cancelled_not_answered_later():
    waits = WaitMap(1)
    future = waits.add("a")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await future
    waits.discard("a", future)
    assert future.cancelled() and waits.size == 0
    assert waits.resolve(verdict("a")) == "no_waiter"


# -- eventIds and events ------------------------------------------------------------------


def test_an_idempotency_key_names_one_event_per_user_call_and_target():
    same = event_id("u1", "start", "s1", "k")
    assert same == event_id("u1", "start", "s1", "k")
    others = {
        event_id("u2", "start", "s1", "k"),
        event_id("u1", "heartbeat", "s1", "k"),
        event_id("u1", "start", "s2", "k"),
        event_id("u1", "start", "s1", "k2"),
    }
    assert same not in others and len(others) == 4
    assert same.startswith("gw-") and len(same) == 43
    assert event_id("u1", "start", "s1", None) != event_id("u1", "start", "s1", None)
    # Joined with a separator no id can hold ambiguously: ("a", "bc") is not ("ab", "c").
    assert event_id("a", "start", "bc", "k") != event_id("ab", "start", "c", "k")


def test_a_new_session_is_a_uuid_derived_from_user_and_key_or_random_without_a_key():
    named = new_session_id("u1", "k")
    assert named == new_session_id("u1", "k") != new_session_id("u2", "k")
    assert uuid.UUID(named).version == 5
    assert new_session_id("u1", None) != new_session_id("u1", None)


def test_the_events_the_gateway_builds_are_valid_player_events_keyed_by_their_user():
    value = build_event(
        "terminate", "u1", "me", "gw-1", "gold", 1_700_000_000_000, targetSessionId="tv", deviceId=None
    )
    event = decode_event(value, b"u1")
    assert (event.type, event.session_id, event.target_session_id, event.plan) == (
        "terminate",
        "me",
        "tv",
        "gold",
    )
    assert "deviceId" not in orjson.loads(value)
    start = decode_event(build_event("start", "u1", "s", "gw-2", None, 1, deviceClass="tv"), b"u1")
    assert (start.device_class, start.plan, start.event_id) == ("tv", None, "gw-2")


# -- tokens of the callers ----------------------------------------------------------------


def test_the_dev_token_verifies_and_bad_tokens_are_refused_with_a_reason():
    settings = load_gateway_settings(gateway_auth_secret=SECRET)
    verifier = make_verifier(settings)
    caller = verifier.verify(dev_token(settings, "u1", plan="gold", ttl_seconds=60))
    assert (caller.user_id, caller.plan) == ("u1", "gold")
    assert verifier.verify(dev_token(settings, "u1")).plan is None
    now = int(time.time())
    refused = {
        "expired": jwt.encode({"sub": "u1", "exp": now - 5}, SECRET),
        "signature": jwt.encode({"sub": "u1", "exp": now + 60}, "another-secret-" * 3),
        "no exp": jwt.encode({"sub": "u1"}, SECRET),
        "no sub": jwt.encode({"exp": now + 60}, SECRET),
        "sub type": jwt.encode({"sub": "", "exp": now + 60}, SECRET),
        "plan type": jwt.encode({"sub": "u1", "exp": now + 60, "plan": 3}, SECRET),
        "plan long": jwt.encode({"sub": "u1", "exp": now + 60, "plan": "p" * 65}, SECRET),
        "garbage": "a.b.c",
    }
    for name, token in refused.items():
        with pytest.raises(AuthError):
            verifier.verify(token)
            pytest.fail(f"accepted: {name}")
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(refused["expired"])


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_public_key_verifies_its_algorithm_and_refuses_hs256_signed_with_the_key_bytes(tmp_path, kind):
    if kind == "rsa":
        private, algorithm = rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
    else:
        private, algorithm = ed25519.Ed25519PrivateKey.generate(), "EdDSA"
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    verifier = make_verifier(load_gateway_settings(gateway_auth_public_key_file=key_file))
    assert verifier.algorithm == algorithm
    claims = {"sub": "u1", "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, private, algorithm=algorithm)).user_id == "u1"
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


# -- settings -----------------------------------------------------------------------------


def test_the_auth_secret_is_required_and_long_unless_the_dev_secret_is_allowed():
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_SECRET is not set"):
        load_gateway_settings()
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_gateway_settings(gateway_auth_secret="short")
    assert load_gateway_settings(allow_insecure_dev_secret=True).gateway_port == 8000
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_gateway_settings(gateway_auth_secret=SECRET, gateway_on_timeout="allow")
    allow = load_gateway_settings(gateway_auth_secret=SECRET, gateway_on_timeout="allow", jwt_secret=SECRET)
    assert allow.gateway_verdict_timeout_ms == 3000 and allow.gateway_replies_topic == "playback.replies"


def test_the_token_command_prints_a_token_the_gateway_accepts(monkeypatch, capsys):
    from gateway.cli import main

    monkeypatch.setenv("GATEWAY_AUTH_SECRET", SECRET)
    monkeypatch.delenv("ALLOW_INSECURE_DEV_SECRET", raising=False)
    assert main(["token", "u-cli", "--plan", "gold", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    caller = make_verifier(load_gateway_settings()).verify(token)
    assert (caller.user_id, caller.plan) == ("u-cli", "gold")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["exp"] - time.time() <= 120
    monkeypatch.delenv("GATEWAY_AUTH_SECRET")
    assert main(["token", "u-cli"]) == 2  # no secret configured: says so, prints no token
