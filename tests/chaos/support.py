"""What the chaos tests share: a flow whose processors are OS processes, offsets, and the
verifier's figures.

`ChaosFlow` is the harness's Flow without its background readers and producer: the chaos
tests read everything afterwards with the verifier, and a reader dying during a broker
restart must not fail the test. Its processors are producer_sim.processor_proc's
ProcessorProcess (HTTP probes, signals, log); the load is tests/chaos/load.py.
"""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from processor.topics import ensure_topics
from producer_sim.processor_proc import ProcessorProcess
from producer_sim.verifier import Verifier, VerifyReport, committed_offsets, run_verifier
from tests.chaos.load import Load, LoadStats
from tests.harness import Flow, wait_until

CHAOS_ENV = {"SESSION_TIMEOUT_MS": "6000", "HEARTBEAT_INTERVAL_MS": "1000"}


# --------------------------------------------------------------------------------------------
# the flow
# --------------------------------------------------------------------------------------------


class ChaosFlow(Flow):
    """Topics and group of one test, processors as OS processes; no background readers."""

    async def __aenter__(self) -> ChaosFlow:
        s = self.settings
        await ensure_topics(
            s.kafka_bootstrap_servers, [s.events_topic, s.verdicts_topic, s.dlq_topic], s.topic_partitions, 1
        )
        return self

    def spawn(self, log_dir: Path, **env: str) -> ProcessorProcess:
        """A started processor process with the chaos tests' short group session."""
        return self.spawn_processor(log_dir, **{**CHAOS_ENV, **env})

    async def load(self, seed: int, rate: float = 300.0, events: int | None = None, **faults: float) -> Load:
        """A started `Load` into this flow's events topic (see Load for the fault fractions)."""
        s = self.settings
        load = Load(s.kafka_bootstrap_servers, s.events_topic, t0=self.t0, rate=rate, seed=seed,
                    max_streams=s.max_streams, lease_ttl_ms=s.lease_ttl_ms, **faults)  # fmt: skip
        return await load.start(events)

    async def verify(self, resets: dict[int, int] | None = None, redis: bool = True) -> VerifyReport:
        return (await self.verifier(resets, redis)).report

    async def verifier(self, resets: dict[int, int] | None = None, redis: bool = True) -> Verifier:
        s = self.settings
        return await run_verifier(
            s.kafka_bootstrap_servers,
            s.events_topic,
            s.verdicts_topic,
            s.dlq_topic,
            s.redis_url if redis else None,
            max_streams=s.max_streams,
            lease_ttl_ms=s.lease_ttl_ms,
            policy=s.overflow_policy,
            event_id_memory=s.event_id_memory,
            resets=resets,
            redis_cluster=s.redis_cluster,
        )

    async def committed(self) -> dict[int, int]:
        s = self.settings
        return await committed_offsets(s.kafka_bootstrap_servers, s.consumer_group, s.events_topic)

    async def end_offsets(self) -> dict[int, int]:
        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(s.events_topic, p) for p in range(s.topic_partitions)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in ends.items()}

    async def drained(self) -> bool:
        """True when the group has committed every event in the topic (so all were decided)."""
        try:
            ends = await self.end_offsets()
            committed = await self.committed()
        except KafkaError:
            return False
        return all(committed.get(p, 0 if end == 0 else -1) >= end for p, end in ends.items())

    async def wait_drained(self, within: float = 60.0) -> None:
        await wait_until(self.drained, within, interval=0.25, what="the group to commit every event")


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def figures(report: VerifyReport, load: LoadStats | None = None, **extra: object) -> dict:
    out = {
        "events": report.events,
        "valid": report.valid_events,
        "verdicts": report.verdicts,
        "lost": report.lost,
        "applied_twice": report.applied_twice,
        "redelivered": report.redelivered,
        "mismatches": report.mismatches,
        "dlq": report.dlq,
        "bad": report.bad_records,
        "upstream_dups": report.upstream_duplicates,
        "state_mismatches": report.state_mismatches,
        "clean": report.clean,
    }
    if load is not None:
        out["send_retries"] = load.send_retries
    out.update(extra)
    return out


def repair_figures(proc: ProcessorProcess) -> dict:
    """What the processor's log says of its repairs of lost Redis state (repair.py)."""
    started = proc.logged("replaying its log")
    done = proc.logged("partition repaired from the log")
    return {
        "repairs": len(started),
        "repaired_partitions": sorted({x["partition"] for x in started}),
        "records_replayed": sum(x["records"] for x in done),
        "repair_seconds": [x["seconds"] for x in done],
    }


class LostVerdicts(AssertionError):
    """Valid events without a verdict: the first thing a run can get wrong, reported apart."""


def assert_clean(report: VerifyReport) -> None:
    detail = f"{report.summary()}\nkinds={dict(report.mismatch_kinds)}\nexamples={report.examples[:8]}"
    if report.lost:
        raise LostVerdicts(detail)
    assert report.applied_twice == 0, detail
    assert report.mismatches == 0, detail
    assert report.clean, detail
