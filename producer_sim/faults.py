"""What goes wrong upstream of the processor, on purpose.

- duplicates: the same event (same bytes, same eventId) is sent again a little later,
  as an edge retrying a send would;
- late events: the record timestamp lags the simulated clock (out of order in event time);
- malformed records: not JSON, missing fields, wrong types, over-long ids, oversized values,
  and valid events keyed by something other than their userId (or by no key).

Each fault is drawn per event at its configured fraction, from its own seeded generator.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Final

import orjson

from processor.wire import MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_VALUE_BYTES
from producer_sim.population import SimEvent

MALFORMED_KINDS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "id_too_long",
    "empty_id",
    "too_large",
    "null_value",
    "long_device_id",
    "key_mismatch",
    "null_key",
)


@dataclass(frozen=True)
class FaultConfig:
    duplicates: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    duplicate_delay_ms: tuple[int, int] = (50, 5_000)
    late_by_ms: tuple[int, int] = (1_000, 60_000)

    def __post_init__(self) -> None:
        for name in ("duplicates", "late", "malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class Malformed:
    kind: str
    key: bytes | None
    value: bytes | None
    event_id: str | None  # set when the record carries one, so a verdict for it can be recognised


@dataclass(order=True, slots=True)
class _PendingDuplicate:
    due: int
    seq: int
    event: SimEvent = field(compare=False)
    value: bytes = field(compare=False)


def encode_event(ev: SimEvent) -> bytes:
    """The event's record value, per the contract (plan, deviceClass, targetSessionId when set)."""
    value = {
        "type": ev.type,
        "userId": ev.user_id,
        "sessionId": ev.session_id,
        "deviceId": ev.device_id,
        "contentId": ev.content_id,
        "eventId": ev.event_id,
        "ts": ev.ts,
    }
    if ev.plan is not None:
        value["plan"] = ev.plan
    if ev.device_class is not None:
        value["deviceClass"] = ev.device_class
    if ev.target_session_id is not None:
        value["targetSessionId"] = ev.target_session_id
    return orjson.dumps(value)


def malformed_record(kind: str, ev: SimEvent) -> Malformed:
    """A record of the given kind that the processor must dead-letter: keyed by `ev`'s user,
    except the kinds that break the key (the value is then a valid event)."""
    key = ev.user_id.encode()
    event_id = "m" + ev.event_id
    good = {
        "type": ev.type,
        "userId": ev.user_id,
        "sessionId": ev.session_id,
        "eventId": event_id,
        "ts": ev.ts,
    }
    if ev.target_session_id is not None:
        good["targetSessionId"] = ev.target_session_id
    if kind == "not_json":
        return Malformed(kind, key, orjson.dumps(good)[:-7], None)
    if kind == "not_object":
        return Malformed(kind, key, orjson.dumps([good]), None)
    if kind == "null_value":
        return Malformed(kind, key, None, None)
    if kind == "key_mismatch":  # a valid event under a key that is not its userId
        return Malformed(kind, b"not:" + key, orjson.dumps(good), event_id)
    if kind == "null_key":
        return Malformed(kind, None, orjson.dumps(good), event_id)
    bad = dict(good)
    if kind == "missing_field":
        del bad["sessionId"]
    elif kind == "wrong_type":
        bad["userId"] = 42
    elif kind == "unknown_type":
        bad["type"] = "pause"
    elif kind == "id_too_long":
        bad["sessionId"] = "s" * (MAX_ID_CHARS + 1)
    elif kind == "empty_id":
        bad["userId"] = ""
    elif kind == "long_device_id":
        bad["deviceId"] = "d" * (MAX_TEXT_CHARS + 1)
    elif kind == "too_large":
        bad["padding"] = "x" * MAX_VALUE_BYTES
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return Malformed(kind, key, orjson.dumps(bad), event_id)


class Faults:
    def __init__(self, cfg: FaultConfig, seed: int) -> None:
        self.cfg = cfg
        self._dup_rng = random.Random(f"duplicates/{seed}")
        self._late_rng = random.Random(f"late/{seed}")
        self._bad_rng = random.Random(f"malformed/{seed}")
        self._pending: list[_PendingDuplicate] = []
        self._seq = 0

    def record_timestamp(self, ev: SimEvent) -> tuple[int, bool]:
        """(record timestamp, is it late) for a fresh event."""
        if self.cfg.late and self._late_rng.random() < self.cfg.late:
            low, high = self.cfg.late_by_ms
            return ev.ts - self._late_rng.randint(low, high), True
        return ev.ts, False

    def maybe_malformed(self, ev: SimEvent) -> Malformed | None:
        """A malformed record to send before `ev`, or None."""
        if self.cfg.malformed and self._bad_rng.random() < self.cfg.malformed:
            return malformed_record(self._bad_rng.choice(MALFORMED_KINDS), ev)
        return None

    def maybe_duplicate(self, ev: SimEvent, value: bytes) -> None:
        """Maybe schedule a re-send of this event (same value) a little later in simulated time."""
        if self.cfg.duplicates and self._dup_rng.random() < self.cfg.duplicates:
            low, high = self.cfg.duplicate_delay_ms
            self._seq += 1
            heapq.heappush(
                self._pending,
                _PendingDuplicate(ev.ts + self._dup_rng.randint(low, high), self._seq, ev, value),
            )

    def due_duplicates(self, now_ms: int) -> list[tuple[int, SimEvent, bytes]]:
        """The re-sends due at or before `now_ms`: (due time, event, value), in time order."""
        due = []
        while self._pending and self._pending[0].due <= now_ms:
            item = heapq.heappop(self._pending)
            due.append((item.due, item.event, item.value))
        return due

    @property
    def pending_duplicates(self) -> int:
        return len(self._pending)
