"""Bad input from upstream: duplicates, late and out-of-order events, and arbitrary records.

The simulator (producer_sim.runner) checks each verdict as it arrives; the verifier
checks the whole topics afterwards: two oracles, both must be clean. Arbitrary records
(hypothesis: values, keys, headers) go through the real processor: each is decided or
dead-lettered; and a fuzz run of 20,000 random records (random bytes, random keys, random
headers, valid events keyed right and keyed wrong) holds the verifier's invariants.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import orjson
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.publisher import DLQ_HEADERS
from processor.wire import MAX_TEXT_CHARS, MAX_VALUE_BYTES, DecodedEvent, DecodeError, decode_event
from producer_sim.runner import Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig
from tests.chaos.support import assert_clean, figures
from tests.harness import TEST_SECRET, user_id_key

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


VALUES = st.one_of(
    st.binary(max_size=64),
    st.builds(_dumps, JSON, st.booleans()),
    st.builds(_dumps, EVENTISH, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
    st.builds(_dumps, PLAUSIBLE, st.booleans()),
)
# The record key: mostly the value's userId (so that some records are decided), else anything.
OTHER_KEYS = st.none() | st.binary(max_size=12) | IDS.map(str.encode)
KEYS = st.integers(0, 9).flatmap(lambda n: st.just("user") if n < 7 else OTHER_KEYS)
# Header names: the processor's own DLQ headers (an original one must not pass for the
# processor's, nor be lost), reply headers with bad values, and anything.
HEADER_POOL = [
    *sorted(DLQ_HEADERS),
    "original.error",
    "original.original.x",
    "reply.topic",
    "reply.partition",
    "",
]
HEADER_NAMES = st.sampled_from(HEADER_POOL) | st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), max_size=10
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=16)), max_size=4)
RECORDS = st.tuples(VALUES, KEYS, HEADERS)


# --------------------------------------------------------------------------------------------
# the decoder never raises anything but DecodeError
# --------------------------------------------------------------------------------------------


def _decodes_or_refuses(value: bytes | None, key: bytes | str | None) -> None:
    """Under the key drawn, and under the value's own userId (so that valid values get decoded)."""
    for k in (_key_of(value, "user"), key if key != "user" else None):
        try:
            ev = decode_event(value, k)
        except DecodeError as err:
            assert err.code and isinstance(err.detail, str)
            continue
        assert isinstance(ev, DecodedEvent)
        assert ev.type in ("start", "heartbeat", "stop")
        assert type(ev.user_id) is str and 0 < len(ev.user_id) <= 128
        assert type(ev.session_id) is str and 0 < len(ev.session_id) <= 128
        assert k == ev.user_id.encode()


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), KEYS)
def test_decode_event_on_arbitrary_bytes_raises_only_decode_error(value, key):
    _decodes_or_refuses(value, key)


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON | EVENTISH | PLAUSIBLE, st.booleans(), KEYS)
def test_decode_event_on_arbitrary_json_raises_only_decode_error(obj, loose, key):
    _decodes_or_refuses(_dumps(obj, loose), key)


# --------------------------------------------------------------------------------------------
# through the real processor
# --------------------------------------------------------------------------------------------


def _generate_records(count: int) -> list[tuple[bytes, bytes | str | None, list[tuple[str, bytes]]]]:
    out: list = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(RECORDS)
    def collect(record: tuple) -> None:
        out.append(record)

    collect()
    return out


def _unique_event_id(value: bytes, i: int) -> bytes:
    """Give the record's eventId a unique suffix: one eventId reused by different events is
    not an upstream duplicate, and would only muddle the count."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if isinstance(obj, dict) and isinstance(obj.get("eventId"), str):
        obj["eventId"] = f"{obj['eventId'][:120]}#{i}"
        return orjson.dumps(obj)
    return value


async def _send_all(flow, records: list[tuple[bytes | None, bytes | None, list]], spacing_ms: int) -> None:
    """Produce the records in order, record timestamps `spacing_ms` apart from the flow's t0."""
    s = flow.settings
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, acks="all", linger_ms=10)
    await producer.start()
    try:
        topic, t0 = s.events_topic, flow.t0
        futures = [
            await producer.send(topic, value=v, key=k, headers=h, timestamp_ms=t0 + i * spacing_ms)
            for i, (v, k, h) in enumerate(records)
        ]
        for fut in futures:
            await fut
    finally:
        await producer.stop()


