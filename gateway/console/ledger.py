"""The console's index of the session ledger (the verdicts topic): each account's recent
decisions, and the live picture (active streams, all and by device class, and denies, per minute).

Fed every verdict value in topic order per partition (`add`); pure data, no I/O, so the
follower (ledger_follower.py) and the benchmark (bench/console_index.py) drive the same code.

How it counts (docs/console.md says the same):

- A lease begins with an `allow`/`started` verdict; its device class is the verdict's
  `deviceClass` (the processor adds the start's class there). It ends with exactly one of
  `stopped` (the stop's allow), `evicted`, `terminated` or `expired` (revokes), which carry no
  class: the index keeps the class of each active lease (userId, sessionId) from its start.
  An end whose start the index never saw (it was before the topic's retention) counts nothing.
- Active streams at the end of a minute (by the verdicts' `decidedAt`, event time) = the leases
  begun minus those ended up to then. Denies per minute: verdicts with decision `deny`.
- The minutes older than the window are folded into one baseline, so the memory of the
  picture is the window's, whatever the topic's length.
- Heartbeat renewals (`renewed`, most of the traffic) change neither the picture nor an
  account's story: they are skipped on a byte test, before any JSON is parsed.
- Recent decisions: the last `recent_per_user` verdicts of each account (token, userId
  and eventId left out), for at most `max_users` accounts (the least recently decided go first). A
  verdict whose verdictId the account's recent list holds already is a redelivery: ignored.
- Device classes are players' strings: the first `max_classes` classes get their own series,
  later ones are counted together as "other classes".
"""

from __future__ import annotations

from collections import OrderedDict

import orjson

MINUTE_MS = 60_000
ENDS = frozenset({"stopped", "evicted", "terminated", "expired"})
_RENEWED = b'"reason":"renewed"'  # orjson's compact form; JSON escapes any quote inside strings


class OtherClasses:
    """The series key of the classes beyond `max_classes` (a sentinel: no player string equals it)."""

    def __repr__(self) -> str:
        return "OTHER"


OTHER = OtherClasses()


