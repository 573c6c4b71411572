"""decode_event: the hot-path validator of player events, and its agreement with PlayerEvent.

Every record it refuses goes to the DLQ with `DecodeError.code` as the `error` header, so
the codes are part of what operators see; it must accept exactly the values the documented
model (`processor.wire.PlayerEvent`) accepts, and then only under the key that is the
userId in UTF-8 (a rule of the record, outside the model: tested apart).

Properties (agreement with PlayerEvent on generated input) and strict JSON numbers:
test_wire_decoding_properties.py.
"""

from __future__ import annotations

import json

import pytest

from processor.wire import MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_VALUE_BYTES, DecodedEvent, DecodeError
from tests.unit.wire_support import VALID, code_of, decode, encode, event, model_accepts

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
