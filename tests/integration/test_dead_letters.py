"""Records that can never be decided go to the DLQ unchanged, with headers; the next event is decided."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from producer_sim.verifier import committed_offsets
from tests.harness import Flow, wait_until

VALID = {"type": "start", "userId": "u1", "sessionId": "s1"}

# case -> (value, key, expected `error` header)
BAD_INPUT: dict[str, tuple[bytes | None, bytes | None, str]] = {
    "not_json": (b"{this is not json", b"u1", "not_json"),
    "not_object": (b'["start", "u1", "s1"]', b"u1", "not_object"),
    "missing_user": (orjson.dumps({"type": "start", "sessionId": "s1"}), b"u1", "missing_field"),
    "missing_session": (orjson.dumps({"type": "start", "userId": "u1"}), b"u1", "missing_field"),
    "empty_user": (orjson.dumps({**VALID, "userId": ""}), b"u1", "empty_id"),
    "over_long_session": (orjson.dumps({**VALID, "sessionId": "s" * 129}), b"u1", "id_too_long"),
    "over_long_device": (orjson.dumps({**VALID, "deviceId": "d" * 257}), b"u1", "id_too_long"),
    "over_long_content": (orjson.dumps({**VALID, "contentId": "c" * 257}), b"u1", "id_too_long"),
    "unknown_type": (orjson.dumps({**VALID, "type": "pause"}), b"u1", "unknown_type"),
    "wrong_type": (orjson.dumps({**VALID, "userId": 42}), b"u1", "wrong_type"),
    "over_64_kib": (orjson.dumps({**VALID, "padding": "x" * 70_000}), b"u1", "too_large"),
    # A valid value under a key that is not its userId: it would be decided on another
    # partition, against another copy of the limit.
    "key_of_another_string": (orjson.dumps(VALID), b"u2", "key_mismatch"),
    "no_key": (orjson.dumps(VALID), None, "key_mismatch"),
    "key_of_a_bad_value": (orjson.dumps({**VALID, "userId": 42}), b"u2", "wrong_type"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_bad_record_is_dead_lettered_with_headers_and_the_next_event_is_decided(flow: Flow, case: str):
    value, key, error = BAD_INPUT[case]
    bad = await flow.send_raw(value, key=key, at=0)
    await flow.send("start", "u1", "s1", at=10, event_id="after-bad")
    [letter] = await flow.wait_dead_letters(1)
    assert letter.value == value and letter.key == key
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["error"] == error
    assert headers["source.topic"] == flow.settings.events_topic
    assert (headers["source.partition"], headers["source.offset"]) == (str(bad.partition), str(bad.offset))
    assert headers["source.timestamp"] == str(flow.t0)
    verdicts = await flow.wait_verdicts(1)
    # "started", not "already_active": the dead-lettered record (session s1 too in some cases) left no lease.
    assert [(v["eventId"], v["reason"]) for v in verdicts] == [("after-bad", "started")]


async def end_offsets(flow: Flow, topic: str | None = None) -> dict[int, int]:
    """partition -> end offset of `topic` (the events topic by default), empty partitions left out."""
    s = flow.settings
    topic = topic or s.events_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(s.topic_partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items() if offset}


async def committed(flow: Flow) -> dict[int, int]:
    s = flow.settings
    return await committed_offsets(s.kafka_bootstrap_servers, s.consumer_group, s.events_topic)


async def wait_committed(flow: Flow, want: dict[int, int]) -> None:
    """Until the group's committed offsets are `want` (partitions without records left out)."""
    got: dict[int, int] = {}

    async def reached() -> bool:
        nonlocal got
        got = {p: o for p, o in (await committed(flow)).items() if o}
        return got == want

    try:
        await wait_until(reached, 30, interval=0.1, what=f"committed offsets {want}")
    except TimeoutError as exc:
        raise AssertionError(f"committed offsets {got}, expected {want}") from exc


async def test_only_dead_lettered_records_still_advance_the_committed_offset(flow: Flow):
    metas = [await flow.send_raw(b"garbage %d" % i, key=b"k", at=i) for i in range(3)]
    [partition] = {m.partition for m in metas}
    assert [m.offset for m in metas] == [0, 1, 2]
    await flow.wait_dead_letters(3)
    # Nothing but dead letters on the partition, and its offset is committed past all three.
    await wait_committed(flow, {partition: 3})
    await flow.send("start", "k", "s1", at=10, event_id="valid")
    await flow.wait_verdicts(1)
    await wait_committed(flow, {partition: 4})
    assert await end_offsets(flow) == {partition: 4}
    assert len(flow.verdicts()) == 1 and len(await flow.wait_dead_letters(3)) == 3


