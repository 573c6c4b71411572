"""The verifier's check of the dead-letter topic: each bad record once, with its own error,
and its key, value and headers as received (original headers named like the processor's
kept as `original.<name>`; a truncated copy a prefix of the value)."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from producer_sim.verifier import Verifier

VALID = b'{"type":"start","userId":"u1","sessionId":"s1"}'


def record(topic: str, offset: int, key: bytes | None, value: bytes | None, headers: list) -> ConsumerRecord:
    return ConsumerRecord(
        topic, 0, offset, 1000, 0, key, value, None, len(key or b""), len(value or b""), headers
    )


def source(offset: int) -> list[tuple[str, bytes]]:
    return [("source.topic", b"ev"), ("source.partition", b"0"), ("source.offset", str(offset).encode())]


# offset 0: a valid value under another user's key; offset 1: not JSON
EVENTS = [
    record("ev", 0, b"u2", VALID, [("error", b"spoof"), ("trace", b"t")]),
    record("ev", 1, b"x", b"garbage", []),
]
TRACE = ("trace", b"t")
KEY_MISMATCH_COPY = (
    b"u2",
    VALID,
    [("error", b"key_mismatch"), *source(0), ("original.error", b"spoof"), ("trace", b"t")],
)
NOT_JSON_COPY = (b"x", b"garbage", [("error", b"not_json"), *source(1)])


def verify(*copies: tuple[bytes | None, bytes | None, list]) -> Verifier:
    v = Verifier("ev")
    v.feed_events(EVENTS)
    v.feed_dead_letters([record("dlq", i, *copy) for i, copy in enumerate(copies)], "ev")
    return v


def test_a_key_mismatch_is_a_bad_record_and_its_faithful_copies_are_clean() -> None:
    rep = verify(KEY_MISMATCH_COPY, NOT_JSON_COPY).report
    assert (rep.valid_events, rep.bad_records, dict(rep.bad_by_error)) == (
        0,
        2,
        {"key_mismatch": 1, "not_json": 1},
    )
    assert (rep.dlq_unique, rep.dlq_missing, rep.dlq_unexpected, rep.dlq_wrong_error) == (2, 0, 0, 0)
    assert rep.clean


@pytest.mark.parametrize(
    ("copy", "wrong_error", "unexpected"),
    [
        ((b"x", b"garbage", [("error", b"wrong_type"), *source(1)]), 1, 0),
        # the original `error` header kept under its own name: two `error` headers
        ((b"u2", VALID, [("error", b"key_mismatch"), *source(0), ("error", b"spoof"), TRACE]), 1, 1),
        ((b"u2", VALID, [("error", b"key_mismatch"), *source(0), ("original.error", b"spoof")]), 0, 1),
        ((b"u1", VALID, KEY_MISMATCH_COPY[2]), 0, 1),
        ((b"x", b"garbagE", NOT_JSON_COPY[2]), 0, 1),
        ((b"x", b"garb", [*NOT_JSON_COPY[2], ("truncated", b"7")]), 0, 0),
        ((b"x", b"garx", [*NOT_JSON_COPY[2], ("truncated", b"7")]), 0, 1),
        ((b"x", b"garb", [*NOT_JSON_COPY[2], ("truncated", b"4")]), 0, 1),
    ],
    ids=["wrong-error", "spoofable-error", "lost-header", "other-key", "altered-value", "truncated",
         "truncated-altered", "truncated-wrong-size"],
)  # fmt: skip
def test_a_dead_letter_that_differs_from_its_record_is_reported(
    copy, wrong_error: int, unexpected: int
) -> None:
    other = KEY_MISMATCH_COPY if copy[1].startswith(b"gar") else NOT_JSON_COPY  # the other record's copy
    rep = verify(copy, other).report
    assert (rep.dlq_wrong_error, rep.dlq_unexpected) == (wrong_error, unexpected)
    assert rep.clean == (wrong_error == unexpected == 0)
