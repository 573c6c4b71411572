"""decode_event against PlayerEvent on generated input: it accepts exactly what the model
accepts, with equal fields, and on any bytes raises nothing but DecodeError."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from processor.wire import MAX_ID_CHARS, MAX_TEXT_CHARS, DecodedEvent, DecodeError, decode_event
from tests.unit.wire_support import decode, event, key_of, model_accepts

# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

FIELDS = ("type", "userId", "sessionId", "deviceId", "contentId", "eventId", "ts")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    # Non-finite numbers are left out: see test_non_finite_number_is_judged_alike_by_model_and_decoder.
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
id_like = st.one_of(
    st.sampled_from(["", "u", "s-1", "x" * 127, "x" * 128, "x" * 129, "é" * 128, "é" * 129]),
    st.text(min_size=0, max_size=12),
    st.integers(MAX_ID_CHARS - 2, MAX_ID_CHARS + 2).map(lambda n: "i" * n),
)
text_like = st.one_of(
    st.sampled_from(["", "d" * 256, "d" * 257, "é" * 256, "é" * 257]),
    st.integers(MAX_TEXT_CHARS - 2, MAX_TEXT_CHARS + 2).map(lambda n: "t" * n),
)
field_values = {
    "type": st.one_of(st.sampled_from(["start", "heartbeat", "stop", "Start", "", "pause"]), json_values),
    "userId": st.one_of(id_like, json_values),
    "sessionId": st.one_of(id_like, json_values),
    "eventId": st.one_of(id_like, json_values),
    "deviceId": st.one_of(st.text(max_size=200), text_like, json_values),
    "contentId": st.one_of(st.text(max_size=8), text_like, json_values),
    "ts": json_values,
}
VALID_VALUES = {
    "type": st.sampled_from(["start", "heartbeat", "stop"]),
    "userId": st.text(min_size=1, max_size=10),
    "sessionId": st.text(min_size=1, max_size=10),
    "eventId": st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    "deviceId": st.one_of(st.none(), st.text(max_size=10)),
    "contentId": st.one_of(st.none(), st.text(max_size=10)),
    "ts": st.one_of(st.none(), st.integers(0, 2**53), st.floats(allow_nan=False, allow_infinity=False)),
}


@st.composite
def event_objects(draw: st.DrawFn) -> dict:
    """Each field valid (most often), absent, or anything from field_values; plus unknown fields."""
    obj: dict = {}
    for name in FIELDS:
        how = draw(st.sampled_from(["valid", "valid", "valid", "valid", "absent", "any", "any"]))
        if how == "absent":
            continue
        obj[name] = draw(VALID_VALUES[name] if how == "valid" else field_values[name])
    extra = draw(
        st.dictionaries(st.text(max_size=6).filter(lambda k: k not in FIELDS), json_values, max_size=3)
    )
    obj.update(extra)
    return obj


@hsettings(database=None, max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.one_of(event_objects(), json_values), ascii_only=st.booleans())
@example(obj=event(userId=True), ascii_only=True)
@example(obj=event(sessionId=False), ascii_only=True)
@example(obj=event(type=True), ascii_only=True)
@example(obj=event(ts=False), ascii_only=True)
@example(obj=event(eventId="x" * 129), ascii_only=True)
@example(obj=event(deviceId="d" * 257), ascii_only=True)
@example(obj=event(contentId="é" * 257), ascii_only=False)
def test_decoder_accepts_exactly_what_player_event_accepts_with_equal_fields(
    obj: object, ascii_only: bool
) -> None:
    value = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    model = model_accepts(value)
    try:
        decoded = decode(value)
    except DecodeError as exc:
        assert model is None, f"decoder refused ({exc.code}) what PlayerEvent accepts: {value!r}"
        return
    assert model is not None, f"decoder accepted what PlayerEvent refuses: {value!r}"
    assert decoded == DecodedEvent(
        type=model.type,
        user_id=model.userId,
        session_id=model.sessionId,
        event_id=model.eventId,
        device_id=model.deviceId,
        content_id=model.contentId,
    )


def _mutations() -> st.SearchStrategy[bytes]:
    valid = orjson.dumps(event(deviceId="d", eventId="e", ts=1))
    return st.builds(
        lambda cut, insert: valid[:cut] + insert + valid[cut + 1 :],
        st.integers(0, len(valid)),
        st.binary(max_size=4),
    )


DECODE_ERRORS = {
    "not_json",
    "too_large",
    "not_object",
    "missing_field",
    "unknown_type",
    "wrong_type",
    "empty_id",
    "id_too_long",
    "key_mismatch",
}


@hsettings(database=None, max_examples=500, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=200), _mutations()), key=st.none() | st.binary(max_size=8)
)
def test_arbitrary_bytes_never_raise_anything_but_decode_error(
    value: bytes | None, key: bytes | None
) -> None:
    for candidate in (key, key_of(value)):
        try:
            decoded = decode_event(value, candidate)
        except DecodeError as exc:
            assert exc.code in DECODE_ERRORS
        else:
            assert isinstance(decoded, DecodedEvent)


# --------------------------------------------------------------------------------------------
# numbers and nesting that only strict JSON parsing refuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"], ids=["nan", "inf", "-inf", "overflow"]
)
@pytest.mark.parametrize("field", ["ts", "unknownField"])
def test_non_finite_number_is_judged_alike_by_model_and_decoder(field: str, number: bytes) -> None:
    value = b'{"type":"start","userId":"u","sessionId":"s","%s":%s}' % (field.encode(), number)
    model = model_accepts(value)
    try:
        decode(value)
        decoder_accepts = True
    except DecodeError:
        decoder_accepts = False
    assert decoder_accepts == (model is not None)


def test_deeply_nested_unknown_field_is_judged_alike_by_model_and_decoder() -> None:
    depth = 300
    value = b'{"type":"start","userId":"u","sessionId":"s","x":' + b"[" * depth + b"]" * depth + b"}"
    decoder_accepts = True
    try:
        decode(value)
    except DecodeError:
        decoder_accepts = False
    assert decoder_accepts == (model_accepts(value) is not None)
