"""No record stalls the processor, DLQ headers cannot be spoofed, and a recreated events
topic is halted like lost state (issue 12, points 3, 4 and 5)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis import exceptions as redis_errors

from processor.lease_store import LeaseStore
from tests.harness import Flow, wait_until

# Just under the producer's 1 MiB request limit: the record itself fits the broker, its DLQ
# copy (the same value plus the processor's headers) does not.
NEAR_LIMIT_VALUE = b"x" * 1_048_400


async def get(port: int, path: str) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body) if body.startswith(b"{") else {}


async def test_a_record_whose_dlq_copy_exceeds_the_request_limit_is_written_truncated_and_nothing_stalls(
    flow: Flow,
):
    producer = AIOKafkaProducer(bootstrap_servers=flow.bootstrap)
    await producer.start()
    try:
        big = await producer.send_and_wait(
            flow.settings.events_topic, key=b"u1", value=NEAR_LIMIT_VALUE, timestamp_ms=flow.t0
        )
    finally:
        await producer.stop()
    await flow.send("start", "u1", "s1", at=10, event_id="after-big")
    [verdict] = await flow.wait_verdicts(1)
    assert (verdict["eventId"], verdict["reason"]) == ("after-big", "started")
    [letter] = await flow.wait_dead_letters(1)
    headers = dict(letter.headers)
    assert headers["error"] == b"too_large"
    assert headers["truncated"] == str(len(NEAR_LIMIT_VALUE)).encode()
    assert headers["source.offset"] == str(big.offset).encode()
    assert 0 < len(letter.value) < len(NEAR_LIMIT_VALUE) and NEAR_LIMIT_VALUE.startswith(letter.value)


async def test_a_dlq_copy_that_fits_is_not_marked_truncated(flow: Flow):
    await flow.send_raw(b"{broken", key=b"u1", at=0)
    [letter] = await flow.wait_dead_letters(1)
    assert letter.value == b"{broken"
    assert "truncated" not in dict(letter.headers)


async def test_original_headers_named_like_the_processors_are_kept_as_original_dot_name(flow: Flow):
    producer = AIOKafkaProducer(bootstrap_servers=flow.bootstrap)
    await producer.start()
    spoofed = [
        ("error", b"none"),
        ("source.offset", b"999999"),
        ("truncated", b"1"),
        ("original.error", b"nested"),
        ("trace-id", b"t-1"),
    ]
    try:
        await producer.send_and_wait(
            flow.settings.events_topic, key=b"u1", value=b"not json", headers=spoofed, timestamp_ms=flow.t0
        )
    finally:
        await producer.stop()
    [letter] = await flow.wait_dead_letters(1)
    names = [name for name, _ in letter.headers]
    headers = dict(letter.headers)
    assert names.count("error") == 1 and headers["error"] == b"not_json"
    assert names.count("source.offset") == 1 and headers["source.offset"] != b"999999"
    assert "truncated" not in headers
    assert headers["original.error"] == b"none"
    assert headers["original.source.offset"] == b"999999"
    assert headers["original.truncated"] == b"1"
    assert headers["original.original.error"] == b"nested"
    assert headers["trace-id"] == b"t-1"


async def test_a_verdicts_topic_that_refuses_every_record_is_classified_counted_and_shown_on_health(
    flow: Flow,
):
    [running] = flow._running
    port = running.processor.http_port
    admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
    await admin.start()
    topic = flow.settings.verdicts_topic
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "64"})]
        )

        async def in_force() -> bool:  # alter_configs answers before the broker applies it
            [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return {e[0]: e[1] for e in resp.resources[0][4]}.get("max.message.bytes") == "64"

        await wait_until(in_force, 10, interval=0.05, what="max.message.bytes=64 in force")
        await flow.send("start", "u1", "s1", at=0, event_id="while-refused")

        async def health_says_failing():
            status, body = await get(port, "/health")
            return (status, body) if status == 503 and "publishError" in body else None

        _, body = await wait_until(health_says_failing, 30, interval=0.2, what="/health naming the error")
        assert body["publishError"]["kind"] == "record_too_large"
        assert body["publishError"]["attempts"] >= 1
        metrics = running.processor.metrics
        assert metrics.publish_errors.labels("record_too_large")._value.get() >= 1
        assert flow.verdicts() == []
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={})])
        [verdict] = await flow.wait_verdicts(1)
        assert verdict["eventId"] == "while-refused"
        await wait_until(lambda: running.processor.health()[0], 30, what="/health UP again")
        assert "publishError" not in running.processor.health()[1]
    finally:
        await admin.close()


async def test_a_recreated_events_topic_is_halted_like_lost_state_until_accepted(flow_factory):
    async with flow_factory(partitions=1) as flow:
        running = await flow.start_processor()
        for i in range(5):
            await flow.send("start", f"u{i}", "s1", at=i, event_id=f"old-{i}")
        await flow.wait_verdicts(5)
        await running.stop()
        topic = flow.settings.events_topic
        admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await wait_until(lambda: _gone(admin, topic), 30, what="events topic deleted")
            await wait_until(lambda: _created(admin, topic), 30, what="events topic recreated")
        finally:
            await admin.close()
        await flow.send("start", "u9", "s1", at=100, event_id="new-0")  # offset 0 of the new log

        halted = flow.launch_processor()
        processor = halted.processor
        await wait_until(lambda: processor.halted_partitions and processor._consuming, what="halt")
        ok, body = processor.health()
        assert not ok and body["stateLostPartitions"] == [0]
        assert body["haltReasons"] == {"0": "events_topic_recreated"}
        assert processor.metrics.state_lost.labels("0", "events_topic_recreated")._value.get() == 1
        await asyncio.sleep(1)
        assert "new-0" not in flow.verdicts_by_event()  # not answered as a replay, not decided
        await halted.stop()

        await flow.start_processor(accept_state_loss=True)
        await wait_until(lambda: "new-0" in flow.verdicts_by_event(), 30, what="the new log decided")
        [verdict] = flow.verdicts_by_event()["new-0"]
        assert verdict["reason"] == "started"


async def _gone(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def _created(admin: AIOKafkaAdminClient, topic: str) -> bool:
    result = await admin.create_topics([NewTopic(topic, 1, 1)])
    code = result.topic_errors[0][1]
    return code in (0, 36)  # created, or already exists (a retry after a slow create)


async def test_a_claim_that_fails_mid_rebalance_halts_the_partition_and_is_retried(flow_factory, monkeypatch):
    # Without the retry, aiokafka swallows the error and the partition stays paused, unseen.
    calls = {"n": 0}
    original = LeaseStore.claim

    async def refused_once(self, partition: int):
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis_errors.ResponseError("simulated: the claim is refused once")
        return await original(self, partition)

    monkeypatch.setattr(LeaseStore, "claim", refused_once)
    async with flow_factory(partitions=1) as flow:
        await flow.send("start", "u1", "s1", at=0, event_id="after-refused-claim")
        running = flow.launch_processor()
        await wait_until(
            lambda: "after-refused-claim" in flow.verdicts_by_event(),
            30,
            what="decided after the retried claim",
        )
        assert calls["n"] == 2
        assert running.processor.health()[0]


async def test_a_publish_that_cannot_complete_turns_readiness_down_naming_it(flow: Flow):
    # The verdicts topic is gone: the producer waits for its metadata inside aiokafka until its
    # request timeout (40 s) before the publisher sees an error; readiness must not say UP
    # meanwhile (a broker away, or NOT_ENOUGH_REPLICAS retried by the producer, look the same).
    [running] = flow._running
    processor = running.processor
    s = flow.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([s.verdicts_topic])
        await wait_until(lambda: _gone(admin, s.verdicts_topic), 30, what="verdicts topic deleted")
        await flow.send("start", "u1", "s1", at=0, event_id="while-unpublishable")

        def down_naming_the_publish() -> dict | None:
            ok, body = processor.health()
            return body if not ok and body.get("stuck", {}).get("what") == "publish" else None

        body = await wait_until(down_naming_the_publish, 25, interval=0.2, what="/health naming the publish")
        assert body["stuck"]["since"].endswith("Z")
        assert processor.live()[0]  # the loop is alive: not restarted
        result = await admin.create_topics([NewTopic(s.verdicts_topic, s.topic_partitions, 1)])
        assert result.topic_errors[0][1] == 0
        await wait_until(lambda: processor.health()[0], 120, what="/health UP again")
    finally:
        await admin.close()
