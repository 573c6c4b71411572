"""Simulated viewers: who watches, on how many devices, for how long.

A `Population` is a deterministic event source driven by a simulated clock. Every user
has a kind (normal viewer, family near the limit, account sharer), a few devices and a
number of *slots*: a slot is one screen that is idle for a while, then plays a session
(start, a heartbeat every `heartbeat_interval_ms`, then a stop, or it just vanishes
without a stop), then is idle again.

`next_event()` returns the events in time order. The player learns whether the gateway let
it play through `feedback()`: a denied start may be retried later (same session), a denied
heartbeat ends the session. Without feedback every event is taken as allowed. Given the
same config and the same feedback, the event sequence is the same.

With `plans` on, every user has a plan (producer_sim.plans: basic, standard, premium) whose
limit sizes their screens, and each event carries `plan` and the device's `deviceClass`.
With `terminates` > 0, a player whose start is denied sometimes stops one of the sessions
the deny names (the first conflict: the oldest) from its own device, a `terminate` event
with that `targetSessionId`, and then tries its start again. A player learns through
`feedback(revoked=...)` that its session was taken away (terminated, or evicted when plans
are on) and stops heartbeating.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from producer_sim.plans import DEVICE_CLASSES, PLANS

NORMAL: Final = "normal"
FAMILY: Final = "family"
SHARER: Final = "sharer"
KINDS: Final = (NORMAL, FAMILY, SHARER)

_START: Final = 0
_TICK: Final = 1  # heartbeat, or the end of the session if it is due first
_TERMINATE: Final = 2  # stop another session of the user, then try the start again

_DEVICES: Final = ("tv-livingroom", "tv-bedroom", "phone", "tablet", "laptop", "console", "car", "desktop")
_PLANS: Final = {NORMAL: "standard", FAMILY: "premium", SHARER: "premium"}
# With plans on: the plans of each kind of user, with their weights.
PLAN_MIX: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    NORMAL: (("basic", 0.3), ("standard", 0.5), ("premium", 0.2)),
    FAMILY: (("standard", 0.3), ("premium", 0.7)),
    SHARER: (("basic", 0.2), ("standard", 0.4), ("premium", 0.4)),
}


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One player event at simulated time `ts` (ms since the epoch)."""

    type: str
    user_id: str
    session_id: str
    device_id: str
    content_id: str
    event_id: str
    ts: int
    kind: str  # the user's kind, for the report; not sent
    plan: str | None = None
    device_class: str | None = None
    target_session_id: str | None = None  # terminate only


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one kind of user behaves (durations in simulated seconds)."""

    watch_mean_s: float
    idle_mean_s: float
    initially_watching: float  # chance that a slot starts a session within the first heartbeat interval
    retry_chance: float  # chance that a denied start is retried
    max_retries: int
    retry_delay_s: tuple[float, float]
    vanish_chance: float  # chance that a session ends without a stop


BEHAVIOURS: Final[dict[str, Behaviour]] = {
    NORMAL: Behaviour(1500, 1200, 0.5, 0.3, 1, (60, 300), 0.1),
    FAMILY: Behaviour(2400, 600, 0.7, 0.5, 2, (60, 300), 0.1),
    SHARER: Behaviour(3600, 180, 0.95, 0.8, 3, (30, 180), 0.2),
}


@dataclass(frozen=True)
class PopulationConfig:
    users: int = 1000
    seed: int = 1
    start_ms: int = 0
    heartbeat_interval_ms: int = 30_000
    sharers: float = 0.05  # fraction of account sharers (4-6 streams with the default limit 3)
    families: float = 0.2  # fraction of families (about the limit)
    max_streams: int = 3
    run_id: str = ""  # prefixed to user ids, mixed into session and event ids: keeps runs apart
    plans: bool = False  # users get plans (limits by plan), events their plan and device class
    terminates: float = 0.0  # chance that a denied start first terminates the oldest conflict

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be at least 1")
        if not 0.0 <= self.terminates <= 1.0:
            raise ValueError("terminates is a fraction between 0 and 1")
        if self.heartbeat_interval_ms < 1:
            raise ValueError("heartbeat interval must be positive")
        if not (
            0.0 <= self.sharers <= 1.0 and 0.0 <= self.families <= 1.0 and self.sharers + self.families <= 1.0
        ):
            raise ValueError("sharers and families are fractions that add up to at most 1")


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    kind: str
    plan: str
    devices: tuple[str, ...]
    slots: int
    max_streams: int = 3  # the limit of the user's plan (the settings' without plans)


@dataclass(slots=True)
class _Slot:
    user: User
    behaviour: Behaviour
    token: int = 0  # bumped to cancel the scheduled follow-up
    session_id: str = ""
    device_id: str = ""
    content_id: str = ""
    ends_at: int = 0
    retries: int = 0
    vanishes: bool = False
    playing: bool = False  # in a session (from its start until it ends, is denied or revoked)
    target: str = ""  # the session a scheduled terminate stops


@dataclass(order=True, slots=True)
class _Action:
    at: int
    seq: int
    what: int = field(compare=False)
    slot: int = field(compare=False)
    token: int = field(compare=False)


def slots_for(kind: str, max_streams: int, rng: random.Random) -> int:
    if kind == SHARER:
        return rng.randint(max_streams + 1, max_streams + 3)
    if kind == FAMILY:
        return max_streams + (1 if rng.random() < 0.2 else 0)
    return rng.randint(1, 2)


def plan_of(kind: str, rng: random.Random) -> str:
    """A plan for a user of this kind (plans on), drawn by PLAN_MIX's weights."""
    names, weights = zip(*PLAN_MIX[kind], strict=True)
    return rng.choices(names, weights)[0]


