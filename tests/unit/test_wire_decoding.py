"""decode_event: the hot-path validator of player events, and its agreement with PlayerEvent.

Every record it refuses goes to the DLQ with `DecodeError.code` as the `error` header, so
the codes are part of what operators see; it must accept exactly the values the documented
model (`processor.wire.PlayerEvent`) accepts, and then only under the key that is the
userId in UTF-8 (a rule of the record, outside the model: tested apart).
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.wire import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_VALUE_BYTES,
    DecodedEvent,
    DecodeError,
    PlayerEvent,
    decode_event,
)

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


# --------------------------------------------------------------------------------------------
# valid events
# --------------------------------------------------------------------------------------------


def test_full_valid_event_decodes_to_all_its_fields() -> None:
    value = encode(
        {
            "type": "heartbeat",
            "userId": "u-42",
            "sessionId": "s-9f1c",
            "deviceId": "tv-livingroom",
            "contentId": "c-7",
            "eventId": "e-5d2a",
            "ts": 1763800000000,
        }
    )
    assert decode(value) == DecodedEvent(
        type="heartbeat",
        user_id="u-42",
        session_id="s-9f1c",
        event_id="e-5d2a",
        device_id="tv-livingroom",
        content_id="c-7",
    )


def test_minimal_event_decodes_with_optional_fields_none() -> None:
    assert decode(encode(VALID)) == DecodedEvent("start", "u-42", "s-9f1c", None, None, None)


@pytest.mark.parametrize("kind", ["start", "heartbeat", "stop"])
def test_each_contract_event_type_is_accepted(kind: str) -> None:
    assert decode(encode(event(type=kind))).type == kind


def test_optional_fields_given_as_null_are_accepted_as_absent() -> None:
    value = encode(event(deviceId=None, contentId=None, eventId=None, ts=None))
    assert decode(value) == DecodedEvent("start", "u-42", "s-9f1c", None, None, None)


def test_unknown_fields_are_ignored() -> None:
    value = encode(event(extra={"nested": [1, 2, {"x": None}]}, future=True, version=2))
    assert decode(value) == decode(encode(VALID))


@pytest.mark.parametrize("ts", [0, -1, 1763800000000, 1.5, 10**30])
def test_numeric_ts_of_any_size_is_accepted(ts: float) -> None:
    assert decode(encode(event(ts=ts))).user_id == "u-42"


def test_ids_of_exactly_128_characters_are_accepted() -> None:
    long_id = "x" * MAX_ID_CHARS
    decoded = decode(encode(event(userId=long_id, sessionId=long_id, eventId=long_id)))
    assert (decoded.user_id, decoded.session_id, decoded.event_id) == (long_id, long_id, long_id)


def test_id_length_counts_characters_not_bytes() -> None:
    long_id = "é" * MAX_ID_CHARS  # 256 UTF-8 bytes, 128 characters
    value = json.dumps(event(userId=long_id), ensure_ascii=False).encode()
    assert decode(value).user_id == long_id


def test_value_of_exactly_64_kib_is_accepted_when_valid() -> None:
    padding_len = MAX_VALUE_BYTES - len(encode(event(pad="")))
    value = encode(event(pad="p" * padding_len))
    assert len(value) == MAX_VALUE_BYTES
    assert decode(value) == decode(encode(VALID))


def test_surrounding_whitespace_is_accepted() -> None:
    assert decode(b"  \n" + encode(VALID) + b"\n ") == decode(encode(VALID))


@pytest.mark.parametrize(
    "text", ["d" * MAX_TEXT_CHARS, "é" * MAX_TEXT_CHARS, ""], ids=["256", "256-2byte", "empty"]
)
def test_device_and_content_ids_of_up_to_256_characters_are_accepted(text: str) -> None:
    value = json.dumps(event(deviceId=text, contentId=text), ensure_ascii=False).encode()
    decoded = decode(value)
    assert (decoded.device_id, decoded.content_id) == (text, text)
    assert model_accepts(value) is not None


# --------------------------------------------------------------------------------------------
# DLQ error codes
# --------------------------------------------------------------------------------------------


def test_none_value_is_not_json() -> None:
    assert code_of(None) == "not_json"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"{",
        b'{"type": "start",}',
        b"\xff\xfe{}",
        encode(VALID) + b" trailing",
        b'{"type":"start","userId":"u","sessionId":"s","ts":NaN}',
        b'{"type":"start","userId":"u","sessionId":"s","ts":Infinity}',
    ],
    ids=[
        "empty",
        "text",
        "truncated",
        "trailing-comma",
        "invalid-utf8",
        "trailing-garbage",
        "nan",
        "infinity",
    ],
)
def test_value_that_is_not_json_is_not_json(value: bytes) -> None:
    assert code_of(value) == "not_json"


@pytest.mark.parametrize(
    "value",
    [b"[]", encode([VALID]), b'"start"', b"42", b"4.2", b"true", b"null"],
    ids=["empty-list", "list-of-event", "string", "int", "float", "bool", "null"],
)
def test_json_that_is_not_an_object_is_not_object(value: bytes) -> None:
    assert code_of(value) == "not_object"


@pytest.mark.parametrize("field", ["type", "userId", "sessionId"])
def test_missing_required_field_is_missing_field(field: str) -> None:
    assert code_of(encode(event(**{field: ...}))) == "missing_field"


@pytest.mark.parametrize("field", ["type", "userId", "sessionId"])
def test_required_field_given_as_null_is_missing_field(field: str) -> None:
    assert code_of(encode(event(**{field: None}))) == "missing_field"


@pytest.mark.parametrize("field", ["userId", "sessionId", "eventId"])
def test_empty_id_is_empty_id(field: str) -> None:
    assert code_of(encode(event(**{field: ""}))) == "empty_id"


@pytest.mark.parametrize("field", ["userId", "sessionId", "eventId"])
def test_id_of_129_characters_is_id_too_long(field: str) -> None:
    assert code_of(encode(event(**{field: "x" * (MAX_ID_CHARS + 1)}))) == "id_too_long"


@pytest.mark.parametrize("kind", ["play", "START", "", " start", "stop "])
def test_type_outside_start_heartbeat_stop_is_unknown_type(kind: str) -> None:
    assert code_of(encode(event(type=kind))) == "unknown_type"


@pytest.mark.parametrize("kind", [True, False, 1, ["start"], {"start": 1}])
def test_type_of_non_string_json_type_is_refused_as_unknown_type(kind: object) -> None:
    assert code_of(encode(event(type=kind))) == "unknown_type"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("userId", 42),
        ("userId", True),
        ("userId", ["u"]),
        ("sessionId", 4.2),
        ("sessionId", {"id": "s"}),
        ("eventId", 7),
        ("eventId", False),
        ("deviceId", 42),
        ("deviceId", True),
        ("contentId", ["c"]),
        ("ts", "1763800000000"),
        ("ts", True),
        ("ts", [1]),
        ("ts", {}),
    ],
)
def test_field_of_wrong_json_type_is_wrong_type(field: str, value: object) -> None:
    assert code_of(encode(event(**{field: value}))) == "wrong_type"


@pytest.mark.parametrize("field", ["deviceId", "contentId"])
@pytest.mark.parametrize("char", ["d", "é"])
def test_device_or_content_id_of_257_characters_is_id_too_long_naming_the_field(
    field: str, char: str
) -> None:
    value = json.dumps(event(**{field: char * (MAX_TEXT_CHARS + 1)}), ensure_ascii=False).encode()
    with pytest.raises(DecodeError) as info:
        decode(value)
    assert info.value.code == "id_too_long"
    assert field in info.value.detail and str(MAX_TEXT_CHARS) in info.value.detail
    assert model_accepts(value) is None


def test_value_one_byte_over_64_kib_is_too_large() -> None:
    padding_len = MAX_VALUE_BYTES + 1 - len(encode(event(pad="")))
    value = encode(event(pad="p" * padding_len))
    assert len(value) == MAX_VALUE_BYTES + 1
    assert code_of(value) == "too_large"


def test_oversized_value_is_too_large_even_when_not_json() -> None:
    assert code_of(b"\xff" * (MAX_VALUE_BYTES + 1)) == "too_large"


def test_decode_error_is_a_value_error_whose_message_starts_with_the_code() -> None:
    with pytest.raises(ValueError, match=r"^missing_field: ") as info:
        decode(encode(event(userId=...)))
    assert isinstance(info.value, DecodeError)
    assert info.value.detail


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
