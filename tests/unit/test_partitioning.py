"""EVENT_PARTITIONER's three hashes against known vectors and against librdkafka's own
partitioners (confluent-kafka exposes them as functions: no broker needed), and what a mismatch
says and counts. Never against a second reading of the formulas: an oracle written by the same
reader shares its misreadings.

The hashes are also checked against librdkafka's producer, through a real broker, in
tests/integration/test_partitioners.py.
"""

from __future__ import annotations

import logging
import zlib

import confluent_kafka as librdkafka
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.settings import load_gateway_settings
from processor.config import SettingsError, load_settings
from processor.key_mismatches import KeyMismatches
from processor.metrics import Metrics
from processor.partitioning import (
    EVENT_PARTITIONERS,
    PartitionCheck,
    PartitionMismatch,
    ProducerPartitioner,
    crc32_partition,
    fnv1a_32,
    fnv1a_partition,
    key_partitioner,
    murmur2_partition,
    partition_for,
)
from processor.wire import DecodeError
from producer_sim.settings import SimSettings

# Java's murmur2 of these keys (Apache Kafka's UtilsTest.testMurmur2), as signed 32-bit ints.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
# 32-bit FNV-1a test vectors of the FNV reference (isthe.com/chongo/src/fnv/test_fnv.c), and
# Sarama's key whose hash is 2**31, int32's minimum (partitioner_test.go, TestHashPartitionerMinInt32).
FNV1A_32 = {b"": 0x811C9DC5, b"a": 0xE40C292C, b"foobar": 0xBF9CF968, b"1468509572224": 0x80000000}
# Sarama's CRC-32 partitions of 100 (partitioner_test.go, TestConsistentCRCHashPartitioner):
# "SheetJS" hashes to 2647669026, 26 unsigned mod 100 where the signed hash would give 70.
SARAMA_CRC32_OF_100 = {
    b"abc123def456": 57,
    b"SheetJS": 26,
    b"9e8c7f4cf45857cfff7645d6": 24,
    b"3900446192ff85a5f67da10c": 75,
    b"0f4407b7a67d6d27de372198": 50,
}

