"""EVENT_PARTITIONER against librdkafka's own partitioners, through real Kafka.

confluent-kafka (librdkafka) produces the events with `murmur2_random` (Java's hash),
`consistent_random` (CRC32, its default) or `fnv1a_random` (Sarama's hash). Against a
processor set to the matching hash, librdkafka puts every key where processor/partitioning.py
says, and the reference model (the offline verifier's replay of the whole events topic)
agrees with every verdict. Against a processor set to another hash, each record its key does
not hash to is dead-lettered as `key_mismatch`, with the partition it belongs in and the
setting to change, counted, and warned about once; the others are decided.
"""

from __future__ import annotations

import asyncio
import logging
import random

import httpx
import orjson
import pytest
from confluent_kafka import KafkaException, Producer

from processor.partitioning import EVENT_PARTITIONERS, fnv1a_32, partition_for
from producer_sim.verifier import committed_offsets, run_verifier
from tests.gateway_harness import bearer, running_gateway
from tests.harness import Flow, wait_until

# librdkafka's `partitioner` -> the EVENT_PARTITIONER that matches it.
LIBRDKAFKA = {"murmur2_random": "murmur2", "consistent_random": "crc32", "fnv1a_random": "fnv1a"}
PARTITIONS = 6
EVENTS = 300


def player_events(seed: int = 23) -> list[tuple[bytes, bytes, int]]:
    """(key, value, ms after t0) of 40 users' starts, heartbeats, stops and terminates, a
    second apart: 300 s, so leases also expire (the ledger) along the way."""
    rng = random.Random(seed)
    out = []
    for i in range(EVENTS):
        user = f"user-{rng.randrange(40)}"
        kind = rng.choices(["start", "heartbeat", "stop", "terminate"], [5, 3, 2, 1])[0]
        event = {"type": kind, "userId": user, "sessionId": f"s{rng.randrange(5)}", "eventId": f"e{i}"}
        if kind == "terminate":
            event["targetSessionId"] = f"s{rng.randrange(5)}"
        out.append((user.encode(), orjson.dumps(event), i * 1000))
    return out


