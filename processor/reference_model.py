"""A pure-Python model of the contract's lease rules: the oracle.

The property tests hold the Lua script equal to it, and the simulator checks every
verdict it receives against it. It is written for clarity, not speed, and knows nothing
about Kafka or Redis: feed it events in log order with their record timestamps, each with
the policy the processor resolved for it (`processor.policies.PolicyTable.resolve`).

Sections of the contract it follows: "Lease rules", "Policies" (limits by plan, user and
device class), "Deny advice", "Terminate" and "The session ledger"; the points the contract
leaves open as the issue-13 build spec fixes them (a limit of 0 admits nothing, the class cap
is applied before the total, "oldest" = earliest start, then created first).

The session ledger: pass each record's events `partition`. Every record the processor
decides (a valid event, duplicates and eventId conflicts included) first moves its
partition's stream time up to its timestamp; the leases of that partition's users whose
expiry stream time reached are then expired, in (expiry, userId, sessionId) order, and
reported in the record's `Decision.expired` (their verdicts come before the record's own).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from processor import rules
from processor.policies import Policy


@dataclass(frozen=True)
class Conflict:
    """One active lease that blocks a denied start (deny advice); None where unknown."""

    session_id: str
    device_id: str | None
    device_class: str | None
    content_id: str | None
    started_at: int | None
    lease_expires_at: int


@dataclass(frozen=True)
class Expired:
    """A lease stream time expired: the ledger's `expire` verdict (decision revoke, reason
    expired, eventId, maxStreams and token null)."""

    user_id: str
    session_id: str
    lease_expires_at: int
    active_streams: int  # the user's leases whose expiry is later than this one
    device_class: str | None
    decided_at: int  # the stream time that expired it


@dataclass(frozen=True)
class Decision:
    """What the contract calls for. With code rules.EVENT_ID_CONFLICT it is no verdict: the
    event goes to the DLQ with error `event_id_conflict` (`dead_letter`), other fields neutral.

    `evicted` names the leases the event removed from elsewhere, in the order removed: the
    evicted ones of a start (`revoke`/`evicted`), the target of a terminate
    (`revoke`/`terminated`). `conflicts` is set on advice denies only (`limit_exceeded`,
    `device_class_limit`), oldest start first; `policy_kind` is the applied policy's kind.
    """

    code: int
    active_streams: int
    max_streams: int
    lease_expires_at: int | None
    decided_at: int
    evicted: tuple[str, ...] = ()
    policy_kind: str = "d"
    conflicts: tuple[Conflict, ...] | None = None
    expired: tuple[Expired, ...] = ()  # pushed before this record's own verdicts
    # The contract's support console: the record's `issued-by` header, which each verdict of
    # the event (its own and its revokes) carries as `issuedBy`; None: no header, no field.
    issued_by: str | None = None

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

    @property
    def next_free_at(self) -> int | None:
        """The advice's `nextFreeAt`: the earliest expiry among the conflicts (None if none)."""
        if not self.conflicts:
            return None
        return min(c.lease_expires_at for c in self.conflicts)


_LABELS = {**rules.OUTCOMES, rules.EVENT_ID_CONFLICT: ("dead_letter", rules.EVENT_ID_CONFLICT_ERROR)}
CONFLICT = Decision(rules.EVENT_ID_CONFLICT, 0, 0, None, 0)

# What an eventId names: the event's type, sessionId and targetSessionId (a terminate's;
# '' for the other types, which ignore the field). The same eventId with another identity
# is a conflict.
Identity = tuple[str, str, str]


@dataclass
class Lease:
    expires_at: int
    seq: int  # creation order: among equal start times, the lowest is the oldest lease
    device_id: str | None = None
    content_id: str | None = None
    device_class: str | None = None  # the deviceClass of its start, never changed
    started_at: int | None = None  # the event time of its start, never changed

    def age_key(self) -> tuple[int, int]:
        """Sort key for "oldest": earliest start, then created first."""
        return (self.started_at if self.started_at is not None else -1, self.seq)


@dataclass
class UserState:
    clock: int = 0
    seq: int = 0
    leases: dict[str, Lease] = field(default_factory=dict)
    # eventId -> (the event it names, its first decision), oldest first, the most recent only
    seen: OrderedDict[str, tuple[Identity, Decision]] = field(default_factory=OrderedDict)

    def oldest_first(self) -> list[str]:
        """The user's leases, oldest start first."""
        return sorted(self.leases, key=lambda sid: self.leases[sid].age_key())

    def of_class(self, device_class: str) -> list[str]:
        """The user's leases started with `device_class`, oldest start first."""
        return [sid for sid in self.oldest_first() if self.leases[sid].device_class == device_class]

    def conflicts(self, sids: list[str]) -> tuple[Conflict, ...]:
        return tuple(
            Conflict(
                sid, lease.device_id, lease.device_class, lease.content_id, lease.started_at, lease.expires_at
            )
            for sid, lease in ((sid, self.leases[sid]) for sid in sids)
        )