class LedgerIndex:
    def __init__(
        self,
        recent_per_user: int = 5,
        max_users: int = 50_000,
        history_minutes: int = 60,
        max_classes: int = 12,
    ) -> None:
        self.recent_per_user = recent_per_user
        self.max_users = max_users
        self.history_minutes = history_minutes
        self.max_classes = max_classes
        self._recent: OrderedDict[str, list[bytes]] = OrderedDict()  # userId -> newest last
        self._active: dict[str, dict[str, object]] = {}  # userId -> {sessionId: class key}
        self._classes: dict[object, None] = {}  # class keys with a series, in first-seen order
        self._deltas: dict[int, dict[object, int]] = {}  # minute -> class key -> begun - ended
        self._denies: dict[int, int] = {}  # minute -> denies
        self._baseline: dict[object, int] = {}  # the minutes folded out of the window
        self._floor = -1  # the newest minute folded into the baseline
        self.newest_minute = 0
        self.verdicts = 0  # values read
        self.bad = 0  # values that are no verdict object (counted, skipped)

    # -- feeding ------------------------------------------------------------------------
    def add(self, value: bytes | None) -> None:
        self.verdicts += 1
        if value is None or _RENEWED in value:
            return
        try:
            v = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.bad += 1
            return
        if type(v) is not dict:
            self.bad += 1
            return
        user, session, verdict_id = v.get("userId"), v.get("sessionId"), v.get("verdictId")
        at = v.get("decidedAt")
        if (
            type(user) is not str
            or type(session) is not str
            or type(verdict_id) is not str
            or type(at) is not int
        ):
            self.bad += 1
            return
        if not self._remember(user, verdict_id, v):
            return  # a redelivered copy: counted once
        minute = at // MINUTE_MS
        if minute > self.newest_minute:
            self.newest_minute = minute
            self._fold(minute)
        reason = v.get("reason")
        if reason == "started" and v.get("decision") == "allow":
            sessions = self._active.setdefault(user, {})
            if session not in sessions:
                key = self._class_key(v.get("deviceClass"))
                sessions[session] = key
                self._count(minute, key, 1)
        elif reason in ENDS and (v.get("decision") == "revoke" or reason == "stopped"):
            # A terminate's own verdict (allow/terminated) names the requester, who keeps
            # watching; the target's lease ends by the revoke that follows it.
            sessions = self._active.get(user)
            if sessions is not None and session in sessions:
                self._count(minute, sessions.pop(session), -1)
                if not sessions:
                    del self._active[user]
        elif v.get("decision") == "deny" and minute > self._floor:
            self._denies[minute] = self._denies.get(minute, 0) + 1

    def _remember(self, user: str, verdict_id: str, v: dict) -> bool:
        """Keep the verdict in the account's recent list; False when it is there already."""
        recent = self._recent.get(user)
        marker = b'"verdictId":' + orjson.dumps(verdict_id)
        if recent is None:
            recent = self._recent[user] = []
            if len(self._recent) > self.max_users:
                self._recent.popitem(last=False)
        else:
            if any(marker in entry for entry in recent):
                return False
            self._recent.move_to_end(user)
        v.pop("token", None)  # a credential of the player's: never shown, not kept
        v.pop("eventId", None)  # not shown; the verdictId names the decision
        del v["userId"]
        # A copy of exactly its size: orjson's buffer keeps kilobytes of spare room.
        recent.append(bytes(memoryview(orjson.dumps(v))))
        if len(recent) > self.recent_per_user:
            del recent[0]
        return True

    def _class_key(self, device_class: object) -> object:
        key = device_class if device_class is None or type(device_class) is str else None
        if key in self._classes:
            return key
        if len(self._classes) < self.max_classes:
            self._classes[key] = None
            return key
        return OTHER

    def _count(self, minute: int, key: object, n: int) -> None:
        if minute <= self._floor:  # late: before the window
            self._baseline[key] = self._baseline.get(key, 0) + n
            return
        deltas = self._deltas.setdefault(minute, {})
        deltas[key] = deltas.get(key, 0) + n

    def _fold(self, end_minute: int) -> None:
        """Move the minutes before the window ending at `end_minute` into the baseline."""
        floor = end_minute - self.history_minutes
        if floor <= self._floor:
            return
        for minute in [m for m in self._deltas if m <= floor]:
            for key, n in self._deltas.pop(minute).items():
                self._baseline[key] = self._baseline.get(key, 0) + n
        for minute in [m for m in self._denies if m <= floor]:
            del self._denies[minute]
        self._floor = floor

    # -- reading ------------------------------------------------------------------------
    def recent(self, user: str) -> list[dict]:
        """The account's recent verdicts, newest first (without token, userId and eventId)."""
        return [orjson.loads(entry) for entry in reversed(self._recent.get(user, ()))]

    def last_plan(self, user: str) -> str | None:
        """The plan its newest verdict was decided under (`policy` = plan:<plan>), if any."""
        for verdict in self.recent(user):
            policy = verdict.get("policy")
            if isinstance(policy, str) and policy.startswith("plan:"):
                return policy[5:]
        return None

    def active_sessions(self) -> int:
        return sum(len(s) for s in self._active.values())

    def series(self, now_ms: int) -> dict:
        """The window's minutes up to the later of `now_ms` and the newest verdict: each with
        the active streams at its end (total and per class, in `classes` order) and its denies."""
        end = max(self.newest_minute, now_ms // MINUTE_MS)
        self._fold(end)
        keys = [*self._classes, *([OTHER] if self._has_other() else [])]
        running = dict(self._baseline)
        minutes = []
        for minute in range(end - self.history_minutes + 1, end + 1):
            for key, n in self._deltas.get(minute, {}).items():
                running[key] = running.get(key, 0) + n
            minutes.append(
                {
                    "at": minute * MINUTE_MS,
                    "active": sum(running.values()),
                    "byClass": [running.get(key, 0) for key in keys],
                    "denies": self._denies.get(minute, 0),
                }
            )
        classes = [{"others": True} if key is OTHER else {"deviceClass": key} for key in keys]
        return {"minutes": minutes, "classes": classes}

    def _has_other(self) -> bool:
        return OTHER in self._baseline or any(OTHER in d for d in self._deltas.values())

    def stats(self) -> dict:
        return {
            "verdictsRead": self.verdicts,
            "badValues": self.bad,
            "accounts": len(self._recent),
            "activeSessions": self.active_sessions(),
        }