def _key_of(value: bytes | None, key: bytes | str | None) -> bytes | None:
    """The key drawn; "user": the value's userId in UTF-8 when it has a string one, else none."""
    return user_id_key(value) if key == "user" else key  # type: ignore[return-value]


async def test_arbitrary_records_through_the_processor_are_each_decided_or_dead_lettered(
    chaos_flow, tmp_path, record_figures
):
    records: list[tuple[bytes | None, bytes | None, list]] = [
        (_unique_event_id(v, i), _key_of(v, k), h) for i, (v, k, h) in enumerate(_generate_records(400))
    ]
    big = {"type": "start", "userId": "u-1", "sessionId": "s-9", "pad": "x" * MAX_VALUE_BYTES}
    records += [
        (None, b"k", []),  # (aiokafka sends no record without both key and value)
        (b"", b"u-1", []),
        (b"x" * (MAX_VALUE_BYTES + 1), b"u-1", [("error", b"x")]),
        (orjson.dumps(big), b"u-1", []),
    ]
    async with chaos_flow(partitions=4) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        await _send_all(flow, records, spacing_ms=250)
        await flow.wait_drained()
        assert proc.running
        report = await flow.verify()
        record_figures(
            figures(report, faults=f"{len(records)} arbitrary records", decided=report.valid_events,
                    dead_lettered=report.dlq_unique, bad_by_error=dict(report.bad_by_error))
        )  # fmt: skip
        assert report.events == len(records)
        assert report.valid_events + report.bad_records == len(records)
        assert report.valid_events > 50 and report.bad_records > 50
        assert report.bad_by_error["key_mismatch"] > 5
        assert_clean(report)


# --------------------------------------------------------------------------------------------
# fuzz: 20,000 seeded random records through the real processor
# --------------------------------------------------------------------------------------------

FUZZ_RECORDS = 20_000


class Fuzz:
    """Seeded random records (value, key, headers), each with what must become of it:
    "decided", an error code, or "?" (random damage: the verifier's decoder tells)."""

    def __init__(self, seed: int, users: int = 150) -> None:
        self.rng = random.Random(seed)
        self.users = [f"u-{i}" for i in range(users)] + ["ü-ñ", "u}{4", "é" * 128, "U-0"]
        self.intended: Counter[str] = Counter()
        self._seq = 0

    def records(self, count: int) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]]:
        return [self._record() for _ in range(count)]

    def _record(self) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]:
        rng, user = self.rng, self.rng.choice(self.users)
        r = rng.random()
        if r < 0.45:  # valid, keyed by its userId
            value, key, want = orjson.dumps(self._event(user)), user.encode(), "decided"
        elif r < 0.57:  # valid, keyed otherwise
            value, key, want = orjson.dumps(self._event(user)), self._wrong_key(user), "key_mismatch"
        elif r < 0.62:  # a deviceId or contentId over 256 characters, under any key
            obj = {**self._event(user), rng.choice(["deviceId", "contentId"]): "x" * (MAX_TEXT_CHARS + 1)}
            value, key, want = orjson.dumps(obj), rng.choice([user.encode(), None, b"k"]), "id_too_long"
        elif r < 0.88:  # random bytes, random key
            value, key, want = rng.randbytes(rng.randint(0, 120)), self._random_key(user), "?"
        elif r < 0.995:  # a valid event with a few bytes overwritten
            valid = orjson.dumps(self._event(user))
            at = rng.randrange(len(valid))
            value = valid[:at] + rng.randbytes(rng.randint(0, 3)) + valid[at + rng.randint(0, 3) :]
            key, want = user.encode(), "?"
        else:  # no value, or a value over 64 KiB
            value = rng.choice([None, b"x" * (MAX_VALUE_BYTES + 1)])
            key, want = self._random_key(user) or b"k", "not_json" if value is None else "too_large"
        self.intended[want] += 1
        return value, key, self._headers(), want

    def _event(self, user: str) -> dict:
        rng = self.rng
        self._seq += 1
        obj: dict = {"type": rng.choice(["start", "start", "heartbeat", "heartbeat", "stop"]), "userId": user,
                     "sessionId": f"s-{rng.randrange(6)}"}  # fmt: skip
        if rng.random() < 0.9:  # else identified by (partition, offset)
            obj["eventId"] = f"f-{self._seq}"
        if rng.random() < 0.3:
            obj["deviceId"] = "d" * rng.choice([0, 12, MAX_TEXT_CHARS])
        if rng.random() < 0.3:
            obj["contentId"] = "c" * rng.choice([1, MAX_TEXT_CHARS])
        if rng.random() < 0.2:
            obj["ts"] = rng.randrange(2**53)
        return obj

    def _wrong_key(self, user: str) -> bytes | None:
        rng, kind = self.rng, self.rng.randrange(6)
        if kind == 0:
            return None
        if kind == 1:  # another user's
            return rng.choice([u for u in self.users[:8] if u != user]).encode()
        if kind == 2:
            return (user.upper() if user.upper() != user else user + " ").encode()
        if kind == 3:
            return user.encode() + b"\x00"
        if kind == 4:
            return user.encode("utf-16")
        return rng.randbytes(rng.randint(1, 40))

    def _random_key(self, user: str) -> bytes | None:
        rng = self.rng
        return rng.choice(
            [None, user.encode(), rng.randbytes(rng.randint(0, 16)), b"k" * rng.randint(1, 2000)]
        )

    def _headers(self) -> list[tuple[str, bytes]]:
        rng = self.rng
        if rng.random() < 0.4:
            return []
        names = [
            rng.choice(HEADER_POOL)
            if rng.random() < 0.5
            else "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randint(0, 8)))
            for _ in range(rng.randint(1, 4))
        ]
        return [(name, rng.randbytes(rng.randint(0, 24))) for name in names]


