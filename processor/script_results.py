"""What the decide script answers: one Result per event (with the ledger's expiries), the
partition's lease counts, and the two refusals (FencedError, StateBehind)."""

from __future__ import annotations

from typing import NamedTuple


class FencedError(RuntimeError):
    """A newer owner took the partition: this instance must not write for it.

    `current_epoch` is None when Redis no longer knows the partition at all (state lost).
    """

    def __init__(self, partition: int, epoch: int, reply: bytes) -> None:
        current = reply.decode().partition(":")[2]
        self.current_epoch = None if current in ("", "nil", "false") else int(current)
        super().__init__(f"partition {partition}: epoch {epoch} is stale (current: {current or 'none'})")


class StateBehind(RuntimeError):
    """Redis's applied offset went below what this owner already had applied: writes were lost."""

    def __init__(self, partition: int, expected: int, reply: bytes) -> None:
        self.applied = int(reply.decode().partition(":")[2])
        super().__init__(
            f"partition {partition}: Redis has applied up to offset {self.applied}, but offsets up to "
            f"{expected} were applied under this owner: Redis lost acknowledged writes"
        )


class Expiry(NamedTuple):
    """A lease the record's stream time expired (the session ledger's `expire` verdict)."""

    user_id: str
    session_id: str
    expires_at: int
    active: int  # the user's leases whose expiry is later than this one
    device_class: str | None
    stream_time: int  # the verdict's decidedAt


class Result(NamedTuple):
    """One event's result, parsed once from the script's reply.

    The script returns [code, activeStreams, maxStreams, leaseExpiresAt (0 = none), now,
    [evicted]?], or [code] alone for code 0 (an offset whose stored result is gone) and
    for results that are not verdicts (a conflicting eventId); wrapped as [expired, result]
    when the record's stream time expired leases (published before the record's verdicts).
    """

    code: int
    active: int = 0
    max_streams: int = 0
    expires_at: int = 0
    now: int = 0
    evicted: tuple[str, ...] | list[str] = ()  # sessions revoked (evicted, or the terminated target)
    policy: str = "d"  # the policy applied: 'u' (user), 'p:<plan>' (plan), 'd' (default/settings)
    # Deny advice: [sessionId, deviceId, deviceClass, contentId, startedAt, leaseExpiresAt] each
    conflicts: list | None = None
    expired: tuple[Expiry, ...] = ()  # in ledger order: expiry, then userId, then sessionId


class Decided(list):
    """The results of a batch (a list of Result, one per event), and the partition's active
    leases per device class after it ('' = none), as the script counts them."""

    def __init__(self, results: list[Result], leases: dict[str, int]) -> None:
        super().__init__(results)
        self.leases = leases


def parse_result(r: list) -> Result:
    if r and type(r[0]) is list:  # [expired, result]
        expired, r = r
        return Result(*r, expired=tuple(Expiry(*e) for e in expired))
    return Result(*r)