keys = st.binary(min_size=1, max_size=64)
counts = st.integers(min_value=1, max_value=1000)


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
@pytest.mark.parametrize("partitions", [1, 3, 12, 1000])
def test_murmur2_places_a_key_as_javas_client_does(key: bytes, partitions: int):
    assert murmur2_partition(key, partitions) == (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions


@given(keys, counts)
def test_murmur2_is_aiokafkas_default_partitioner_and_librdkafkas_murmur2(key: bytes, partitions: int):
    every = list(range(partitions))
    assert murmur2_partition(key, partitions) == DefaultPartitioner()(key, every, every)
    assert murmur2_partition(key, partitions) == librdkafka.murmur2(key, partitions)


def test_crc32_is_the_unsigned_zlib_crc():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
    # 0xCBF43926 has its top bit set: as a signed int32 (Java's CRC32 is not, zlib's is not)
    # it would give 1 (floored) or 6 (absolute truncated remainder) instead of 5.
    assert crc32_partition(b"123456789", 7) == 5
    assert ((0xCBF43926 - 2**32) % 7, abs(0xCBF43926 - 2**32) % 7) == (1, 6)


@pytest.mark.parametrize(("key", "partition"), sorted(SARAMA_CRC32_OF_100.items()))
def test_crc32_places_a_key_as_saramas_consistent_crc_partitioner_does(key: bytes, partition: int):
    assert crc32_partition(key, 100) == partition


@given(keys, counts)
def test_crc32_partition_is_librdkafkas_consistent_partitioner(key: bytes, partitions: int):
    assert crc32_partition(key, partitions) == librdkafka.consistent(key, partitions)


@pytest.mark.parametrize(("key", "hash_"), sorted(FNV1A_32.items()))
def test_fnv1a_32_matches_the_reference_vectors(key: bytes, hash_: int):
    assert fnv1a_32(key) == hash_


def test_fnv1a_takes_the_absolute_truncated_remainder_of_the_signed_hash():
    # 0xE40C292C is negative as an int32: -468965076 rem 7 = -6 (truncated toward zero) -> 6.
    # The unsigned hash mod 7 would be 5, the floored (Python) remainder of the signed one 1.
    assert fnv1a_partition(b"a", 7) == 6
    assert 0xE40C292C - 2**32 == -468965076
    assert (0xE40C292C % 7, -468965076 % 7) == (5, 1)
    # A hash with the top bit clear is the plain remainder.
    assert fnv1a_32(b"u1") == 0x0442A7F3 and fnv1a_partition(b"u1", 7) == 0x0442A7F3 % 7


def test_fnv1a_places_int32s_minimum_in_range_as_sarama_and_librdkafka_do():
    # Sarama: int32(2**31) % 50 = -48, negated to 48; no overflow, the remainder is small.
    assert fnv1a_partition(b"1468509572224", 50) == 48 == librdkafka.fnv1a(b"1468509572224", 50)


@given(keys, counts)
def test_fnv1a_partition_is_librdkafkas_fnv1a_partitioner(key: bytes, partitions: int):
    assert fnv1a_partition(key, partitions) == librdkafka.fnv1a(key, partitions)


@given(st.sampled_from(EVENT_PARTITIONERS), keys, counts)
def test_the_cached_partitioner_and_the_producers_agree_with_the_plain_function(name, key, partitions):
    every = list(range(partitions))
    want = partition_for(name, key, partitions)
    assert 0 <= want < partitions
    assert key_partitioner(name, partitions)(key) == want
    assert ProducerPartitioner(name)(key, every, every) == want


def test_the_three_hashes_place_most_keys_differently():
    users = [f"user-{i}".encode() for i in range(1000)]
    for a, b in (("murmur2", "crc32"), ("murmur2", "fnv1a"), ("crc32", "fnv1a")):
        same = sum(partition_for(a, k, 12) == partition_for(b, k, 12) for k in users)
        assert same < 200, (a, b, same)  # about 1 in 12 by chance


def test_an_unknown_partitioner_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"murmur2 .*crc32 .*fnv1a"):
        key_partitioner("consistent_random", 12)


# -- settings ---------------------------------------------------------------------------


def test_event_partitioner_is_read_from_the_environment_by_every_part(monkeypatch):
    monkeypatch.setenv("EVENT_PARTITIONER", "crc32")
    assert load_settings(allow_insecure_dev_secret=True).event_partitioner == "crc32"
    assert load_gateway_settings(allow_insecure_dev_secret=True).event_partitioner == "crc32"
    assert SimSettings().event_partitioner == "crc32"


def test_event_partitioner_defaults_to_murmur2(monkeypatch):
    monkeypatch.delenv("EVENT_PARTITIONER", raising=False)
    assert load_settings(allow_insecure_dev_secret=True, _env_file=None).event_partitioner == "murmur2"


def test_a_wrong_event_partitioner_says_what_each_value_is_for(monkeypatch):
    monkeypatch.setenv("EVENT_PARTITIONER", "consistent_random")
    with pytest.raises(SettingsError) as info:
        load_settings(allow_insecure_dev_secret=True)
    message = str(info.value)
    assert "EVENT_PARTITIONER" in message and "'consistent_random'" in message
    assert "crc32 (librdkafka's default" in message and "fnv1a (Sarama" in message


# -- the mismatch -----------------------------------------------------------------------


def a_key_placed_by(name: str, other: str, partitions: int) -> bytes:
    """A userId key that `name` and `other` put in different partitions."""
    return next(
        k
        for k in (f"user-{i}".encode() for i in range(1000))
        if partition_for(name, k, partitions) != partition_for(other, k, partitions)
    )


