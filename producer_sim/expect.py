"""What a verdict must say, from the reference model's decision: shared by the live checker
(producer_sim/checker.py) and the offline verifier (producer_sim/verifier.py).

The contract's encoding, written out independently of the processor's (processor/verdicts.py):
every verdict names its `policy` (`user:<userId>`, `plan:<plan>` or `default`) with that
policy's `maxStreams`; a `limit_exceeded` or `device_class_limit` deny carries `conflicts`
(oldest start first) and `nextFreeAt` (the earliest of their expiries), other verdicts
neither (or null); the revoke of a terminate's target says `terminated`, of an eviction
`evicted`; the session ledger's `expire` verdict names no event, policy limit or token. An
event sent with the `issued-by` header (the support console's) has verdicts, its own and its
revokes, with `issuedBy` equal to the header; others have no such field (a missing field
counts as null).
"""

from __future__ import annotations

from typing import Any

from processor.reference_model import Decision, Expired
from processor.wire import issued_by

ADVISED_REASONS = ("limit_exceeded", "device_class_limit")


def policy_name(kind: str, user_id: str, plan: str | None) -> str:
    if kind == "u":
        return f"user:{user_id}"
    if kind == "p":
        return f"plan:{plan}"
    return "default"


def advice(d: Decision) -> tuple[list[dict[str, Any]] | None, int | None]:
    """(conflicts, nextFreeAt) as the verdict carries them; (None, None) when it carries none."""
    if d.conflicts is None:
        return None, None
    conflicts = [
        {
            "sessionId": c.session_id,
            "deviceId": c.device_id,
            "deviceClass": c.device_class,
            "contentId": c.content_id,
            "startedAt": c.started_at,
            "leaseExpiresAt": c.lease_expires_at,
        }
        for c in d.conflicts
    ]
    return conflicts, d.next_free_at


def main_fields(user_id: str, session_id: str, type_: str, plan: str | None, d: Decision) -> dict[str, Any]:
    """The fields of an event's own verdict (all but verdictId, eventId and token)."""
    conflicts, next_free_at = advice(d)
    return {
        "userId": user_id,
        "sessionId": session_id,
        "type": type_,
        "decision": d.decision,
        "reason": d.reason,
        "activeStreams": d.active_streams,
        "maxStreams": d.max_streams,
        "leaseExpiresAt": d.lease_expires_at,
        "decidedAt": d.decided_at,
        "policy": policy_name(d.policy_kind, user_id, plan),
        "conflicts": conflicts,
        "nextFreeAt": next_free_at,
        "issuedBy": d.issued_by,
    }


def revoke_reason(type_: str) -> str:
    return "terminated" if type_ == "terminate" else "evicted"


def revoke_fields(user_id: str, type_: str, plan: str | None, d: Decision) -> dict[str, Any]:
    """The fields of a revoke the event causes (all but verdictId, eventId and sessionId)."""
    return {
        "userId": user_id,
        "type": type_,
        "decision": "revoke",
        "reason": revoke_reason(type_),
        "activeStreams": d.active_streams,
        "maxStreams": d.max_streams,
        "leaseExpiresAt": None,
        "decidedAt": d.decided_at,
        "token": None,
        "policy": policy_name(d.policy_kind, user_id, plan),
        "conflicts": None,
        "nextFreeAt": None,
        "issuedBy": d.issued_by,
    }


def expire_fields(e: Expired) -> dict[str, Any]:
    """The fields of an `expire` verdict (all but verdictId, userId, sessionId, leaseExpiresAt)."""
    return {
        "eventId": None,
        "type": "expire",
        "decision": "revoke",
        "reason": "expired",
        "activeStreams": e.active_streams,
        "maxStreams": None,
        "decidedAt": e.decided_at,
        "token": None,
        "deviceClass": e.device_class,
    }


def issuer(headers) -> str | None:
    """The record's `issued-by` header as its verdicts must show it: a bad one is left out."""
    try:
        return issued_by(headers)
    except ValueError:
        return None


def wants_token(d: Decision, type_: str) -> bool:
    return d.decision == "allow" and type_ in ("start", "heartbeat")


def differences(got: dict[str, Any], want: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {expected, got}} of the fields that differ (a missing field counts as null)."""
    return {
        name: {"expected": value, "got": got.get(name)}
        for name, value in want.items()
        if got.get(name) != value
    }
