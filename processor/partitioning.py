"""Which partition a key belongs in: the one place every part asks (contract: Player event).

Producers do not agree on the hash: Kafka's Java client, Kafka Streams, aiokafka,
kafka-python and franz-go use murmur2; librdkafka (confluent-kafka for Python, Go and .NET,
node-rdkafka) defaults to CRC32 (`consistent_random`); Sarama defaults to FNV-1a.
`EVENT_PARTITIONER` names the one the events topic follows; the verdicts topic, which only
the processor writes, stays murmur2 (Kafka's default). The processor's key_mismatch check,
the gateway, the simulator, the operator commands and the benchmark's loaders all place
keys through `key_partitioner` (cached), `partition_for` (one key) or `ProducerPartitioner`
(aiokafka's `partitioner=`), which share the three functions below.
"""

from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Callable
from typing import Literal, get_args

from aiokafka.partitioner import murmur2

from processor.wire import DecodeError

EventPartitioner = Literal["murmur2", "crc32", "fnv1a"]
EVENT_PARTITIONERS: tuple[str, ...] = get_args(EventPartitioner)
VERDICTS_PARTITIONER = "murmur2"  # the processor produces the verdicts topic with Kafka's default

# Who produces with each hash by default (error messages and the warning name them).
PRODUCERS = {
    "murmur2": "Kafka's Java client, Kafka Streams, aiokafka, kafka-python, franz-go; librdkafka "
    "with partitioner=murmur2_random",
    "crc32": "librdkafka's default (consistent_random): confluent-kafka for Python, Go and .NET, "
    "node-rdkafka",
    "fnv1a": "Sarama's default hash partitioner; librdkafka with partitioner=fnv1a_random",
}

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def murmur2_partition(key: bytes, partitions: int) -> int:
    """(murmur2(key) & 0x7fffffff) % n, as Java's client (aiokafka's murmur2 is the same hash)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """crc32(key) % n with the unsigned zlib CRC-32, as librdkafka's consistent(_random)."""
    return zlib.crc32(key) % partitions


def fnv1a_32(key: bytes) -> int:
    """The 32-bit FNV-1a hash of the bytes, unsigned."""
    h = _FNV32_OFFSET
    for byte in key:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def fnv1a_partition(key: bytes, partitions: int) -> int:
    """abs(int32(h) rem n), the remainder truncated toward zero, as Sarama's hash partitioner
    and librdkafka's fnv1a(_random). |a rem n| is |a| mod n, so no sign juggling is needed."""
    h = fnv1a_32(key)
    signed = h - 0x1_0000_0000 if h & 0x8000_0000 else h
    return abs(signed) % partitions


HASHES: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": murmur2_partition,
    "crc32": crc32_partition,
    "fnv1a": fnv1a_partition,
}


def check_partitioner(name: str) -> str:
    """`name` if it is one of EVENT_PARTITIONERS, else ValueError saying what each means."""
    if name not in HASHES:
        choices = "; ".join(f"{n} ({PRODUCERS[n]})" for n in EVENT_PARTITIONERS)
        raise ValueError(f"EVENT_PARTITIONER must be one of: {choices}; got {name!r}")
    return name


def key_partitioner(name: str, partitions: int, cache_size: int = 65_536) -> Callable[[bytes], int]:
    """key -> its partition under the hash `name` for `partitions` partitions, with a bounded
    cache per key: murmur2 and FNV-1a are pure Python and cost more than encoding a verdict,
    and most users come back often."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    partition = HASHES[check_partitioner(name)]

    @functools.lru_cache(maxsize=cache_size)
    def partition_of(key: bytes) -> int:
        return partition(key, partitions)

    return partition_of


def partition_for(name: str, key: bytes, partitions: int) -> int:
    """The partition of one key under the hash `name` (uncached; `key_partitioner` for many)."""
    return HASHES[check_partitioner(name)](key, partitions)


def fitting_hashes(key: bytes, partition: int, partitions: int) -> list[str]:
    """The hashes that put `key` in `partition`: a hint at the producer's hash after a mismatch."""
    return [name for name in EVENT_PARTITIONERS if HASHES[name](key, partitions) == partition]


class ProducerPartitioner:
    """aiokafka's `partitioner=` for a producer of events: a keyed record goes where
    EVENT_PARTITIONER puts its key; an unkeyed one (never a valid event) anywhere available."""

    def __init__(self, name: str) -> None:
        self.name = check_partitioner(name)
        self._hash = HASHES[name]

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # spreading, not secrecy
        return all_partitions[self._hash(key, len(all_partitions))]


class PartitionMismatch(DecodeError):
    """A record in another partition than the one EVENT_PARTITIONER gives its key (`key_mismatch`)."""

    def __init__(self, key: bytes, partition: int, expected: int, name: str, partitions: int) -> None:
        self.expected = expected
        self.fits = [n for n in fitting_hashes(key, partition, partitions) if n != name]
        hint = (
            f"; {' and '.join(self.fits)} would put it here: if your producers use "
            f"{'that hash' if len(self.fits) == 1 else 'one of these'}, set EVENT_PARTITIONER="
            f"{self.fits[0]} on the processor, gateway and simulator"
            if self.fits
            else ""
        )
        super().__init__(
            "key_mismatch",
            f"the record is in partition {partition} but under EVENT_PARTITIONER={name} its key "
            f"belongs in partition {expected} (of {partitions}){hint}; or produce keyed, without "
            f"choosing a partition, with a {name} partitioner ({PRODUCERS[name]})",
        )


class PartitionCheck:
    """Where each key of the events topic belongs: EVENT_PARTITIONER over its partition count.

    `partition_of` is the hot path (cached); `mismatch` builds the dead letter's error.
    """

    def __init__(
        self, name: str, partitions: int, partition_of: Callable[[bytes], int] | None = None
    ) -> None:
        self.name = check_partitioner(name)
        self.partitions = partitions
        self.partition_of = partition_of or key_partitioner(name, partitions)

    def mismatch(self, key: bytes, partition: int) -> PartitionMismatch:
        return PartitionMismatch(key, partition, self.partition_of(key), self.name, self.partitions)