def keys_over_all_partitions(count: int, partitions: int, not_key: bytes) -> list[bytes]:
    """`count` keys, spread evenly over the partitions (as aiokafka places them)."""
    partitioner, every = DefaultPartitioner(), list(range(partitions))
    per_partition: dict[int, list[bytes]] = {p: [] for p in every}
    i = 0
    while sum(len(v) for v in per_partition.values()) < count:
        key = f"{not_key.decode()}-device-{i}".encode()
        p = partitioner(key, every, every)
        if len(per_partition[p]) < -(-count // partitions):
            per_partition[p].append(key)
        i += 1
    return [k for p in every for k in per_partition[p]][:count]


async def test_records_of_one_user_keyed_by_8_other_strings(flow: Flow):
    """The limit is kept per key's partition: keyed otherwise, a user would get 3 streams per
    partition. Of 9 starts of user u1 (limit 3), only the one keyed u1 is decided."""
    assert flow.settings.max_streams == 3
    wrong_keys = keys_over_all_partitions(8, flow.settings.topic_partitions, b"u1")
    assert len(set(wrong_keys)) == 8
    for i, key in enumerate(wrong_keys):
        await flow.send_raw(orjson.dumps({**VALID, "sessionId": f"s{i}", "eventId": f"e{i}"}), key=key, at=i)
    await flow.send("start", "u1", "s8", at=8, event_id="e8")
    letters = await flow.wait_dead_letters(8)
    await flow.wait_verdicts(1)
    await wait_committed(flow, await end_offsets(flow))  # every record handled
    # Counted on the topics themselves (end offsets), not on what the readers got so far.
    assert sum((await end_offsets(flow, flow.settings.verdicts_topic)).values()) == 1
    assert sum((await end_offsets(flow, flow.settings.dlq_topic)).values()) == 8
    [verdict] = flow.verdicts()
    assert (verdict["eventId"], verdict["decision"], verdict["reason"]) == ("e8", "allow", "started")
    assert verdict["activeStreams"] == 1
    assert sorted(letter.key for letter in letters) == sorted(wrong_keys)
    assert {dict(letter.headers)["error"] for letter in letters} == {b"key_mismatch"}


async def test_a_record_produced_to_another_partition_than_its_keys_is_dead_lettered(flow: Flow):
    """Right key, wrong partition: deciding it there would keep a second copy of the user's limit."""
    s = flow.settings
    every = list(range(s.topic_partitions))
    home = DefaultPartitioner()(b"u1", every, every)
    elsewhere = (home + 1) % s.topic_partitions
    producer = flow._producer
    assert producer is not None
    for n, partition in enumerate((elsewhere, home)):
        value = orjson.dumps({**VALID, "sessionId": f"s{n}", "eventId": f"p{partition}"})
        await producer.send_and_wait(
            s.events_topic, key=b"u1", value=value, partition=partition, timestamp_ms=flow.t0 + n
        )
    verdicts = await flow.wait_events(f"p{home}")
    letters = await flow.wait_dead_letters(1)
    assert [dict(r.headers)["error"] for r in letters] == [b"key_mismatch"]
    assert dict(letters[0].headers)["source.partition"] == str(elsewhere).encode()
    assert not any(v["eventId"] == f"p{elsewhere}" for v in verdicts)


async def test_with_the_partition_check_off_a_user_kept_on_another_partition_is_decided(flow_factory):
    """CHECK_EVENT_PARTITION=false: for producers that keep each user on one partition by a rule
    none of EVENT_PARTITIONER's hashes follows (librdkafka's CRC32 is EVENT_PARTITIONER=crc32)."""
    async with flow_factory(check_event_partition=False) as flow:
        await flow.start_processor()
        s = flow.settings
        every = list(range(s.topic_partitions))
        elsewhere = (DefaultPartitioner()(b"u1", every, every) + 1) % s.topic_partitions
        assert flow._producer is not None
        value = orjson.dumps({**VALID, "eventId": "other-hash"})
        await flow._producer.send_and_wait(
            s.events_topic, key=b"u1", value=value, partition=elsewhere, timestamp_ms=flow.t0
        )
        verdicts = await flow.wait_events("other-hash")
        assert [v["reason"] for v in verdicts if v["eventId"] == "other-hash"] == ["started"]
