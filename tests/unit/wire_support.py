"""Shared by the decode_event tests: events as a correct producer writes and keys them."""

from __future__ import annotations

import json

import orjson
import pytest
from pydantic import ValidationError

from processor.wire import DecodedEvent, DecodeError, PlayerEvent, decode_event

VALID = {"type": "start", "userId": "u-42", "sessionId": "s-9f1c"}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def event(**changes: object) -> dict:
    """VALID with fields changed; a value of `...` removes the field."""
    out = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def key_of(value: bytes | None) -> bytes | None:
    """The key a correct producer gives the record: its userId in UTF-8 (None without a string one)."""
    try:
        obj = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    user_id = obj.get("userId") if type(obj) is dict else None
    return user_id.encode() if type(user_id) is str else None


def decode(value: bytes | None) -> DecodedEvent:
    """decode_event keyed as a correct producer keys: the tests of the value alone."""
    return decode_event(value, key_of(value))


_DERIVED = object()


def code_of(value: bytes | None, key: object = _DERIVED) -> str:
    with pytest.raises(DecodeError) as info:
        decode_event(value, key_of(value) if key is _DERIVED else key)  # type: ignore[arg-type]
    return info.value.code


def model_accepts(value: bytes) -> PlayerEvent | None:
    try:
        return PlayerEvent.from_json(value)
    except (ValidationError, orjson.JSONDecodeError):
        return None
