"""A pure-Python model of the contract's lease rules: the oracle.

The property tests hold the Lua script equal to it, and the simulator checks every
verdict it receives against it. It is written for clarity, not speed, and knows nothing
about Kafka or Redis: feed it events in log order with their record timestamps.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from processor import rules


@dataclass(frozen=True)
class Decision:
    """What the contract calls for. With code rules.EVENT_ID_CONFLICT it is no verdict: the
    event goes to the DLQ with error `event_id_conflict` (`dead_letter`), other fields neutral."""

    code: int
    active_streams: int
    max_streams: int
    lease_expires_at: int | None
    decided_at: int
    evicted: tuple[str, ...] = ()

    @property
    def dead_letter(self) -> str | None:
        """The DLQ error the event must get instead of a verdict, None when it gets a verdict."""
        return rules.EVENT_ID_CONFLICT_ERROR if self.code == rules.EVENT_ID_CONFLICT else None

    @property
    def decision(self) -> str:
        return _LABELS[self.code][0]

    @property
    def reason(self) -> str:
        return _LABELS[self.code][1]


_LABELS = {**rules.OUTCOMES, rules.EVENT_ID_CONFLICT: ("dead_letter", rules.EVENT_ID_CONFLICT_ERROR)}
CONFLICT = Decision(rules.EVENT_ID_CONFLICT, 0, 0, None, 0)

# What an eventId names: the event's type, sessionId and targetSessionId ('' until the
# model knows terminate events). The same eventId with another identity is a conflict.
Identity = tuple[str, str, str]


@dataclass
class Lease:
    expires_at: int
    seq: int  # creation order: the lowest is the oldest lease
    device_id: str | None = None
    content_id: str | None = None


@dataclass
class UserState:
    clock: int = 0
    seq: int = 0
    leases: dict[str, Lease] = field(default_factory=dict)
    # eventId -> (the event it names, its first decision), oldest first, the most recent only
    seen: OrderedDict[str, tuple[Identity, Decision]] = field(default_factory=OrderedDict)


class ReferenceModel:
    def __init__(
        self,
        max_streams: int = 3,
        lease_ttl_ms: int = 90_000,
        policy: str = "reject",
        event_id_memory: int = 16,
    ) -> None:
        if policy not in rules.POLICIES:
            raise ValueError(f"unknown overflow policy {policy!r}")
        self.max_streams = max_streams
        self.lease_ttl_ms = lease_ttl_ms
        self.policy = policy
        self.event_id_memory = event_id_memory
        self.users: dict[str, UserState] = {}

    def apply(
        self,
        user_id: str,
        session_id: str,
        event_type: str,
        timestamp_ms: int,
        event_id: str | None = None,
        device_id: str | None = None,
        content_id: str | None = None,
    ) -> Decision:
        """Decide one event. An eventId the user remembers names one event: the same
        (type, sessionId) again is a duplicate and gets the first decision; another one is a
        conflict (CONFLICT, for the DLQ). Neither changes anything.

        The user remembers its `event_id_memory` most recent eventIds; a lowered setting
        forgets the oldest ones from the user's next event on (a processor restarted with it).
        """
        user = self.users.setdefault(user_id, UserState())
        while len(user.seen) > self.event_id_memory:
            user.seen.popitem(last=False)
        identity: Identity = (event_type, session_id, "")
        if event_id is not None and event_id in user.seen:
            first_identity, first = user.seen[event_id]
            return first if first_identity == identity else CONFLICT

        now = max(timestamp_ms, user.clock)
        user.clock = now
        for sid in [sid for sid, lease in user.leases.items() if lease.expires_at <= now]:
            del user.leases[sid]
        leases = user.leases
        evicted: list[str] = []
        lease = leases.get(session_id)

        if event_type == "start":
            if lease is not None:
                lease.expires_at = now + self.lease_ttl_ms
                code = rules.ALREADY_ACTIVE
            elif len(leases) < self.max_streams or self.policy == "evict_oldest":
                while len(leases) >= self.max_streams:
                    oldest = min(leases, key=lambda sid: leases[sid].seq)
                    del leases[oldest]
                    evicted.append(oldest)
                user.seq += 1
                leases[session_id] = Lease(now + self.lease_ttl_ms, user.seq, device_id, content_id)
                code = rules.STARTED
            else:
                code = rules.LIMIT_EXCEEDED
        elif event_type == "heartbeat":
            if lease is not None:
                lease.expires_at = now + self.lease_ttl_ms
                code = rules.RENEWED
            else:
                code = rules.NO_LEASE
        elif event_type == "stop":
            if lease is not None:
                del leases[session_id]
                code = rules.STOPPED
            else:
                code = rules.NOT_ACTIVE
        else:
            raise ValueError(f"unknown event type {event_type!r}")

        held = leases.get(session_id)
        decision = Decision(
            code=code,
            active_streams=len(leases),
            max_streams=self.max_streams,
            lease_expires_at=held.expires_at if held is not None else None,
            decided_at=now,
            evicted=tuple(evicted),
        )
        if event_id is not None:
            user.seen[event_id] = (identity, decision)
            while len(user.seen) > self.event_id_memory:
                user.seen.popitem(last=False)
        return decision

    def active_leases(self, user_id: str, now: int | None = None) -> dict[str, int]:
        """Session id -> expiry of the user's leases active at `now` (default: the user's clock)."""
        user = self.users.get(user_id)
        if user is None:
            return {}
        at = user.clock if now is None else now
        return {sid: lease.expires_at for sid, lease in user.leases.items() if lease.expires_at > at}
