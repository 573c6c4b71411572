"""The record key is the userId: decode_event's rule of the record, outside the value's model.

The limit is kept per key's partition: events of one user under other keys would be
decided on other partitions, each with its own limit. So a valid value under any key
but its userId in UTF-8 goes to the DLQ as `key_mismatch`; a bad value keeps its own
error whatever its key (operators fix the value first).
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.wire import MAX_TEXT_CHARS, MAX_VALUE_BYTES, DecodeError, PlayerEvent, decode_event

VALID = {"type": "start", "userId": "u-42", "sessionId": "s-9f1c"}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def event(**changes: object) -> dict:
    """VALID with fields changed; a value of `...` removes the field."""
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def code_of(value: bytes | None, key: bytes | None) -> str:
    with pytest.raises(DecodeError) as info:
        decode_event(value, key)
    return info.value.code


def test_key_equal_to_the_user_id_in_utf8_is_accepted() -> None:
    value = json.dumps(event(userId="ü-42"), ensure_ascii=False).encode()
    assert decode_event(value, "ü-42".encode()).user_id == "ü-42"
    # the same userId written as JSON escapes: the key is the decoded userId, not its spelling
    assert decode_event(encode(event(userId="ü-42")), "ü-42".encode()).user_id == "ü-42"


@pytest.mark.parametrize(
    "key",
    [None, b"", b"u-43", b"U-42", b"u-42 ", b" u-42", b"u-42\x00", b"u-4", b"u-421", b"\xff\xfe", b"raw"],
    ids=["none", "empty", "other-user", "case", "trailing-space", "leading-space", "nul", "prefix",
         "longer", "not-utf8", "raw"],
)  # fmt: skip
def test_key_other_than_the_user_id_is_key_mismatch(key: bytes | None) -> None:
    assert code_of(encode(VALID), key) == "key_mismatch"


def test_key_of_the_user_id_in_another_encoding_is_key_mismatch() -> None:
    value = json.dumps(event(userId="é-1"), ensure_ascii=False).encode()
    assert code_of(value, "é-1".encode("latin-1")) == "key_mismatch"
    assert code_of(value, "é-1".encode("utf-16")) == "key_mismatch"


def test_key_mismatch_detail_names_the_user_id_and_the_key() -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(encode(VALID), b"u-43")
    assert "u-42" in info.value.detail and "u-43" in info.value.detail
    with pytest.raises(DecodeError) as info:
        decode_event(encode(VALID), None)
    assert "no key" in info.value.detail


def test_key_mismatch_detail_stays_short_for_a_huge_key() -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(encode(VALID), b"k" * 100_000)
    assert info.value.code == "key_mismatch" and len(info.value.detail) < 300


BAD_VALUES = {
    "not_json": b"{",
    "none": None,
    "not_object": b"[]",
    "missing_field": encode(event(sessionId=...)),
    "wrong_type": encode(event(userId=42)),
    "empty_id": encode(event(userId="")),
    "id_too_long": encode(event(deviceId="d" * (MAX_TEXT_CHARS + 1))),
    "unknown_type": encode(event(type="pause")),
    "too_large": encode(event(pad="p" * MAX_VALUE_BYTES)),
}


@pytest.mark.parametrize("key", [None, b"other", b"u-42"], ids=["no-key", "other-key", "user-key"])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_bad_value_keeps_its_own_error_whatever_the_key(case: str, key: bytes | None) -> None:
    expected = "not_json" if case == "none" else case
    assert code_of(BAD_VALUES[case], key) == expected


# A small world of user ids, so that random keys often hit the userId and often miss it.
USER_IDS = st.sampled_from(["u-42", "ü", "U-42", "", "x" * 129]) | st.text(max_size=4) | st.integers(0, 9)
KEYS = st.none() | st.binary(max_size=4) | USER_IDS.map(lambda u: str(u).encode())


@hsettings(database=None, max_examples=400, deadline=None)
@given(
    obj=st.fixed_dictionaries(
        {"userId": USER_IDS},
        optional={
            "type": st.sampled_from(["start", "stop", "pause"]),
            "sessionId": st.sampled_from(["s", ""]),
        },
    ),
    key=KEYS,
)
@example(obj=VALID, key=b"u-42")
@example(obj=VALID, key=None)
def test_a_record_is_decided_exactly_when_its_value_is_valid_and_its_key_is_the_user_id(
    obj: dict, key: bytes | None
) -> None:
    value = json.dumps(obj, ensure_ascii=False).encode()
    try:
        model: PlayerEvent | None = PlayerEvent.from_json(value)
    except (ValidationError, orjson.JSONDecodeError):
        model = None
    try:
        decoded = decode_event(value, key)
    except DecodeError as exc:
        if model is None:
            assert exc.code != "key_mismatch", value
        else:
            assert exc.code == "key_mismatch" and key != model.userId.encode(), (value, key)
    else:
        assert model is not None and key == model.userId.encode()
        assert decoded.user_id == model.userId
