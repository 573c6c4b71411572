"""Replies to the requester: `reply.topic` / `reply.partition` headers, through the real services."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.harness import only, revokes, wait_until
from tests.integration.test_terminate_and_advice import rewind_group


def reply_headers(topic: str, partition: int | str) -> list[tuple[str, bytes]]:
    return [("reply.topic", topic.encode()), ("reply.partition", str(partition).encode())]


async def read_partition(bootstrap: str, topic: str, partition: int, at_least: int, settle: float = 0.0):
    """The records of one partition from its start, once there are `at_least` (then `settle` s more)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)

        async def fetch() -> bool:
            for recs in (await consumer.getmany(tp, timeout_ms=100)).values():
                records.extend(recs)
            return len(records) >= at_least

        await wait_until(fetch, 30, interval=0, what=f"{at_least} records on {topic}/{partition}")
        loop = asyncio.get_running_loop()
        end = loop.time() + settle
        while loop.time() < end:
            await fetch()
    finally:
        await consumer.stop()
    return records


def counter(processor, outcome: str) -> float:
    return processor.metrics.replies.labels(outcome)._value.get()


async def test_every_verdict_of_an_event_is_copied_to_its_reply_partition_same_key_same_bytes(
    flow_factory, topic_factory
):
    replies = await topic_factory(partitions=3, prefix="replies")
    async with flow_factory(max_streams=1, overflow_policy="evict_oldest") as flow:
        await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="a", headers=reply_headers(replies, 2))
        await flow.send("start", "u1", "s2", at=10, event_id="b", headers=reply_headers(replies, 2))
        await flow.send("heartbeat", "u1", "s2", at=20, event_id="c")  # no headers: no reply
        verdicts = await flow.wait_events("a", "b", "c")
        assert len(revokes(verdicts, "b")) == 1
        got = await read_partition(flow.bootstrap, replies, 2, at_least=3, settle=1.0)
    on_verdicts = [
        (r.key, r.value) for r in flow.verdict_records() if orjson.loads(r.value)["eventId"] in ("a", "b")
    ]
    # Its own verdict and its revoke, in the order they were produced, byte for byte.
    assert [(r.key, r.value) for r in got] == on_verdicts
    assert [orjson.loads(r.value)["eventId"] for r in got] == ["a", "b", "b"]
    for other in (0, 1):
        assert await _end_offset(flow.bootstrap, replies, other) == 0


async def _end_offset(bootstrap: str, topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_a_redelivered_event_is_replied_again_identically(flow_factory, topic_factory):
    replies = await topic_factory(partitions=1, prefix="replies")
    async with flow_factory() as flow:
        first = await flow.start_processor()
        await flow.send("start", "u1", "s1", at=0, event_id="a", headers=reply_headers(replies, 0))
        await flow.wait_events("a")
        await read_partition(flow.bootstrap, replies, 0, at_least=1)
        await first.stop()
        await rewind_group(flow)
        await flow.start_processor()
        await flow.wait_verdicts(2)
        got = await read_partition(flow.bootstrap, replies, 0, at_least=2)
    assert len(got) == 2 and got[0].value == got[1].value and got[0].key == got[1].key == b"u1"


async def test_a_missing_reply_topic_or_a_bad_header_sends_no_reply_and_stalls_nothing(
    flow_factory, topic_factory
):
    replies = await topic_factory(partitions=2, prefix="replies")
    missing = f"{replies}-missing"
    bad = [
        ("bad-partition", reply_headers(replies, "one")),
        ("out-of-range", reply_headers(replies, 7)),
        ("topic-only", [("reply.topic", replies.encode())]),
        ("not-a-name", reply_headers("no spaces/here", 0)),
        ("not-utf8", [("reply.topic", b"\xff\xfe"), ("reply.partition", b"0")]),
        ("twice", reply_headers(replies, 0) + reply_headers(replies, 1)),
        ("missing-topic", reply_headers(missing, 0)),
    ]
    async with flow_factory() as flow:
        running = await flow.start_processor()
        for i, (name, headers) in enumerate(bad):
            await flow.send("start", f"u-{name}", "s1", at=i, event_id=name, headers=headers)
        await flow.send("start", "u-good", "s1", at=100, event_id="good", headers=reply_headers(replies, 1))
        verdicts = await flow.wait_events(*(name for name, _h in bad), "good")
        assert all(only(verdicts, name)["reason"] == "started" for name, _h in bad)
        got = await read_partition(flow.bootstrap, replies, 1, at_least=1, settle=1.0)
        assert [orjson.loads(r.value)["eventId"] for r in got] == ["good"]
        assert await _end_offset(flow.bootstrap, replies, 0) == 0
        processor = running.processor
        assert counter(processor, "bad_header") == 5
        assert counter(processor, "unknown_partition") == 1
        assert counter(processor, "unknown_topic") == 1
        assert counter(processor, "sent") == 1
    admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()  # never auto-created
    finally:
        await admin.close()


async def test_replies_go_only_to_allowed_topics_never_to_the_processors_own_or_internal_ones(
    flow_factory, topic_factory
):
    other = await topic_factory(partitions=1, prefix="other-app")  # exists, but not a reply topic
    async with flow_factory() as flow:
        s = flow.settings
        running = await flow.start_processor()
        targets = {
            "policies": s.policies_topic,  # a verdict there would read as a policy: limits rewritten
            "events": s.events_topic,  # a verdict there would come back as an event
            "verdicts": s.verdicts_topic,
            "dlq": s.dlq_topic,
            "offsets": "__consumer_offsets",
            "other": other,
        }
        await flow.send_policy("default", {"maxStreams": 2})
        await flow.wait_policy("probe-user", "default", 2)
        ends_before = {name: await _end_offset(flow.bootstrap, topic, 0) for name, topic in targets.items()}
        for name, topic in targets.items():
            headers = reply_headers(topic, 0)
            await flow.send("start", "default", f"s-{name}", at=1000, event_id=name, headers=headers)
        await flow.wait_events(*targets)
        for name, topic in targets.items():
            if name != "offsets":  # every consumer group's commits land there: its end moves anyway
                assert await _end_offset(flow.bootstrap, topic, 0) == ends_before[name], name
        assert counter(running.processor, "refused_topic") == len(targets)
        # The `default` policy is still the operator's.
        await flow.wait_policy("probe-user-2", "default", 2, at=2000)
