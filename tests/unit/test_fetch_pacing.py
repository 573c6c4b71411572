"""FetchPacing against the aiokafka installed: the private fetcher attributes it writes still
exist and still go into the fetch requests aiokafka sends.

aiokafka has no public setter for fetch.max.wait.ms / fetch.min.bytes, so processor/consumer.py
writes its fetcher's `_fetch_max_wait_ms` and `_fetch_min_bytes`. An aiokafka that renames or
stops reading them would silently turn gathering off (FetchPacing then only logs). No broker is
needed: the fetcher is aiokafka's own, built over a cluster metadata that names a leader, and
the requests checked are the ones its own builder makes, encoded for the wire.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol import fetch as fetch_protocol
from aiokafka.protocol.metadata import MetadataResponse_v0

from processor.config import Settings
from processor.consumer import FetchPacing, events_consumer
from processor.cycle import CyclePolicy

pytestmark = pytest.mark.unit

TP = TopicPartition("playback.events", 0)
POLICY = CyclePolicy(gather_ms=50, gather_bytes=32 * 1024, idle_wait_ms=500, commit_interval_s=1.0)
# The newest fetch request encoding aiokafka defines: what goes to a current broker.
NEWEST_FETCH = max(
    (cls for name, cls in vars(fetch_protocol).items() if name.startswith("FetchRequest_v")),
    key=lambda cls: cls.API_VERSION,
)


@pytest.fixture
async def consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """The processor's own consumer, never started, given the fetcher start() would build."""
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        fetch_max_wait_ms=POLICY.idle_wait_ms,
        jwt_secret="a-long-random-test-secret-0123456789",
    )
    kafka = events_consumer(settings)
    # start() connects, then keeps its fetcher here: the attribute FetchPacing looks up.
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)
    client, subscription = kafka._client, kafka._subscription
    kafka._fetcher = Fetcher(client, subscription, fetch_min_bytes=1, fetch_max_wait_ms=POLICY.idle_wait_ms)
    # Its background routine stopped before it runs: the requests are built here, none sent.
    await kafka._fetcher.close()
    client.cluster.update_metadata(
        MetadataResponse_v0(brokers=[(1, "127.0.0.1", 1)], topics=[(0, TP.topic, [(0, 0, 1, [1], [1])])])
    )
    subscription.assign_from_user({TP})
    subscription.seek(TP, 42)
    yield kafka
    await kafka.stop()


def sent_fetch_waits(kafka: AIOKafkaConsumer) -> set[tuple[int, int]]:
    """(max_wait_time, min_bytes) of the fetch requests aiokafka's builder makes now, as encoded."""
    fetcher = kafka._fetcher
    requests = fetcher._get_actions_per_node(kafka._subscription.subscription.assignment)[0]
    assert requests, "aiokafka built no fetch request for an assigned partition with a leader"
    encoded = [request.build(NEWEST_FETCH) for _node, request in requests]
    return {(wire.max_wait_time, wire.min_bytes) for wire in encoded}


async def test_gathering_and_idle_settings_reach_the_fetch_requests(consumer: AIOKafkaConsumer):
    pacing = FetchPacing(consumer, POLICY)
    assert sent_fetch_waits(consumer) == {(500, 1)}  # as configured, before any pacing
    pacing.set(idle=False)
    assert sent_fetch_waits(consumer) == {(POLICY.gather_ms, POLICY.gather_bytes)}
    pacing.set(idle=True)
    assert sent_fetch_waits(consumer) == {(POLICY.idle_wait_ms, 1)}


async def test_a_fetcher_without_the_attributes_is_left_alone_and_logged_once(
    consumer: AIOKafkaConsumer, caplog: pytest.LogCaptureFixture
):
    """The fallback the class promises: an aiokafka without them keeps its idle settings."""
    real = consumer._fetcher
    consumer._fetcher = object()  # a fetcher of another aiokafka, without those attributes
    pacing = FetchPacing(consumer, POLICY)
    with caplog.at_level(logging.WARNING, logger="processor"):
        pacing.set(idle=False)
        pacing.set(idle=False)  # unchanged: not logged again
    consumer._fetcher = real
    assert [r.getMessage() for r in caplog.records] == [
        "this aiokafka's fetcher cannot be paced: cycles do not gather"
    ]
    assert sent_fetch_waits(consumer) == {(500, 1)}