class ReferenceModel:
    def __init__(
        self,
        max_streams: int = 3,
        lease_ttl_ms: int = 90_000,
        policy: str = "reject",
        event_id_memory: int = 16,
    ) -> None:
        """`max_streams` and `policy` (the overflow policy) are the settings: the policy of
        an event given none (no user, plan or default record), reported as kind 'd'."""
        if policy not in rules.POLICIES:
            raise ValueError(f"unknown overflow policy {policy!r}")
        self.max_streams = max_streams
        self.lease_ttl_ms = lease_ttl_ms
        self.policy = policy
        self.event_id_memory = event_id_memory
        self.users: dict[str, UserState] = {}
        self.stream_time: dict[int, int] = {}  # events partition -> highest record timestamp seen
        # Per partition, (expiry, userId, sessionId) of every expiry a lease was given; stale
        # ones (the lease renewed or ended since) are skipped when they come up.
        self._expiries: dict[int, list[tuple[int, str, str]]] = {}
        self._partition_of: dict[str, int] = {}

    def settings_policy(self) -> Policy:
        return Policy("d", self.max_streams, self.policy == "evict_oldest", {})

    def apply(
        self,
        user_id: str,
        session_id: str,
        event_type: str,
        timestamp_ms: int,
        event_id: str | None = None,
        device_id: str | None = None,
        content_id: str | None = None,
        *,
        policy: Policy | None = None,
        device_class: str | None = None,
        target_session_id: str | None = None,
        partition: int = 0,
        issued_by: str | None = None,
    ) -> Decision:
        """Decide one record's event under `policy` (None: the settings), after the ledger's
        expiries its timestamp brings on its events `partition`. An eventId the user
        remembers names one event: the same (type, sessionId, and for a terminate its
        targetSessionId) again is a duplicate and gets the first decision, whatever the
        policy now; another one is a conflict (CONFLICT, for the DLQ). Neither changes anything.

        The user remembers its `event_id_memory` most recent eventIds; a lowered setting
        forgets the oldest ones from the user's next write on (its next event, or the expiry of
        one of its leases: a processor restarted with it).

        `issued_by`: the record's `issued-by` header; the decision's verdicts name it (a
        duplicate's too: the header is the record's, not the remembered event's).
        """
        if event_type not in ("start", "heartbeat", "stop", "terminate"):
            raise ValueError(f"unknown event type {event_type!r}")
        if event_type == "terminate" and target_session_id is None:
            raise ValueError("a terminate needs its targetSessionId")
        known = self._partition_of.setdefault(user_id, partition)
        if known != partition:
            raise ValueError(f"user {user_id!r} is on partition {known}, not {partition}")
        expired = self._advance(partition, timestamp_ms)
        decision = self._decide(
            user_id, session_id, event_type, timestamp_ms, event_id, device_id, content_id,
            policy=policy, device_class=device_class, target_session_id=target_session_id,
        )  # fmt: skip
        if decision.lease_expires_at is not None:
            heapq.heappush(self._expiries[partition], (decision.lease_expires_at, user_id, session_id))
        if issued_by is not None:
            decision = replace(decision, issued_by=issued_by)
        return replace(decision, expired=expired) if expired else decision

    def _advance(self, partition: int, timestamp_ms: int) -> tuple[Expired, ...]:
        """Move the partition's stream time up to the record's timestamp and expire the leases
        it reached, in (expiry, userId, sessionId) order."""
        now = max(self.stream_time.get(partition, 0), timestamp_ms)
        self.stream_time[partition] = now
        heap = self._expiries.setdefault(partition, [])
        out: list[Expired] = []
        while heap and heap[0][0] <= now:
            expiry, user_id, session_id = heapq.heappop(heap)
            user = self.users[user_id]
            lease = user.leases.get(session_id)
            if lease is None or lease.expires_at != expiry:
                continue  # ended, or renewed: the lease's current expiry has its own entry
            del user.leases[session_id]
            user.clock = max(user.clock, expiry)  # an older event of the user sees it expired
            # An expiry is a write of the user's state: a lowered eventId memory applies there too.
            while len(user.seen) > self.event_id_memory:
                user.seen.popitem(last=False)
            later = sum(1 for other in user.leases.values() if other.expires_at > expiry)
            out.append(Expired(user_id, session_id, expiry, later, lease.device_class, now))
        return tuple(out)

    def _decide(
        self,
        user_id: str,
        session_id: str,
        event_type: str,
        timestamp_ms: int,
        event_id: str | None,
        device_id: str | None,
        content_id: str | None,
        *,
        policy: Policy | None,
        device_class: str | None,
        target_session_id: str | None,
    ) -> Decision:
        user = self.users.setdefault(user_id, UserState())
        while len(user.seen) > self.event_id_memory:
            user.seen.popitem(last=False)
        target = target_session_id if event_type == "terminate" else None
        identity: Identity = (event_type, session_id, target or "")
        if event_id is not None and event_id in user.seen:
            first_identity, first = user.seen[event_id]
            return first if first_identity == identity else CONFLICT

        if policy is None:
            policy = self.settings_policy()
        now = max(timestamp_ms, user.clock)
        user.clock = now
        for sid in [sid for sid, lease in user.leases.items() if lease.expires_at <= now]:
            del user.leases[sid]  # expired leases never count
        leases = user.leases
        evicted: list[str] = []
        conflicts: tuple[Conflict, ...] | None = None

        if event_type == "start":
            code, conflicts = self._start(
                user, session_id, now, policy, evicted, device_id, content_id, device_class
            )
        elif event_type == "heartbeat":
            if session_id in leases:
                leases[session_id].expires_at = now + self.lease_ttl_ms
                code = rules.RENEWED
            else:
                code = rules.NO_LEASE
        elif event_type == "stop":
            if session_id in leases:
                del leases[session_id]
                code = rules.STOPPED
            else:
                code = rules.NOT_ACTIVE
        else:  # terminate: ends the target session; the requester needs no lease
            assert target is not None
            if target in leases:
                del leases[target]
                evicted.append(target)  # its revoke verdict says `terminated`
                code = rules.TERMINATED
            else:
                code = rules.NOT_ACTIVE

        held = leases.get(session_id) if code in rules.HOLDS_LEASE else None
        decision = Decision(
            code=code,
            active_streams=len(leases),
            max_streams=policy.max_streams,
            lease_expires_at=held.expires_at if held is not None else None,
            decided_at=now,
            evicted=tuple(evicted),
            policy_kind=policy.kind,
            conflicts=conflicts,
        )
        if event_id is not None:
            user.seen[event_id] = (identity, decision)
            while len(user.seen) > self.event_id_memory:
                user.seen.popitem(last=False)
        return decision

    def _start(
        self,
        user: UserState,
        session_id: str,
        now: int,
        policy: Policy,
        evicted: list[str],
        device_id: str | None,
        content_id: str | None,
        device_class: str | None,
    ) -> tuple[int, tuple[Conflict, ...] | None]:
        """(code, conflicts) of a start; evictions are removed and appended to `evicted`."""
        leases = user.leases
        if session_id in leases:  # always allowed; renews only (not its class, start or ids)
            leases[session_id].expires_at = now + self.lease_ttl_ms
            return rules.ALREADY_ACTIVE, None

        # A denied start changes nothing (the rule table: a deny's effect is "none"), so the
        # leases to evict are chosen first and removed only once the start is admitted.
        victims: list[str] = []
        # 1. The class cap, checked first: only for an event naming a class its policy caps.
        cap = policy.classes.get(device_class) if device_class is not None else None
        if cap is not None:
            same_class = user.of_class(device_class)
            if len(same_class) >= cap:
                if not policy.evict or cap == 0:  # a cap of 0 admits nothing, evicting or not
                    return rules.DEVICE_CLASS_LIMIT, user.conflicts(same_class)
                victims += same_class[: len(same_class) - cap + 1]  # the oldest of the class

        # 2. The total limit, over the leases the class step leaves.
        if len(leases) - len(victims) >= policy.max_streams:
            if not policy.evict or policy.max_streams == 0:  # a limit of 0 admits nothing
                return rules.LIMIT_EXCEEDED, user.conflicts(user.oldest_first())
            others = [sid for sid in user.oldest_first() if sid not in victims]
            victims += others[: len(leases) - len(victims) - policy.max_streams + 1]

        for sid in victims:  # in the order removed: the class's, then the total's
            del leases[sid]
            evicted.append(sid)

        # 3. Room: the lease keeps the start's deviceClass and start time.
        user.seq += 1
        leases[session_id] = Lease(
            now + self.lease_ttl_ms, user.seq, device_id, content_id, device_class, now
        )
        return rules.STARTED, None

    def active_leases(self, user_id: str, now: int | None = None) -> dict[str, int]:
        """Session id -> expiry of the user's leases active at `now` (default: the user's clock)."""
        user = self.users.get(user_id)
        if user is None:
            return {}
        at = user.clock if now is None else now
        return {sid: lease.expires_at for sid, lease in user.leases.items() if lease.expires_at > at}

    def active_by_class(self, partition: int) -> dict[str | None, int]:
        """The partition's leases not yet ended by a verdict or stream time, per device class
        (None = no class): what the ledger counts as active."""
        counts: dict[str | None, int] = {}
        for user_id, p in self._partition_of.items():
            if p == partition:
                for lease in self.users[user_id].leases.values():
                    counts[lease.device_class] = counts.get(lease.device_class, 0) + 1
        return counts

    def lease(self, user_id: str, session_id: str) -> Lease | None:
        """The user's lease of `session_id` active at the user's clock, if any."""
        user = self.users.get(user_id)
        held = user.leases.get(session_id) if user is not None else None
        return held if held is not None and held.expires_at > user.clock else None
