"""The contract's lease rule table as codes shared by the Lua script and Python.

The script returns a small integer per decision; this table turns it into the
(decision, reason) pair of the verdict. Keep in step with lua/decide_batch.lua.
"""

from __future__ import annotations

from typing import Final

STARTED: Final = 1
ALREADY_ACTIVE: Final = 2
LIMIT_EXCEEDED: Final = 3
RENEWED: Final = 4
NO_LEASE: Final = 5
STOPPED: Final = 6
NOT_ACTIVE: Final = 7
# Not a verdict: the event reuses a remembered eventId of its user for another event
# (type, sessionId or targetSessionId). The processor dead-letters it (error below).
EVENT_ID_CONFLICT: Final = 8
EVENT_ID_CONFLICT_ERROR: Final = "event_id_conflict"
TERMINATED: Final = 9  # terminate of an active target (its revoke verdict says `terminated`)
DEVICE_CLASS_LIMIT: Final = 10  # the start's device class holds its cap of active leases

OUTCOMES: Final[dict[int, tuple[str, str]]] = {
    STARTED: ("allow", "started"),
    ALREADY_ACTIVE: ("allow", "already_active"),
    LIMIT_EXCEEDED: ("deny", "limit_exceeded"),
    RENEWED: ("allow", "renewed"),
    NO_LEASE: ("deny", "no_lease"),
    STOPPED: ("allow", "stopped"),
    NOT_ACTIVE: ("allow", "not_active"),
    TERMINATED: ("allow", "terminated"),
    DEVICE_CLASS_LIMIT: ("deny", "device_class_limit"),
}

# Denies that carry advice (conflicts, nextFreeAt).
ADVISED: Final = frozenset({LIMIT_EXCEEDED, DEVICE_CLASS_LIMIT})

# Codes whose verdict holds a lease (leaseExpiresAt set, token issued).
HOLDS_LEASE: Final = frozenset({STARTED, ALREADY_ACTIVE, RENEWED})

POLICIES: Final = ("reject", "evict_oldest")