def _limit_of(cfg: PopulationConfig, kind: str) -> float:
    """The (mean) limit of a user of this kind: the settings', or their plans' with plans on."""
    if not cfg.plans:
        return cfg.max_streams
    return sum(weight * PLANS[name].max_streams for name, weight in PLAN_MIX[kind])


def estimated_events_per_second(cfg: PopulationConfig) -> float:
    """Rough events per *simulated* second: screens playing / heartbeat interval."""
    normal_viewer = BEHAVIOURS[NORMAL]
    per_user = {
        NORMAL: 1.5 * normal_viewer.watch_mean_s / (normal_viewer.watch_mean_s + normal_viewer.idle_mean_s),
        FAMILY: (_limit_of(cfg, FAMILY) + 0.2) * 0.8,
        SHARER: _limit_of(cfg, SHARER) + 0.5,
    }
    normal = 1.0 - cfg.sharers - cfg.families
    screens = cfg.users * (
        normal * per_user[NORMAL] + cfg.families * per_user[FAMILY] + cfg.sharers * per_user[SHARER]
    )
    return max(screens / (cfg.heartbeat_interval_ms / 1000), 0.01)


class Population:
    def __init__(self, cfg: PopulationConfig) -> None:
        self.cfg = cfg
        self._rng = random.Random(cfg.seed)  # behaviour
        self._ids = random.Random(f"{cfg.seed}/{cfg.run_id}")  # session and event ids
        self._heap: list[_Action] = []
        self._seq = 0
        self._slots: list[_Slot] = []
        self._last: tuple[str, int] | None = None  # (eventId, slot) awaiting feedback
        self._session_slot: dict[str, int] = {}  # sessionId -> its slot, for revokes
        self.stopped_by_revoke = 0  # players that stopped because their session was revoked
        self.users: list[User] = []
        prefix = f"u-{cfg.run_id}-" if cfg.run_id else "u-"
        rng = self._rng
        for i in range(cfg.users):
            draw = rng.random()
            kind = SHARER if draw < cfg.sharers else FAMILY if draw < cfg.sharers + cfg.families else NORMAL
            plan, limit = _PLANS[kind], cfg.max_streams
            if cfg.plans:
                plan = plan_of(kind, rng)
                limit = PLANS[plan].max_streams
            slots = slots_for(kind, limit, rng)
            devices = tuple(rng.sample(_DEVICES, min(len(_DEVICES), max(slots, rng.randint(1, 4)))))
            user = User(f"{prefix}{i}", kind, plan, devices, slots, limit)
            self.users.append(user)
            behaviour = BEHAVIOURS[kind]
            for _ in range(slots):
                index = len(self._slots)
                self._slots.append(_Slot(user, behaviour))
                if rng.random() < behaviour.initially_watching:
                    first = cfg.start_ms + int(rng.random() * cfg.heartbeat_interval_ms)
                else:
                    first = cfg.start_ms + self._exp_ms(behaviour.idle_mean_s)
                self._push(first, _START, index)
        self.kind_of: dict[str, str] = {u.user_id: u.kind for u in self.users}

    # scheduling -----------------------------------------------------------------------------
    def _exp_ms(self, mean_s: float) -> int:
        return max(1, int(self._rng.expovariate(1.0 / mean_s) * 1000))

    def _push(self, at: int, what: int, slot: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Action(at, self._seq, what, slot, self._slots[slot].token))

    def _new_id(self, prefix: str) -> str:
        return prefix + uuid.UUID(int=self._ids.getrandbits(128), version=4).hex

    def _event(self, kind: str, slot: _Slot, at: int, target: str | None = None) -> SimEvent:
        plan = device_class = None
        if self.cfg.plans:
            plan, device_class = slot.user.plan, DEVICE_CLASSES[slot.device_id]
        return SimEvent(
            kind, slot.user.user_id, slot.session_id, slot.device_id, slot.content_id,
            self._new_id("e-"), at, slot.user.kind, plan, device_class, target,
        )  # fmt: skip

    def _go_idle(self, index: int, at: int) -> None:
        slot = self._slots[index]
        slot.token += 1
        slot.playing = False
        self._push(at + self._exp_ms(slot.behaviour.idle_mean_s), _START, index)

    def _schedule_tick(self, index: int, at: int) -> None:
        slot = self._slots[index]
        self._push(min(at + self.cfg.heartbeat_interval_ms, slot.ends_at), _TICK, index)

    # public ---------------------------------------------------------------------------------
    def next_event(self) -> SimEvent:
        """The next event in time order (the population never runs dry)."""
        while True:
            action = heapq.heappop(self._heap)
            slot = self._slots[action.slot]
            if action.token != slot.token:
                continue  # cancelled by feedback
            at = action.at
            if action.what == _TERMINATE:
                # From the denied device: stop the session the deny named, then try again soon.
                self._push(at + int(self._rng.uniform(1, 3) * 1000), _START, action.slot)
                event = self._event("terminate", slot, at, target=slot.target)
            elif action.what == _START:
                slot.playing = True
                if slot.retries == 0:  # a new session, not a retry of a denied one
                    self._session_slot.pop(slot.session_id, None)
                    slot.session_id = self._new_id("s-")
                    self._session_slot[slot.session_id] = action.slot
                    slot.device_id = self._rng.choice(slot.user.devices)
                    slot.content_id = f"c-{self._rng.randint(1, 5000)}"
                    watch = max(self._exp_ms(slot.behaviour.watch_mean_s), self.cfg.heartbeat_interval_ms)
                    slot.ends_at = at + watch
                    slot.vanishes = self._rng.random() < slot.behaviour.vanish_chance
                else:
                    slot.ends_at = max(slot.ends_at, at + self.cfg.heartbeat_interval_ms)
                self._schedule_tick(action.slot, at)
                event = self._event("start", slot, at)
            elif at < slot.ends_at:
                self._schedule_tick(action.slot, at)
                event = self._event("heartbeat", slot, at)
            else:
                slot.retries = 0
                self._go_idle(action.slot, at)
                if slot.vanishes:
                    continue  # the player disappears: no stop, the lease expires on its own
                event = self._event("stop", slot, at)
            self._last = (event.event_id, action.slot)
            return event

    def feedback(
        self,
        event: SimEvent,
        allowed: bool,
        conflicts: Sequence[str] = (),
        revoked: Iterable[str] = (),
    ) -> None:
        """Tell the player of the last event what the gateway decided: allowed or not, the
        sessions a denied start conflicts with (oldest first, from the deny's advice), and the
        sessions the event revoked (a terminate's target, or evicted leases)."""
        if self._last is None or self._last[0] != event.event_id:
            raise ValueError("feedback is for the event returned last by next_event()")
        index = self._last[1]
        self._last = None
        if event.type == "terminate" or self.cfg.plans:
            for session_id in revoked:
                self._revoked(session_id, event.ts)
        if allowed or event.type in ("stop", "terminate"):
            if event.type == "start":
                self._slots[index].retries = 0
            return
        slot = self._slots[index]
        slot.playing = False
        if event.type == "start":
            behaviour = slot.behaviour
            if (
                conflicts
                and self.cfg.terminates
                and slot.retries < behaviour.max_retries
                and self._rng.random() < self.cfg.terminates
            ):
                slot.retries += 1
                slot.token += 1
                slot.target = conflicts[0]
                self._push(event.ts + int(self._rng.uniform(2, 10) * 1000), _TERMINATE, index)
                return
            if slot.retries < behaviour.max_retries and self._rng.random() < behaviour.retry_chance:
                slot.retries += 1
                slot.token += 1
                low, high = behaviour.retry_delay_s
                self._push(event.ts + int(self._rng.uniform(low, high) * 1000), _START, index)
                return
        slot.retries = 0
        self._go_idle(index, event.ts)  # denied heartbeat (lease lost) or no retry: the screen goes idle

    def _revoked(self, session_id: str, at: int) -> None:
        """The session was taken away: its player stops (no more heartbeats, no stop)."""
        index = self._session_slot.get(session_id)
        if index is None:
            return
        slot = self._slots[index]
        if slot.playing and slot.session_id == session_id:
            self.stopped_by_revoke += 1
            slot.retries = 0
            self._go_idle(index, at)