def _outcome(value: bytes | None, key: bytes | None) -> str:
    try:
        decode_event(value, key)
    except DecodeError as err:
        return err.code
    return "decided"


async def test_fuzz_20000_random_records_each_decided_once_or_dead_lettered_with_its_error(
    chaos_flow, tmp_path, record_figures
):
    fuzz = Fuzz(seed=12)
    generated = fuzz.records(FUZZ_RECORDS)
    # The generator makes what it means to (where it knows): valid, key_mismatch, id_too_long...
    for value, key, _, want in generated:
        assert want == "?" or _outcome(value, key) == want, (value, key, want)
    records = [(v, k, h) for v, k, h, _ in generated]
    expected = Counter(_outcome(v, k) for v, k, _ in records)
    started = time.monotonic()
    async with chaos_flow(partitions=4) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        await _send_all(flow, records, spacing_ms=100)
        sent = time.monotonic()
        await flow.wait_drained(within=120)  # nothing stalls: the group commits every partition's end
        drained = time.monotonic()
        assert proc.running
        report = await flow.verify()
        record_figures(
            figures(report, records=len(records), decided=report.valid_events,
                    dead_lettered=report.dlq_unique, bad_by_error=dict(report.bad_by_error),
                    intended=dict(fuzz.intended),
                    send_s=round(sent - started, 1), drain_s=round(drained - sent, 1),
                    total_s=round(time.monotonic() - started, 1))
        )  # fmt: skip
        assert report.events == FUZZ_RECORDS
        assert report.valid_events == expected["decided"] >= fuzz.intended["decided"]
        assert report.bad_by_error == expected - Counter({"decided": expected["decided"]})
        assert report.bad_by_error["key_mismatch"] >= fuzz.intended["key_mismatch"] > 2000
        # One verdict per valid event (upstream duplicates: none, eventIds are unique).
        assert report.distinct_events == report.valid_events and report.upstream_duplicates == 0
        # Its own verdicts, the revokes, and the session ledger's expiries (each checked by the verifier).
        assert report.unique_verdicts == report.expected_verdicts + report.expiries
        # Every other record dead-lettered once at least, with its error, key, value, headers.
        assert report.dlq_unique == report.bad_records and report.dlq_wrong_error == 0
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
