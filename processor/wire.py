"""The wire shapes of the contract: player events in, verdicts out.

The pydantic models are the one written-down form of both shapes (the simulator and the
docs use them). The processor's hot path uses `decode_event`, a hand-rolled validator
that accepts exactly the values `PlayerEvent` accepts (a property test holds them equal) at
a fraction of the cost per record, and then checks the record key against the userId.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, model_validator

MAX_VALUE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 256  # deviceId, contentId: kept with the lease and shown in listings
MAX_PLAN_CHARS = 64
MAX_CLASS_CHARS = 32
EVENT_TYPES = ("start", "heartbeat", "stop", "terminate")

Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
Plan = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PLAN_CHARS)]
DeviceClass = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLASS_CHARS)]


class PlayerEvent(BaseModel):
    """Value of `playback.events`. Unknown fields are ignored.

    The record key must be the userId (UTF-8); that rule is about the record, not the
    value, so it lives in `decode_event` (`key_mismatch`), not in this model.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["start", "heartbeat", "stop", "terminate"]
    userId: Id
    sessionId: Id
    deviceId: Text | None = None
    contentId: Text | None = None
    eventId: Id | None = None
    ts: StrictInt | StrictFloat | None = None
    plan: Plan | None = None
    deviceClass: DeviceClass | None = None
    targetSessionId: Id | None = None  # required for terminate, ignored otherwise

    @model_validator(mode="after")
    def _terminate_has_a_target(self) -> PlayerEvent:
        if self.type == "terminate" and self.targetSessionId is None:
            raise ValueError("targetSessionId is required for terminate")
        return self

    @classmethod
    def from_json(cls, value: bytes) -> PlayerEvent:
        """The reference parse: strict JSON (orjson: no NaN, no Infinity), then the model.

        Raises ValueError (orjson's or pydantic's ValidationError) for anything invalid.
        """
        return cls.model_validate(orjson.loads(value))


class Conflict(BaseModel):
    """One active lease that blocks a start (deny advice)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sessionId: str
    deviceId: str | None
    deviceClass: str | None
    contentId: str | None
    startedAt: int | None
    leaseExpiresAt: int


class Verdict(BaseModel):
    """Value of `playback.verdicts`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verdictId: str
    eventId: str | None  # null on an `expire` verdict of the session ledger
    userId: str
    sessionId: str
    type: Literal["start", "heartbeat", "stop", "terminate", "expire"]
    decision: Literal["allow", "deny", "revoke"]
    reason: Literal[
        "already_active",
        "started",
        "limit_exceeded",
        "device_class_limit",
        "renewed",
        "no_lease",
        "stopped",
        "not_active",
        "evicted",
        "terminated",
        "expired",
    ]
    activeStreams: int
    maxStreams: int | None
    leaseExpiresAt: int | None
    decidedAt: int
    token: str | None
    policy: str | None = None
    conflicts: list[Conflict] | None = None
    nextFreeAt: int | None = None
    issuedBy: str | None = None  # "support:<sub>": the event carried the `issued-by` header


