"""Turning the script's results into verdict records (key, value) for `playback.verdicts`.

Everything here is a pure function of the event and its stored result, so a redelivered
event yields byte-identical verdicts with the same verdictId.
"""

from __future__ import annotations

import hashlib

import orjson

from processor import rules
from processor.script_results import Expiry, Result
from processor.tokens import TokenSigner
from processor.wire import DecodedEvent

_OUTCOMES = rules.OUTCOMES
_HOLDS_LEASE = rules.HOLDS_LEASE
_ADVISED = rules.ADVISED
_TERMINATED = rules.TERMINATED
_STARTED = rules.STARTED


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


def policy_name(kind: str, user_id: str, plan: str | None) -> str:
    """The verdict's `policy` from the kind stored with the result ('u', 'p' or 'd')."""
    if kind == "d":
        return "default"
    if kind == "u":
        return f"user:{user_id}"
    # 'p:<plan>' names the plan the result was decided under; a bare 'p' (the model's, or
    # a result stored before plans were named) takes the event's plan.
    return f"plan:{kind[2:]}" if kind.startswith("p:") else f"plan:{plan}"


def advice(conflicts: list) -> tuple[list[dict], int | None]:
    """(conflicts, nextFreeAt) of a deny, from the script's
    [sessionId, deviceId, deviceClass, contentId, startedAt, leaseExpiresAt] entries."""
    out = [
        {
            "sessionId": sid,
            "deviceId": device,
            "deviceClass": device_class,
            "contentId": content,
            "startedAt": started,
            "leaseExpiresAt": expires,
        }
        for sid, device, device_class, content, started, expires in conflicts
    ]
    return out, min((c[5] for c in conflicts), default=None)


def build_verdicts(
    ev: DecodedEvent,
    result: Result,
    topic: str,
    partition: int,
    offset: int,
    signer: TokenSigner,
    issued_by: str | None = None,
) -> list[bytes]:
    """The verdict values for one decided event: its own, then one `revoke` per removed lease.

    `issued_by`: the record's `issued-by` header (who sent it on the player's behalf), copied to
    each of these verdicts as `issuedBy`; from the record, so a redelivery yields the same bytes.
    """
    event_id, seed = event_identity(ev.event_id, ev.user_id, topic, partition, offset)
    verdict_id = _digest(seed)
    code, active, max_streams, expires_at, now, *rest = result  # a Result, or a plain list in tests
    revoked = rest[0] if rest else ()
    policy = policy_name(rest[1] if len(rest) > 1 else "d", ev.user_id, ev.plan)
    decision, reason = _OUTCOMES[code]
    token = None
    if code in _HOLDS_LEASE:  # allow on start or heartbeat
        token = signer.sign(ev.user_id, ev.session_id, expires_at, now, verdict_id)
    else:
        expires_at = None
    verdict = {
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
        "policy": policy,
    }
    if code in _ADVISED:
        verdict["conflicts"], verdict["nextFreeAt"] = advice(rest[2] if len(rest) > 2 and rest[2] else [])
    elif code == _STARTED and ev.device_class is not None:
        verdict["deviceClass"] = ev.device_class  # the lease's class, for ledger consumers
    if issued_by is not None:
        verdict["issuedBy"] = issued_by
    values = [orjson.dumps(verdict)]
    if revoked:
        why = "terminated" if code == _TERMINATED else "evicted"
        for session in revoked:
            revoke = {
                "verdictId": _digest(_seed("revoke", seed, session)),
                "eventId": event_id,
                "userId": ev.user_id,
                "sessionId": session,
                "type": ev.type,
                "decision": "revoke",
                "reason": why,
                "activeStreams": active,
                "maxStreams": max_streams,
                "leaseExpiresAt": None,
                "decidedAt": now,
                "token": None,
                "policy": policy,
            }
            if issued_by is not None:
                revoke["issuedBy"] = issued_by
            values.append(orjson.dumps(revoke))
    return values


def expire_verdict(expiry: Expiry) -> bytes:
    """The session ledger's verdict for a lease that stream time expired; its verdictId is
    derived from (userId, sessionId, expiry), so a replay yields the same bytes."""
    user_id, session_id, expires_at, active, device_class, stream_time = expiry
    return orjson.dumps(
        {
            "verdictId": _digest(_seed("expire", user_id, session_id, str(expires_at))),
            "eventId": None,
            "userId": user_id,
            "sessionId": session_id,
            "type": "expire",
            "decision": "revoke",
            "reason": "expired",
            "activeStreams": active,
            "maxStreams": None,
            "leaseExpiresAt": expires_at,
            "decidedAt": stream_time,
            "token": None,
            "deviceClass": device_class,
        }
    )
