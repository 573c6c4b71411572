"""Bad input from upstream: duplicates, late and out-of-order events, and arbitrary records.

The simulator (producer_sim.runner) checks each verdict as it arrives; the verifier
checks the whole topics afterwards: two oracles, both must be clean. Arbitrary records
(hypothesis) go through the real processor: each is decided or dead-lettered.
"""

from __future__ import annotations

import json

import orjson
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.wire import MAX_VALUE_BYTES, DecodedEvent, DecodeError, decode_event
from producer_sim.runner import SimConfig, Simulation
from producer_sim.settings import SimSettings
from tests.chaos.support import assert_clean, figures
from tests.harness import TEST_SECRET

# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
IDS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=0, max_size=140) | st.sampled_from(
    ["u-1", "u-2", "u-3", "s-1", "s-2", "s-3", "s-4"]
)
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["start", "heartbeat", "stop"]) | JSON,
        "userId": IDS | JSON,
        "sessionId": IDS | JSON,
        "eventId": IDS | JSON,
        "deviceId": st.none() | TEXT | JSON,
        "contentId": st.none() | TEXT | JSON,
        "ts": st.integers() | st.floats() | JSON,
        "extra": JSON,
    },
)
# Mostly well-formed events (so that some are decided), with every kind of damage mixed in.
PLAUSIBLE = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["start", "heartbeat", "stop"]),
        "userId": st.sampled_from(["u-1", "u-2", "u-3", "ü-ñ", "u}{4"]),
        "sessionId": st.sampled_from(["s-1", "s-2", "s-3", "s-4", "s-5"]),
    },
    optional={"deviceId": st.none() | TEXT, "contentId": TEXT, "ts": st.integers(0, 2**53), "extra": JSON},
)


def _dumps(obj: object, loose: bool) -> bytes:
    # json.dumps writes NaN/Infinity and big integers, which strict JSON refuses: more damage.
    if not loose:
        try:
            return orjson.dumps(obj)
        except TypeError:  # an integer beyond 64 bits
            pass
    return json.dumps(obj).encode()


RECORDS = st.one_of(
    st.binary(max_size=64),
    st.builds(_dumps, JSON, st.booleans()),
    st.builds(_dumps, EVENTISH, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
)


# --------------------------------------------------------------------------------------------
# the decoder never raises anything but DecodeError
# --------------------------------------------------------------------------------------------


def _decodes_or_refuses(value: bytes | None) -> None:
    try:
        ev = decode_event(value)
    except DecodeError as err:
        assert err.code and isinstance(err.detail, str)
        return
    assert isinstance(ev, DecodedEvent)
    assert ev.type in ("start", "heartbeat", "stop")
    assert type(ev.user_id) is str and 0 < len(ev.user_id) <= 128
    assert type(ev.session_id) is str and 0 < len(ev.session_id) <= 128


@settings(max_examples=1500, deadline=None, database=None)
@given(st.binary(max_size=512))
def test_decode_event_on_arbitrary_bytes_raises_only_decode_error(value):
    _decodes_or_refuses(value)


@settings(max_examples=1500, deadline=None, database=None)
@given(JSON | EVENTISH | PLAUSIBLE, st.booleans())
def test_decode_event_on_arbitrary_json_raises_only_decode_error(obj, loose):
    _decodes_or_refuses(_dumps(obj, loose))


# --------------------------------------------------------------------------------------------
# through the real processor
# --------------------------------------------------------------------------------------------


def _generate_records(count: int) -> list[bytes]:
    out: list[bytes] = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(RECORDS)
    def collect(value: bytes) -> None:
        out.append(value)

    collect()
    return out


def _unique_event_ids(values: list[bytes]) -> list[bytes]:
    """Give each record's eventId a unique suffix: one eventId reused by different events is
    not an upstream duplicate, and would only muddle the count."""
    out = []
    for i, value in enumerate(values):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            out.append(value)
            continue
        if isinstance(obj, dict) and isinstance(obj.get("eventId"), str):
            obj["eventId"] = f"{obj['eventId'][:120]}#{i}"
            value = orjson.dumps(obj)
        out.append(value)
    return out


def _key_of(value: bytes | None, i: int) -> bytes | None:
    """Keyed by userId when there is a string one (so one user stays on one partition)."""
    try:
        obj = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("userId"), str):
        return obj["userId"].encode()
    return None if i % 3 == 0 else f"k{i}".encode()


async def test_arbitrary_records_through_the_processor_are_each_decided_or_dead_lettered(
    chaos_flow, tmp_path, record_figures
):
    values: list[bytes | None] = list(_unique_event_ids(_generate_records(400)))
    values += [None, b"", b"x" * (MAX_VALUE_BYTES + 1), orjson.dumps({"type": "start", "userId": "u-1",
               "sessionId": "s-9", "pad": "x" * MAX_VALUE_BYTES})]  # fmt: skip
    async with chaos_flow(partitions=4) as flow:
        s = flow.settings
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            topic, t0 = s.events_topic, flow.t0
            futures = [
                await producer.send(topic, value=v, key=_key_of(v, i), timestamp_ms=t0 + i * 250)
                for i, v in enumerate(values)
            ]
            for fut in futures:
                await fut
        finally:
            await producer.stop()
        await flow.wait_drained()
        assert proc.alive()
        report = await flow.verify()
        record_figures(
            figures(report, faults=f"{len(values)} arbitrary records", decided=report.valid_events,
                    dead_lettered=report.dlq_unique)
        )  # fmt: skip
        assert report.events == len(values)
        assert report.valid_events + report.bad_records == len(values)
        assert report.valid_events > 50 and report.bad_records > 50
        assert_clean(report)


async def test_upstream_duplicates_late_and_malformed_events_from_the_simulator_are_all_verified(
    chaos_flow, tmp_path, record_figures
):
    async with chaos_flow(partitions=4) as flow:
        s = flow.settings
        procs = [flow.spawn(tmp_path), flow.spawn(tmp_path)]
        for proc in procs:
            await proc.wait_healthy()
        shared = (
            "kafka_bootstrap_servers",
            "redis_url",
            "events_topic",
            "verdicts_topic",
            "dlq_topic",
            "topic_partitions",
            "max_streams",
            "lease_ttl_seconds",
            "overflow_policy",
            "event_id_memory",
        )
        sim_settings = SimSettings(**{k: getattr(s, k) for k in shared}, jwt_secret=TEST_SECRET)  # fmt: skip
        sim = Simulation(
            SimConfig(rate=600, events=4000, users=300, seed=31, duplicates=0.08, late=0.15, malformed=0.03,
                      sharers=0.15, families=0.3, drain_timeout=60, progress=False),
            sim_settings,
        )  # fmt: skip
        sim_report = await sim.run()
        await flow.wait_drained()
        report = await flow.verify()
        sent = sim_report["sent"]
        record_figures(
            figures(report, faults=f"{sent['duplicates']} duplicates, {sent['late']} late, "
                    f"{sent['malformed']} malformed (simulator)",
                    simulator_ok=sim_report["ok"], simulator_missing=sim_report["check"]["missing"],
                    simulator_mismatches=sim_report["check"]["mismatches"])
        )  # fmt: skip
        assert sim_report["ok"], sim_report["check"]
        assert report.upstream_duplicates >= sent["duplicates"] > 0
        assert report.bad_records == sent["malformed"] > 0
        assert_clean(report)