class DecodeError(ValueError):
    """A record that can never be decided. `code` goes to the DLQ `error` header."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# The contract's "support console": an event sent on a support agent's behalf names them in
# this Kafka header (`support:<sub>`), and its verdicts carry it as `issuedBy`.
ISSUED_BY_HEADER = "issued-by"
MAX_ISSUED_BY_CHARS = 4 * MAX_ID_CHARS  # room for a role prefix and a 128-character sub
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def issued_by(headers) -> str | None:
    """The `issued-by` header of a record's headers (the last one, as Kafka clients read a
    header they expect once), None when absent. ValueError when it is not 1 to
    MAX_ISSUED_BY_CHARS characters of UTF-8 text without control characters: the event is
    still decided, its verdicts just name nobody (the caller logs it)."""
    found = None
    for name, value in headers or ():
        if name == ISSUED_BY_HEADER:
            found = value
    if found is None:
        return None
    try:
        text = bytes(found).decode()
    except UnicodeDecodeError:
        raise ValueError("the issued-by header is not UTF-8") from None
    if not 0 < len(text) <= MAX_ISSUED_BY_CHARS or _CONTROL.search(text) is not None:
        raise ValueError(
            f"the issued-by header must be 1 to {MAX_ISSUED_BY_CHARS} characters without control characters"
        )
    return text


class DecodedEvent(NamedTuple):
    type: str
    user_id: str
    session_id: str
    event_id: str | None
    device_id: str | None
    content_id: str | None
    target_session_id: str | None = None
    plan: str | None = None
    device_class: str | None = None


def _required_id(obj: dict, name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise DecodeError("missing_field", f"{name} is required")
    return _checked_id(value, name)


def _checked_id(value: object, name: str, limit: int = MAX_ID_CHARS) -> str:
    if type(value) is not str:
        raise DecodeError("wrong_type", f"{name} must be a string")
    if not value:
        raise DecodeError("empty_id", f"{name} must not be empty")
    if len(value) > limit:
        raise DecodeError("id_too_long", f"{name} is longer than {limit} characters")
    return value


def _optional_text(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is not None and type(value) is not str:
        raise DecodeError("wrong_type", f"{name} must be a string")
    if value is not None and len(value) > MAX_TEXT_CHARS:
        raise DecodeError("id_too_long", f"{name} is longer than {MAX_TEXT_CHARS} characters")
    return value


def _key_mismatch(key: bytes | None, user_id: str) -> DecodeError:
    got = "no key" if key is None else f"key {key[:80]!r}{'...' if len(key) > 80 else ''}"
    return DecodeError(
        "key_mismatch", f"the record key must be the userId {user_id[:80]!r} in UTF-8; the record has {got}"
    )


def decode_event(value: bytes | None, key: bytes | None) -> DecodedEvent:
    """Validate one record (its value, then its key); raise DecodeError naming why it cannot be decided.

    The key must be the userId in UTF-8: the limit is kept per key's partition, so a user
    whose events were keyed otherwise would get a limit per partition.
    """
    if value is None:
        raise DecodeError("not_json", "the record has no value")
    if len(value) > MAX_VALUE_BYTES:
        raise DecodeError("too_large", f"value is {len(value)} bytes, over {MAX_VALUE_BYTES}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", str(exc)) from None
    if type(obj) is not dict:
        raise DecodeError("not_object", "the value must be a JSON object")
    kind = obj.get("type")
    if kind is None:
        raise DecodeError("missing_field", "type is required")
    if kind not in EVENT_TYPES or type(kind) is not str:
        raise DecodeError("unknown_type", "type must be one of start, heartbeat, stop, terminate")
    # Each check passes valid values in one test; the helpers only run to name the error.
    get = obj.get
    user_id = get("userId")
    if type(user_id) is not str or not 0 < len(user_id) <= MAX_ID_CHARS:
        _required_id(obj, "userId")
    session_id = get("sessionId")
    if type(session_id) is not str or not 0 < len(session_id) <= MAX_ID_CHARS:
        _required_id(obj, "sessionId")
    event_id = get("eventId")
    if event_id is not None and (type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_CHARS):
        _checked_id(event_id, "eventId")
    device_id = get("deviceId")
    if device_id is not None and (type(device_id) is not str or len(device_id) > MAX_TEXT_CHARS):
        _optional_text(obj, "deviceId")
    content_id = get("contentId")
    if content_id is not None and (type(content_id) is not str or len(content_id) > MAX_TEXT_CHARS):
        _optional_text(obj, "contentId")
    ts = get("ts")
    if ts is not None and type(ts) not in (int, float):
        raise DecodeError("wrong_type", "ts must be a number")
    plan = get("plan")
    if plan is not None and (type(plan) is not str or not 0 < len(plan) <= MAX_PLAN_CHARS):
        _checked_id(plan, "plan", MAX_PLAN_CHARS)
    device_class = get("deviceClass")
    if device_class is not None and (
        type(device_class) is not str or not 0 < len(device_class) <= MAX_CLASS_CHARS
    ):
        _checked_id(device_class, "deviceClass", MAX_CLASS_CHARS)
    target = None
    if kind == "terminate":
        target = get("targetSessionId")
        if type(target) is not str or not 0 < len(target) <= MAX_ID_CHARS:
            _required_id(obj, "targetSessionId")
    # Last, so that a bad value keeps its own error.
    if key is None or key != user_id.encode():
        raise _key_mismatch(key, user_id)
    return DecodedEvent(
        kind, user_id, session_id, event_id, device_id, content_id, target, plan, device_class
    )
