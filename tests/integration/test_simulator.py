"""The simulator against the real processor (an OS process), real Kafka and real Redis.

1. With every fault switched on (duplicates, late timestamps, malformed records), every
   verdict of the processor matches the reference model, and none is missing.
2. With plans (policies written to the policies topic before the processor starts), device
   classes and terminates: every verdict's policy, limit, deny advice and revoke matches too.
3. The simulator notices when the verdict stream is wrong: a relay copies the processor's
   verdicts to another topic, corrupting one and adding a malformed record on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from producer_sim.kafka_io import install_policies
from producer_sim.plans import PLANS, policy_records
from producer_sim.processor_proc import ProcessorProcess
from producer_sim.runner import Simulation, start_verdict_consumer
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig
from tests.redis_targets import ON_SINGLE_AND_CLUSTER, RedisTarget

PARTITIONS = 4
SECRET = "simulator-test-secret-" + secrets.token_hex(8)


def sim_config(**overrides: object) -> SimConfig:
    base: dict[str, object] = dict(
        rate=400,
        duration=4,
        users=200,
        speed=30,
        sharers=0.2,
        duplicates=0.03,
        late=0.03,
        malformed=0.02,
        drain_timeout=60,
        progress=False,
    )
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]


ProcessorFactory = Callable[..., AbstractAsyncContextManager[SimSettings]]


@pytest.fixture
def running_processor(
    kafka_bootstrap: str, redis_target: RedisTarget, topic_factory, tmp_path: Path
) -> ProcessorFactory:
    """`async with running_processor(overflow_policy=...) as settings:` fresh topics, a healthy processor."""

    @asynccontextmanager
    async def start(overflow_policy: str = "reject", plans: bool = False) -> AsyncIterator[SimSettings]:
        events, verdicts, dlq = await topic_factory.many(3, PARTITIONS, prefix="sim")
        policies = f"sim-policies-{uuid.uuid4().hex[:10]}"
        settings = SimSettings(
            _env_file=None,
            kafka_bootstrap_servers=kafka_bootstrap,
            redis_url=redis_target.url,
            redis_cluster=redis_target.cluster,
            events_topic=events,
            verdicts_topic=verdicts,
            dlq_topic=dlq,
            policies_topic=policies,
            topic_partitions=PARTITIONS,
            overflow_policy=overflow_policy,
            jwt_secret=SECRET,
        )
        if plans:  # before the processor starts: it reads them all before its first event
            await install_policies(settings, policy_records(), grace_s=0)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            **redis_target.env(),
            "EVENTS_TOPIC": events,
            "VERDICTS_TOPIC": verdicts,
            "DLQ_TOPIC": dlq,
            "POLICIES_TOPIC": policies,
            "CONSUMER_GROUP": f"sim-{uuid.uuid4().hex[:8]}",
            "TOPIC_PARTITIONS": str(PARTITIONS),
            "OVERFLOW_POLICY": overflow_policy,
            "JWT_SECRET": SECRET,
        }
        async with ProcessorProcess(env, tmp_path / "processor.log") as proc:
            await proc.wait_healthy(90.0)
            yield settings
            assert proc.running, f"the processor exited:\n{proc.log_tail()}"

    return start


@ON_SINGLE_AND_CLUSTER  # the contract holds on one Redis and on a Redis Cluster
@pytest.mark.parametrize("policy", ["reject", "evict_oldest"])
async def test_every_verdict_of_the_processor_matches_the_model_under_faults(
    running_processor: ProcessorFactory, policy: str
) -> None:
    async with running_processor(overflow_policy=policy) as settings:
        report = await Simulation(sim_config(), settings).run()

    check, verdicts, sent = report["check"], report["verdicts"], report["sent"]
    assert (check["mismatches"], check["missing"], check["malformed_verdicts"]) == (0, 0, 0), check
    assert report["ok"]
    assert sent["events"] > 1000 and sent["duplicates"] > 0 and sent["late"] > 0 and sent["malformed"] > 0
    assert verdicts["unique"] >= sent["events"] - sent["duplicates"]
    assert verdicts["redelivered_identical"] >= sent["duplicates"]
    sharers = verdicts["by_user_kind"]["sharer"]
    if policy == "reject":
        assert sharers.get("deny", 0) > 0
    else:
        assert sharers.get("revoke", 0) > 0
    assert report["latency_ms"]["count"] > 0


@ON_SINGLE_AND_CLUSTER  # the contract holds on one Redis and on a Redis Cluster
@pytest.mark.parametrize("policy", ["reject", "evict_oldest"])
async def test_with_plans_every_policy_advice_and_terminate_matches_the_model(
    running_processor: ProcessorFactory, policy: str
) -> None:
    async with running_processor(overflow_policy=policy, plans=True) as settings:
        sim = Simulation(sim_config(plans=True, terminates=0.5), settings)
        report = await sim.run()

    check, pol = report["check"], report["policies"]
    assert (check["mismatches"], check["missing"], check["malformed_verdicts"]) == (0, 0, 0), check
    assert report["ok"]
    assert {f"plan:{name}" for name in PLANS} <= set(pol["in_force"])
    assert set(pol["starts_by_plan"]) == set(PLANS)
    if policy == "reject":
        assert pol["denies"]["device_class_limit"] > 0 and pol["denies"]["limit_exceeded"] > 0
        assert set(pol["advice_examples"]) == {"limit_exceeded", "device_class_limit"}
        assert pol["advice_examples"]["device_class_limit"]["conflicts"]
        term = pol["terminates"]
        assert term["sent"] > 0 and term["terminated"] > 0
        assert term["revoked_sessions"] == term["terminated"] and term["players_stopped"] > 0
    else:  # nothing is denied: starts evict, by class cap or total
        assert pol["denies"] == {"limit_exceeded": 0, "device_class_limit": 0}
        assert pol["evicted"] > 0 and sim.population.stopped_by_revoke > 0


async def _relay_with_corruption(
    settings: SimSettings, source: str, target: str, corrupted: list[bytes]
) -> None:
    """Copy verdicts from `source` to `target`; flip the first allow to a deny, add one malformed record."""
    consumer = await start_verdict_consumer(settings.kafka_bootstrap_servers, source, from_end=False)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    value = record.value
                    if not corrupted and orjson.loads(value)["decision"] == "allow":
                        wrong = {**orjson.loads(value), "decision": "deny", "reason": "limit_exceeded"}
                        value = orjson.dumps(wrong)
                        corrupted.append(value)
                        await producer.send_and_wait(target, b"{not a verdict", key=record.key)
                    await producer.send_and_wait(target, value, key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()


async def test_the_simulator_reports_a_corrupted_and_a_malformed_verdict(
    running_processor: ProcessorFactory, topic_factory
) -> None:
    async with running_processor() as processor_settings:
        relayed = await topic_factory(PARTITIONS, prefix="sim-relayed")
        corrupted: list[bytes] = []
        relay = asyncio.create_task(
            _relay_with_corruption(processor_settings, processor_settings.verdicts_topic, relayed, corrupted)
        )
        try:
            settings = processor_settings.model_copy(update={"verdicts_topic": relayed})
            report = await Simulation(
                sim_config(duration=2, duplicates=0, late=0, malformed=0), settings
            ).run()
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
    assert len(corrupted) == 1
    check = report["check"]
    assert not report["ok"]
    assert check["mismatch_kinds"] == {"decision": 1}, check
    assert check["malformed_verdicts"] == 1
    assert check["missing"] == 0
    eid = orjson.loads(corrupted[0])["eventId"]
    assert [e["eventId"] for e in check["examples"] if e["kind"] == "decision"] == [eid]