def test_a_mismatch_is_a_key_mismatch_dead_letter_naming_the_partition_and_the_setting():
    key = a_key_placed_by("crc32", "murmur2", 12)
    home, found = partition_for("murmur2", key, 12), partition_for("crc32", key, 12)
    err = PartitionCheck("murmur2", 12).mismatch(key, found)
    assert isinstance(err, DecodeError) and err.code == "key_mismatch"
    assert f"is in partition {found} but under EVENT_PARTITIONER=murmur2" in err.detail
    assert f"belongs in partition {home} (of 12)" in err.detail
    assert "set EVENT_PARTITIONER=crc32" in err.detail  # the hash that would put it here
    assert len(err.detail) <= 500  # the DLQ's error.detail header keeps 500 characters


def test_a_mismatch_that_no_hash_explains_suggests_no_setting():
    key = b"user-1"
    taken = {partition_for(name, key, 12) for name in EVENT_PARTITIONERS}
    nowhere = next(p for p in range(12) if p not in taken)
    err = PartitionCheck("fnv1a", 12).mismatch(key, nowhere)
    assert err.fits == [] and "set EVENT_PARTITIONER" not in err.detail
    assert "with a fnv1a partitioner (Sarama's default" in err.detail


def mismatches(n: int, partitions: int = 12) -> list[tuple[object, DecodeError]]:
    check = PartitionCheck("murmur2", partitions)
    out: list[tuple[object, DecodeError]] = []
    for i in range(1000):
        key = f"user-{i}".encode()
        found = partition_for("crc32", key, partitions)
        if found != check.partition_of(key):
            out.append((None, check.mismatch(key, found)))
        if len(out) == n:
            return out
    raise AssertionError("not enough keys")


def test_mismatches_are_counted_each_and_warned_about_at_most_once_a_minute(caplog):
    metrics = Metrics(CollectorRegistry())
    now = [1000.0]
    counter = KeyMismatches(metrics, "murmur2", clock=lambda: now[0])
    other = [(None, DecodeError("not_json", "x")), (None, DecodeError("key_mismatch", "not the userId"))]
    with caplog.at_level(logging.WARNING, logger="processor"):
        counter.observe(mismatches(3) + other)
        now[0] += 59.0
        counter.observe(mismatches(5))
        assert counter.warnings == 1  # within the minute: counted, not logged
        now[0] += 1.0
        counter.observe(mismatches(2))
    assert metrics.key_mismatch._value.get() == 10
    warnings = [r.getMessage() for r in caplog.records if "EVENT_PARTITIONER" in r.getMessage()]
    assert len(warnings) == 2 and counter.warnings == 2
    assert warnings[0].startswith("3 record(s)") and warnings[1].startswith("7 record(s)")
    assert "set EVENT_PARTITIONER=crc32" in warnings[0]  # they all sit where crc32 puts them
    assert "EVENT_PARTITIONER=murmur2" in warnings[0]


def test_other_dead_letters_are_not_key_mismatches_of_the_partition():
    metrics = Metrics(CollectorRegistry())
    counter = KeyMismatches(metrics, "murmur2")
    counter.observe([(None, DecodeError("key_mismatch", "the record key must be the userId"))])
    assert metrics.key_mismatch._value.get() == 0 and counter.warnings == 0
    assert not isinstance(DecodeError("key_mismatch", ""), PartitionMismatch)


def test_the_benchs_loaders_place_keys_by_the_benchs_event_partitioner(monkeypatch):
    """The bench's processors inherit its environment: its loaders read the same setting."""
    from bench import kafka_util

    monkeypatch.setenv("EVENT_PARTITIONER", "fnv1a")
    kafka_util.events_partitioner.cache_clear()
    try:
        users = [f"user-{i}".encode() for i in range(200)]
        assert [kafka_util.partition_of(k, 12) for k in users] == [
            partition_for("fnv1a", k, 12) for k in users
        ]
        assert kafka_util.events_producer_partitioner().name == "fnv1a"
    finally:
        kafka_util.events_partitioner.cache_clear()  # later tests read their own environment
