"""Records of an aborted Kafka transaction did not happen (contract, "Delivery guarantees"): the
processor reads the events and policies topics read_committed."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaProducer

from processor.partitioning import ProducerPartitioner
from tests.harness import Flow, only


async def _transactional(flow: Flow) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=flow.bootstrap,
        transactional_id=f"tx-{uuid.uuid4().hex[:10]}",
        partitioner=ProducerPartitioner(flow.settings.event_partitioner),
    )
    await producer.start()
    return producer


def _event(kind: str, user: str, session: str, event_id: str) -> bytes:
    return orjson.dumps({"type": kind, "userId": user, "sessionId": session, "eventId": event_id})


async def test_events_of_an_aborted_transaction_are_never_decided(kafka_bootstrap, redis_url):
    async with Flow(kafka_bootstrap, redis_url, partitions=2) as flow:
        await flow.start_processor()
        events = flow.settings.events_topic
        producer = await _transactional(flow)
        try:
            # Three starts that fill the user's three slots, written and then aborted.
            await producer.begin_transaction()
            for i in range(3):
                value = _event("start", "tx-user", f"aborted-{i}", f"aborted-{i}")
                await producer.send(events, value, key=b"tx-user", timestamp_ms=flow.t0 + i)
            await producer.flush()  # in the log, then aborted
            await producer.abort_transaction()
            # The same transactional producer then commits one start.
            await producer.begin_transaction()
            await producer.send(
                events, _event("start", "tx-user", "kept", "kept"), key=b"tx-user", timestamp_ms=flow.t0 + 10
            )
            await producer.commit_transaction()
        finally:
            await producer.stop()
        await flow.send("start", "tx-user", "after", at=20, event_id="after")  # a plain one behind

        verdicts = await flow.wait_events("kept", "after")
        decided = {v["eventId"] for v in verdicts}
        assert not decided & {"aborted-0", "aborted-1", "aborted-2"}, verdicts
        # Had the aborted starts been decided, they would hold every slot and these be rejected.
        assert only(verdicts, "kept")["decision"] == "allow"
        assert only(verdicts, "after")["decision"] == "allow"


async def test_a_policy_of_an_aborted_transaction_is_never_applied(kafka_bootstrap, redis_url):
    async with Flow(kafka_bootstrap, redis_url, partitions=1) as flow:
        await flow.send_policy("default", {"maxStreams": 3})
        await flow.start_processor()
        producer = await _transactional(flow)
        try:
            await producer.begin_transaction()
            await producer.send(
                flow.settings.policies_topic, orjson.dumps({"maxStreams": 1}), key=b"user:tx-vip"
            )
            await producer.abort_transaction()
        finally:
            await producer.stop()
        # A committed policy after it: once it is in force, the follower has read past the abort.
        await flow.send_policy("user:tx-other", {"maxStreams": 2})
        await flow.wait_policy("tx-other", "user:tx-other", 2, at=1)
        await flow.wait_policy("tx-vip", "default", 3, at=2, timeout=5)
