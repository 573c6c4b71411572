"""Records that can never be decided go to the DLQ unchanged, with headers; the next event is decided."""

from __future__ import annotations

import orjson
import pytest

from tests.harness import Flow

VALID = {"type": "start", "userId": "u1", "sessionId": "s1"}

BAD_INPUT = {
    "not_json": b"{this is not json",
    "not_object": b'["start", "u1", "s1"]',
    "missing_user": orjson.dumps({"type": "start", "sessionId": "s1"}),
    "missing_session": orjson.dumps({"type": "start", "userId": "u1"}),
    "empty_user": orjson.dumps({**VALID, "userId": ""}),
    "over_long_session": orjson.dumps({**VALID, "sessionId": "s" * 129}),
    "unknown_type": orjson.dumps({**VALID, "type": "pause"}),
    "wrong_type": orjson.dumps({**VALID, "userId": 42}),
    "over_64_kib": orjson.dumps({**VALID, "padding": "x" * 70_000}),
}
EXPECTED_ERROR = {
    "not_json": "not_json",
    "not_object": "not_object",
    "missing_user": "missing_field",
    "missing_session": "missing_field",
    "empty_user": "empty_id",
    "over_long_session": "id_too_long",
    "unknown_type": "unknown_type",
    "wrong_type": "wrong_type",
    "over_64_kib": "too_large",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_bad_record_is_dead_lettered_with_headers_and_the_next_event_is_decided(flow: Flow, case: str):
    bad = await flow.send_raw(BAD_INPUT[case], key=b"u1", at=0)
    await flow.send("start", "u1", "s1", at=10, event_id="after-bad")
    [letter] = await flow.wait_dead_letters(1)
    assert letter.value == BAD_INPUT[case] and letter.key == b"u1"
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["error"] == EXPECTED_ERROR[case]
    assert headers["source.topic"] == flow.settings.events_topic
    assert (headers["source.partition"], headers["source.offset"]) == (str(bad.partition), str(bad.offset))
    assert headers["source.timestamp"] == str(flow.t0)
    verdicts = await flow.wait_verdicts(1)
    assert [(v["eventId"], v["reason"]) for v in verdicts] == [("after-bad", "started")]


async def test_only_dead_lettered_records_still_advance_the_committed_offset(flow: Flow):
    for i in range(3):
        await flow.send_raw(b"garbage %d" % i, key=b"k", at=i)
    await flow.wait_dead_letters(3)
    await flow.send("start", "k", "s1", at=10, event_id="valid")
    await flow.wait_verdicts(1)
    assert len(flow.verdicts()) == 1
