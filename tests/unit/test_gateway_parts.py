"""The gateway's parts without services: the wait map, eventIds, events, tokens, settings."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.auth import AuthError, Verifier, dev_token, make_verifier
from gateway.events import build_event, event_id, new_session_id
from gateway.replies import UserWaitsFull, WaitMap, WaitMapFull
from gateway.settings import load_gateway_settings
from processor.config import SettingsError
from processor.wire import decode_event

SECRET = "unit-test-auth-secret-0123456789abcdef"
OTHER = "unit-test-jwt-secret-0123456789abcdef-other"


def verdict(
    event: str, decision: str = "allow", session: str = "s1", user: str = "u1", kind: str = "start"
) -> bytes:
    return orjson.dumps(
        {
            "eventId": event,
            "userId": user,
            "type": kind,
            "decision": decision,
            "sessionId": session,
            "reason": "started",
        }
    )


# -- the wait map -------------------------------------------------------------------------


def wait(waits: WaitMap, event: str, user: str = "u1", kind: str = "start", session: str = "s1"):
    return waits.add(event, user, kind, session)


async def test_a_reply_wakes_every_waiter_of_its_event_and_a_revoke_wakes_none():
    waits = WaitMap(10)
    a1, a2, b = wait(waits, "a"), wait(waits, "a"), wait(waits, "b")
    assert waits.size == 3
    assert waits.resolve(verdict("a", "revoke", session="evicted-one")) == "revoke"
    assert waits.resolve(verdict("a", "revoke")) == "revoke"  # even one naming the waiter's session
    assert not a1.future.done()
    assert waits.resolve(verdict("a")) == "matched"
    assert a1.future.result().verdict["decision"] == a2.future.result().verdict["decision"] == "allow"
    assert a1.future.result().value == verdict("a")  # the bytes as read, for the response body
    assert waits.size == 1 and not b.future.done()
    assert waits.resolve(verdict("a")) == "no_waiter"  # a redelivery after the answer
    assert waits.resolve(b"not json") == "not_a_verdict"
    assert waits.resolve(b'{"eventId": null, "decision": "revoke"}') == "revoke"  # a ledger expiry
    assert waits.resolve(b'{"eventId": null, "decision": "allow"}') == "no_waiter"


async def test_a_reply_under_the_waiting_eventid_that_is_not_the_calls_verdict_answers_nobody():
    # A forged reply under a victim's (predictable) eventId: another user, call or session.
    waits = WaitMap(10)
    victim = wait(waits, "gw-victim", user="victim", kind="start", session="s-v")
    forged = [
        verdict("gw-victim", user="attacker", kind="start", session="s-v"),
        verdict("gw-victim", user="victim", kind="heartbeat", session="s-v"),
        verdict("gw-victim", user="victim", kind="start", session="s-other"),
        orjson.dumps({"eventId": "gw-victim", "decision": "allow"}),  # names nobody
    ]
    for value in forged:
        assert waits.resolve(value) == "mismatch", value
    assert not victim.future.done() and waits.size == 1
    assert waits.resolve(verdict("gw-victim", user="victim", kind="start", session="s-v")) == "matched"
    assert victim.future.result().verdict["userId"] == "victim" and waits.size == 0


async def test_the_wait_map_is_bounded_and_a_discarded_waiter_frees_its_place():
    waits = WaitMap(2)
    first, _second = wait(waits, "a"), wait(waits, "b", user="u2")
    with pytest.raises(WaitMapFull):
        wait(waits, "c", user="u3")
    waits.discard("a", first)
    waits.discard("a", first)  # twice is harmless
    assert waits.size == 1
    third = wait(waits, "c")
    waits.discard("c", third)
    assert waits.resolve(verdict("c")) == "no_waiter"
    assert waits.size == 1


async def test_one_user_holds_at_most_its_share_of_the_places_and_gets_them_back():
    waits = WaitMap(10, per_user=2)
    mine = [wait(waits, "a"), wait(waits, "b")]
    with pytest.raises(UserWaitsFull, match="GATEWAY_MAX_IN_FLIGHT_PER_USER"):
        wait(waits, "c")
    other = wait(waits, "d", user="u2")  # another user still gets a place
    assert (waits.waiting("u1"), waits.waiting("u2"), waits.size) == (2, 1, 3)
    waits.discard("a", mine[0])
    assert waits.resolve(verdict("b")) == "matched"  # an answer frees its place too
    assert waits.waiting("u1") == 0
    again = [wait(waits, "e"), wait(waits, "f")]
    assert waits.size == 3
    for w, e in zip(again, "ef", strict=True):
        waits.discard(e, w)
    waits.discard("d", other)
    assert (waits.size, waits.waiting("u1"), waits.waiting("u2")) == (0, 0, 0)


async def test_a_timed_out_waiter_is_cancelled_not_answered_later():
    waits = WaitMap(1)
    waiter = wait(waits, "a")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await waiter.future
    waits.discard("a", waiter)
    assert waiter.future.cancelled() and waits.size == 0
    assert waits.resolve(verdict("a")) == "no_waiter"


# -- eventIds and events ------------------------------------------------------------------


def test_an_idempotency_key_names_one_event_per_user_call_session_target_and_key():
    same = event_id("u1", "start", "s1", None, "k")
    assert same == event_id("u1", "start", "s1", None, "k")
    others = {
        event_id("u2", "start", "s1", None, "k"),
        event_id("u1", "heartbeat", "s1", None, "k"),
        event_id("u1", "start", "s2", None, "k"),
        event_id("u1", "start", "s1", None, "k2"),
        event_id("u1", "start", "s1", "t1", "k"),
    }
    assert same not in others and len(others) == 5
    assert same.startswith("gw-") and len(same) == 43
    assert event_id("u1", "start", "s1", None, None) != event_id("u1", "start", "s1", None, None)
    # A terminate's requester session is part of the event: the same key and target from
    # another requester is another event (the processor would dead-letter a reused eventId).
    assert event_id("u1", "terminate", "me", "tv", "k") != event_id("u1", "terminate", "account", "tv", "k")


def test_the_eventid_parts_are_length_prefixed_so_no_two_inputs_build_one_id():
    # Joined with NUL these pairs built the same string: ids may hold NUL.
    assert event_id("u1", "start", "a\x00b", None, "c") != event_id("u1", "start", "a", None, "b\x00c")
    assert event_id("a", "start", "bc", None, "k") != event_id("ab", "start", "c", None, "k")
    assert event_id("u1", "terminate", "s", "t\x00k", "x") != event_id("u1", "terminate", "s", "t", "k\x00x")
    assert new_session_id("u\x00k", "x") != new_session_id("u", "k\x00x")


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


def test_a_playback_token_with_a_sid_claim_is_never_an_api_credential():
    # The processor's and the fail-open tokens carry sid; even signed with the auth secret
    # (one secret for both, allowed in development only) they are refused.
    settings = load_gateway_settings(
        gateway_auth_secret=SECRET, jwt_secret=SECRET, allow_insecure_dev_secret=True
    )
    playback = {"sub": "u1", "sid": "s1", "exp": int(time.time()) + 60}
    for verifier in (make_verifier(settings), Verifier(SECRET.encode(), "HS256", by_hand=False)):
        with pytest.raises(AuthError, match="sid"):
            verifier.verify(jwt.encode(playback, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("sub", ["u\x001", "u\n1", "tab\there", "del\x7f", "\x1f"])
def test_a_sub_with_a_control_character_is_refused(sub):
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    for verifier in (Verifier(SECRET.encode(), "HS256"), Verifier(SECRET.encode(), "HS256", by_hand=False)):
        with pytest.raises(AuthError, match="control characters"):
            verifier.verify(token)
    plan = jwt.encode({"sub": "u1", "plan": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="control characters"):
        Verifier(SECRET.encode(), "HS256").verify(plan)


def test_a_sub_that_is_not_utf8_text_is_refused_on_the_public_key_path(tmp_path):
    # PyJWT's json takes "\ud800" (a lone surrogate) into the str; encoding the event would fail (500).
    private = ed25519.Ed25519PrivateKey.generate()
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = make_verifier(load_gateway_settings(gateway_auth_public_key_file=key_file))
    exp = int(time.time()) + 60
    for claims in ({"sub": "u\ud800", "exp": exp}, {"sub": "u1", "plan": "\udfff", "exp": exp}):
        token = jwt.encode(claims, private, algorithm="EdDSA")
        with pytest.raises(AuthError, match="UTF-8"):
            verifier.verify(token)
    accented = jwt.encode({"sub": "u\u00e9", "exp": exp}, private, algorithm="EdDSA")
    assert verifier.verify(accented).user_id == "u\u00e9"  # non-ASCII text is fine


# -- settings -----------------------------------------------------------------------------


def test_the_auth_secret_must_not_be_the_playback_token_secret_unless_in_development():
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_SECRET equals JWT_SECRET"):
        load_gateway_settings(gateway_auth_secret=SECRET, jwt_secret=SECRET)
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_SECRET equals JWT_SECRET"):
        load_gateway_settings(gateway_auth_secret=SECRET, jwt_secret=SECRET, gateway_on_timeout="allow")
    distinct = load_gateway_settings(gateway_auth_secret=SECRET, jwt_secret=OTHER)
    assert (distinct.gateway_auth_secret.get_secret_value(), distinct.jwt_secret.get_secret_value()) == (
        SECRET,
        OTHER,
    )
    dev = load_gateway_settings(gateway_auth_secret=SECRET, jwt_secret=SECRET, allow_insecure_dev_secret=True)
    assert dev.allow_insecure_dev_secret


def test_the_auth_secret_is_required_and_long_unless_the_dev_secret_is_allowed():
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_SECRET is not set"):
        load_gateway_settings()
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_gateway_settings(gateway_auth_secret="short")
    assert load_gateway_settings(allow_insecure_dev_secret=True).gateway_port == 8000
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_gateway_settings(gateway_auth_secret=SECRET, gateway_on_timeout="allow")
    allow = load_gateway_settings(gateway_auth_secret=SECRET, gateway_on_timeout="allow", jwt_secret=OTHER)
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


def test_a_console_agents_terminate_is_another_event_than_a_players_with_the_same_key():
    # A player naming the console's requester session and reusing the agent's key must not take
    # over the agent's event (its verdict would then carry no issuedBy).
    player = event_id("u1", "terminate", "support-console", "tv", "k")
    agent = event_id("u1", "terminate", "support-console", "tv", "k", "support:alice")
    assert agent != player
    assert agent != event_id("u1", "terminate", "support-console", "tv", "k", "support:bob")
    assert agent == event_id("u1", "terminate", "support-console", "tv", "k", "support:alice")
    # Players' eventIds are as before: no issuer, no part in the seed.
    assert (
        player == "gw-" + hashlib.sha256(b"5:event2:u19:terminate15:support-console2:tv1:k").hexdigest()[:40]
    )