def produce_with_librdkafka(
    flow: Flow, partitioner: str, events: list[tuple[bytes, bytes, int]]
) -> list[tuple[int, int]]:
    """Produce keyed, letting librdkafka's `partitioner` choose; (partition, offset) of each."""
    producer = Producer(
        {
            "bootstrap.servers": flow.bootstrap,
            "partitioner": partitioner,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    placed: list[tuple[int, int] | None] = [None] * len(events)
    errors: list[object] = []

    def delivered(i: int):
        def report(err, msg) -> None:
            if err is not None:
                errors.append(err)
            else:
                placed[i] = (msg.partition(), msg.offset())

        return report

    for i, (key, value, at) in enumerate(events):
        producer.produce(
            flow.settings.events_topic, value=value, key=key, timestamp=flow.t0 + at, on_delivery=delivered(i)
        )
        producer.poll(0)
    if producer.flush(30) != 0 or errors:
        raise KafkaException(f"librdkafka could not deliver every event: {errors[:3]}")
    assert all(p is not None for p in placed)
    return placed  # type: ignore[return-value]


async def wait_all_committed(flow: Flow, placed: list[tuple[int, int]]) -> None:
    """Until the processor's group has committed every partition past its last event."""
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    s = flow.settings

    async def done() -> bool:
        got = await committed_offsets(s.kafka_bootstrap_servers, s.consumer_group, s.events_topic)
        return all(got.get(p, 0) >= end for p, end in ends.items())

    await wait_until(done, 60, interval=0.2, what=f"committed offsets {ends}")


@pytest.mark.parametrize("partitioner", sorted(LIBRDKAFKA))
async def test_librdkafka_events_are_decided_as_the_model_says_under_the_matching_setting(
    flow_factory, partitioner: str
):
    setting = LIBRDKAFKA[partitioner]
    events = player_events()
    async with flow_factory(partitions=PARTITIONS, event_partitioner=setting) as flow:
        running = await flow.start_processor()
        placed = await asyncio.to_thread(produce_with_librdkafka, flow, partitioner, events)

        # librdkafka's choice is ours, key by key; and the other hashes would have put many
        # of them elsewhere, so a processor that ignored the setting would fail below.
        assert [p for p, _ in placed] == [partition_for(setting, k, PARTITIONS) for k, _, _ in events]
        assert len({p for p, _ in placed}) == PARTITIONS
        for other in set(EVENT_PARTITIONERS) - {setting}:
            theirs = [partition_for(other, k, PARTITIONS) for k, _, _ in events]
            elsewhere = sum(p != q for (p, _), q in zip(placed, theirs, strict=True))
            assert elsewhere > EVENTS // 2, (other, elsewhere)
        if setting == "fnv1a":  # some hashes are negative as int32: abs(rem) is not the unsigned mod
            unsigned = [fnv1a_32(k) % PARTITIONS for k, _, _ in events]
            assert any(u != p for u, (p, _) in zip(unsigned, placed, strict=True))

        await wait_all_committed(flow, placed)
        s = flow.settings
        verifier = await run_verifier(
            s.kafka_bootstrap_servers,
            s.events_topic,
            s.verdicts_topic,
            s.dlq_topic,
            s.redis_url,
            max_streams=s.max_streams,
            lease_ttl_ms=s.lease_ttl_ms,
            policy=s.overflow_policy,
            event_id_memory=s.event_id_memory,
            redis_cluster=s.redis_cluster,
        )
        report = verifier.report
        assert report.clean, (report.summary(), report.examples)
        assert (report.events, report.valid_events, report.bad_records, report.dlq) == (EVENTS, EVENTS, 0, 0)
        assert report.expiries > 0 and report.revokes > 0  # the ledger and terminate were exercised
        assert running.processor.metrics.key_mismatch._value.get() == 0


async def test_librdkafkas_default_partitioner_against_the_murmur2_setting_is_dead_lettered_with_the_fix(
    flow_factory, caplog: pytest.LogCaptureFixture
):
    events = player_events(seed=5)
    async with flow_factory(partitions=PARTITIONS) as flow:  # EVENT_PARTITIONER: murmur2, the default
        assert flow.settings.event_partitioner == "murmur2"
        with caplog.at_level(logging.WARNING, logger="processor"):
            running = await flow.start_processor()
            placed = await asyncio.to_thread(produce_with_librdkafka, flow, "consistent_random", events)
            await wait_all_committed(flow, placed)
            home = [partition_for("murmur2", k, PARTITIONS) for k, _, _ in events]
            misplaced = {placed[i]: i for i in range(EVENTS) if placed[i][0] != home[i]}
            assert len(misplaced) > EVENTS // 2  # all but about 1 in 6 by chance
            letters = await flow.wait_dead_letters(len(misplaced))

        # Each misplaced record, and nothing else, is dead-lettered with where it belongs.
        by_source = {}
        for letter in letters:
            h = {k: v.decode() for k, v in letter.headers}
            by_source[(int(h["source.partition"]), int(h["source.offset"]))] = h
        assert set(by_source) == set(misplaced)
        for source, i in misplaced.items():
            h = by_source[source]
            assert h["error"] == "key_mismatch"
            assert f"is in partition {source[0]} but under EVENT_PARTITIONER=murmur2" in h["error.detail"]
            assert f"its key belongs in partition {home[i]} (of {PARTITIONS})" in h["error.detail"]
            assert "set EVENT_PARTITIONER=crc32" in h["error.detail"]

        # The records that happen to sit where murmur2 puts them too are decided.
        decided = {v["eventId"] for v in flow.verdicts() if v["decision"] != "revoke"}
        assert decided == {f"e{i}" for i in range(EVENTS) if placed[i][0] == home[i]}

        registry = running.processor.metrics.registry
        assert registry.get_sample_value("concurrency_key_mismatch_total") == len(misplaced)
        assert registry.get_sample_value("concurrency_dlq_total", {"error": "key_mismatch"}) == len(misplaced)
        # One warning (within the minute), naming the setting; no warning per record.
        warned = [r.getMessage() for r in caplog.records if "EVENT_PARTITIONER=crc32" in r.getMessage()]
        assert len(warned) == 1, warned
        assert not [r for r in caplog.records if r.getMessage() == "record dead-lettered"]


async def test_the_gateway_publishes_and_lists_where_event_partitioner_puts_the_user(flow_factory):
    """EVENT_PARTITIONER=crc32 on the processor and the gateway: a user whose murmur2 partition is
    another is decided (not dead-lettered) and listed from its crc32 partition's state."""
    user = next(
        u
        for u in (f"user-{i}" for i in range(100))
        if partition_for("crc32", u.encode(), 4) != partition_for("murmur2", u.encode(), 4)
    )
    async with flow_factory(event_partitioner="crc32") as flow:
        await flow.start_processor()
        async with running_gateway(flow) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            me = bearer(user)
            # Published where murmur2 would not put it, it would be dead-lettered and time out.
            started = await http.post("/v1/sessions", json={"sessionId": "tv"}, headers=me)
            assert (started.status_code, started.json()["reason"]) == (200, "started"), started.text
            listed = await http.get("/v1/sessions", headers=me)  # read from the crc32 partition's state
            assert [s["sessionId"] for s in listed.json()["sessions"]] == ["tv"]
