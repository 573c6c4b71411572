"""Turning the script's results into verdict records (key, value) for `playback.verdicts`.

Everything here is a pure function of the event and its stored result, so a redelivered
event yields byte-identical verdicts with the same verdictId.
"""

from __future__ import annotations

import hashlib

import orjson

from processor import rules
from processor.lease_store import Result
from processor.tokens import TokenSigner
from processor.wire import DecodedEvent

_OUTCOMES = rules.OUTCOMES
_HOLDS_LEASE = rules.HOLDS_LEASE


def _seed(*parts: str) -> str:
    # Length-prefixed parts: ids may hold any character, so no separator is safe.
    return "".join(f"{len(p)}:{p}" for p in parts)


def event_identity(
    event_id: str | None, user_id: str, topic: str, partition: int, offset: int
) -> tuple[str, str]:
    """(eventId shown in the verdict, seed of the verdictId).

    With an eventId the identity is (userId, eventId), so an upstream duplicate at a new
    offset maps to the same verdictId; without one it is (topic, partition, offset).
    """
    if event_id is not None:  # the hot path: _seed("event", user_id, event_id), inlined
        return event_id, f"5:event{len(user_id)}:{user_id}{len(event_id)}:{event_id}"
    position = f"{topic}/{partition}/{offset}"
    return position, _seed("offset", topic, str(partition), str(offset))


def _digest(seed: str) -> str:
    return hashlib.blake2b(seed.encode(), digest_size=16).hexdigest()


def build_verdicts(
    ev: DecodedEvent,
    result: Result,
    topic: str,
    partition: int,
    offset: int,
    signer: TokenSigner,
) -> list[bytes]:
    """The verdict values for one decided event: its own, then one `revoke` per evicted lease."""
    event_id, seed = event_identity(ev.event_id, ev.user_id, topic, partition, offset)
    verdict_id = _digest(seed)
    code, active, max_streams, expires_at, now, *rest = result  # a Result, or a plain list in tests
    evicted_sessions = rest[0] if rest else ()
    decision, reason = _OUTCOMES[code]
    token = None
    if code in _HOLDS_LEASE:  # allow on start or heartbeat
        token = signer.sign(ev.user_id, ev.session_id, expires_at, now, verdict_id)
    else:
        expires_at = None
    values = [
        orjson.dumps(
            {
                "verdictId": verdict_id,
                "eventId": event_id,
                "userId": ev.user_id,
                "sessionId": ev.session_id,
                "type": ev.type,
                "decision": decision,
                "reason": reason,
                "activeStreams": active,
                "maxStreams": max_streams,
                "leaseExpiresAt": expires_at,
                "decidedAt": now,
                "token": token,
            }
        )
    ]
    if evicted_sessions:
        for evicted in evicted_sessions:
            values.append(
                orjson.dumps(
                    {
                        "verdictId": _digest(_seed("revoke", seed, evicted)),
                        "eventId": event_id,
                        "userId": ev.user_id,
                        "sessionId": evicted,
                        "type": ev.type,
                        "decision": "revoke",
                        "reason": "evicted",
                        "activeStreams": active,
                        "maxStreams": max_streams,
                        "leaseExpiresAt": None,
                        "decidedAt": now,
                        "token": None,
                    }
                )
            )
    return values
