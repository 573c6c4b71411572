"""Shared by the checker's unit tests: events, and the verdicts a correct processor gives them."""

from __future__ import annotations

import orjson

from processor.reference_model import Decision
from processor.script_results import Expiry, Result
from processor.tokens import HS256Signer
from processor.verdicts import build_verdicts, expire_verdict
from processor.wire import DecodedEvent
from producer_sim.checker import Checker
from producer_sim.population import SimEvent

T0 = 1_763_800_000_000
SECRET = "unit-test-secret-0123456789"


def event(n: int, kind: str = "start", session: str = "s1", user: str = "u1", ts: int = T0) -> SimEvent:
    return SimEvent(kind, user, session, "tv", "c-1", f"e-{n}", ts, "normal")


def verdicts_for(ev: SimEvent, d: Decision) -> list[bytes]:
    """What a correct processor publishes (the processor's own encoder)."""
    decoded = DecodedEvent(
        ev.type, ev.user_id, ev.session_id, ev.event_id, ev.device_id, ev.content_id,
        ev.target_session_id, ev.plan, ev.device_class,
    )  # fmt: skip
    conflicts = None
    if d.conflicts is not None:
        conflicts = [
            [c.session_id, c.device_id, c.device_class, c.content_id, c.started_at, c.lease_expires_at]
            for c in d.conflicts
        ]
    result = Result(
        d.code, d.active_streams, d.max_streams, d.lease_expires_at or 0, d.decided_at,
        list(d.evicted), d.policy_kind, conflicts,
    )  # fmt: skip
    own = build_verdicts(decoded, result, "playback.events", 0, 0, HS256Signer(SECRET.encode()))
    expired = [  # the session ledger's, before the event's own
        expire_verdict(Expiry(e.user_id, e.session_id, e.lease_expires_at, e.active_streams, e.device_class,
                              e.decided_at))
        for e in d.expired
    ]  # fmt: skip
    return expired + own


def corrupt(value: bytes, **changes: object) -> bytes:
    return orjson.dumps({**orjson.loads(value), **changes})


def play(checker: Checker, events: list[SimEvent]) -> list[list[bytes]]:
    out = []
    for i, ev in enumerate(events):
        d = checker.expect(ev, ev.ts)
        checker.acked(ev.event_id, float(i))
        out.append(verdicts_for(ev, d))
    return out
