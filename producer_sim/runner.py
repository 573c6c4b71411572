"""The simulation run: produce the population's events, consume and check the verdicts.

Order of things: make sure the topics exist, position a verdict consumer at the END of the
verdicts topic (every partition assigned, positions resolved) so it sees exactly this run's
verdicts, then produce with an idempotent producer (per-partition order is kept, so per
user the produce order is the log order the checker assumes), then wait for the
outstanding verdicts up to the drain timeout, then report.

Simulated time: the clock starts in the past (now - expected span - 5 min), so record
timestamps never run more than Kafka's one hour into the future; a guard throttles if they
would. Pacing: `speed` ties simulated seconds to wall seconds, `rate` caps records per
second; with neither, records go out as fast as the producer takes them.

Policies: with `plans`, the plans' records (producer_sim.plans) are written to the policies
topic before anything is produced; either way the whole policies topic is read into the
table the checker resolves each event's policy from. Policies must not change during a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from processor.connections import kafka_access
from processor.partitioning import ProducerPartitioner
from processor.reference_model import ReferenceModel
from producer_sim.checker import Checker, percentile
from producer_sim.faults import FaultConfig, Faults, encode_event
from producer_sim.kafka_io import (
    ensure_sim_topics,
    install_policies,
    read_policy_table,
    start_verdict_consumer,
)
from producer_sim.plans import policy_records
from producer_sim.plot import Timeline
from producer_sim.population import Population, PopulationConfig, estimated_events_per_second
from producer_sim.report import SendStats, build_report
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig, simulated_span_s

log = logging.getLogger(__name__)

FUTURE_LIMIT_MS = 55 * 60 * 1000  # stay under the broker's 1 h (log.message.timestamp.after.max.ms)
CLOCK_MARGIN_MS = 5 * 60 * 1000


class DeliveryError(RuntimeError):
    """A record was not acknowledged by the broker."""


class Simulation:
    def __init__(self, cfg: SimConfig, settings: SimSettings, console: Console | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.console = console or Console(stderr=True)
        model = ReferenceModel(
            max_streams=settings.max_streams,
            lease_ttl_ms=settings.lease_ttl_ms,
            policy=settings.overflow_policy,
            event_id_memory=settings.event_id_memory,
        )
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.checker = Checker(model, jwt_secret=secret, event_partitioner=settings.event_partitioner)
        pop_cfg = PopulationConfig(
            users=cfg.users,
            seed=cfg.seed,
            heartbeat_interval_ms=int(cfg.heartbeat_interval_s * 1000),
            sharers=cfg.sharers,
            families=cfg.families,
            max_streams=settings.max_streams,
            run_id=cfg.run_id,
            plans=cfg.plans,
            terminates=cfg.terminates,
        )
        sim_rate = estimated_events_per_second(pop_cfg) * (1 + cfg.duplicates + cfg.malformed)
        self.span_s = simulated_span_s(cfg, sim_rate)
        self.origin_ms = int(time.time() * 1000 - self.span_s * 1000 - CLOCK_MARGIN_MS)
        self.population = Population(PopulationConfig(**{**pop_cfg.__dict__, "start_ms": self.origin_ms}))
        self.faults = Faults(FaultConfig(cfg.duplicates, cfg.late, cfg.malformed), cfg.seed)
        self.sent = SendStats()
        self.timeline = Timeline(t0=time.monotonic())
        self._inflight: set[asyncio.Future[Any]] = set()
        self._delivery_error: BaseException | None = None
        self._t0 = 0.0
        self._deadline = math.inf
        self.produce_seconds = 0.0
        self.drain_seconds = 0.0
        self.first_verdict_at: float | None = None
        self.last_verdict_at: float | None = None
        self._phase = "producing"
        self.report: dict[str, Any] | None = None
        self.policies: dict[str, dict] = {}  # the policies in force during the run

    async def load_policies(self) -> None:
        """Write the plans' policies (with plans on), read the table every event resolves in."""
        s = self.settings
        if self.cfg.plans:
            table = await install_policies(s, policy_records(), self.cfg.policy_grace_s)
        else:
            table = await read_policy_table(
                kafka_access(s), s.policies_topic, s.max_streams, s.overflow_policy
            )
        self.checker.policies = table
        self.policies = table.listing()

    # ------------------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        settings = self.settings
        counts = await ensure_sim_topics(settings)
        # The model follows each events partition's stream time: the ledger's expiries are checked too.
        self.checker.partitions = counts[settings.events_topic]
        await self.load_policies()
        kafka = kafka_access(settings)
        consumer = await start_verdict_consumer(
            kafka, settings.verdicts_topic, counts[settings.verdicts_topic]
        )
        producer = kafka.producer(
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
            partitioner=ProducerPartitioner(settings.event_partitioner),  # where the processor looks
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            await producer.start()
            consume = asyncio.create_task(self._consume(consumer), name="verdict-consumer")
            tasks = [consume, asyncio.create_task(self._monitor(), name="monitor")]
            self.timeline = Timeline(t0=time.monotonic())
            await self._produce(producer)
            await producer.flush()
            if self._inflight:
                await asyncio.wait(list(self._inflight))
            self.produce_seconds = time.monotonic() - self._t0
            if self._delivery_error is not None:
                raise DeliveryError(
                    f"the broker did not accept a record: {self._delivery_error!r}; the run is void"
                ) from self._delivery_error
            self._phase = "draining"
            await self._drain(consume)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await producer.stop()
            await consumer.stop()
        self.checker.finish()
        self.report = build_report(
            self.checker,
            self.sent,
            run=self._run_info(),
            produce_seconds=self.produce_seconds,
            drain_seconds=self.drain_seconds,
            first_verdict_at=self.first_verdict_at,
            last_verdict_at=self.last_verdict_at,
            stopped_by_revoke=self.population.stopped_by_revoke,
        )
        return self.report

    def _run_info(self) -> dict[str, Any]:
        cfg, s = self.cfg, self.settings
        return {
            "run_id": cfg.run_id,
            "seed": cfg.seed,
            "users": cfg.users,
            "rate": cfg.rate,
            "speed": cfg.speed,
            "duration": cfg.duration,
            "events": cfg.events,
            "heartbeat_interval_s": cfg.heartbeat_interval_s,
            "sharers": cfg.sharers,
            "families": cfg.families,
            "duplicates": cfg.duplicates,
            "late": cfg.late,
            "malformed": cfg.malformed,
            "plans": cfg.plans,
            "terminates": cfg.terminates,
            "policies": self.policies,
            "events_topic": s.events_topic,
            "verdicts_topic": s.verdicts_topic,
            "max_streams": s.max_streams,
            "lease_ttl_seconds": s.lease_ttl_seconds,
            "overflow_policy": s.overflow_policy,
            "event_id_memory": s.event_id_memory,
            "sim_start_ms": self.origin_ms,
            "tokens_verified": s.jwt_secret is not None,
        }

    # producing ---------------------------------------------------------------------------------
    async def _pace(self, sim_ts: int) -> bool:
        """Wait until the record at simulated time `sim_ts` is due; False when the run is over."""
        cfg = self.cfg
        if self.sent.records >= (cfg.events or math.inf) or self._delivery_error is not None:
            return False
        now = time.monotonic()
        target = now
        if cfg.speed is not None:
            target = max(target, self._t0 + (sim_ts - self.origin_ms) / 1000 / cfg.speed)
        if cfg.rate is not None:
            target = max(target, self._t0 + self.sent.records / cfg.rate)
        ahead_ms = sim_ts - time.time() * 1000 - FUTURE_LIMIT_MS
        if ahead_ms > 0:
            target = max(target, now + ahead_ms / 1000)
        if target >= self._deadline:
            return False
        if target - now > 0.001:
            await asyncio.sleep(target - now)
        elif self.sent.records % 512 == 0:
            await asyncio.sleep(0)  # let the consumer and the progress display run
        return time.monotonic() < self._deadline

    async def _send(
        self, producer: AIOKafkaProducer, key: bytes | None, value: bytes | None, ts: int, eid: str | None
    ) -> None:
        fut = await producer.send(self.settings.events_topic, value=value, key=key, timestamp_ms=ts)
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._delivered(f, eid))
        self.sent.records += 1

    def _delivered(self, fut: asyncio.Future[Any], event_id: str | None) -> None:
        self._inflight.discard(fut)
        if fut.cancelled():
            self._delivery_error = self._delivery_error or asyncio.CancelledError("send cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            if self._delivery_error is None:
                self._delivery_error = exc
                log.error("delivery failed: %r", exc)
            return
        if event_id is not None:
            self.checker.acked(event_id, time.monotonic())

    async def _produce(self, producer: AIOKafkaProducer) -> None:
        cfg, checker, faults, sent = self.cfg, self.checker, self.faults, self.sent
        self._t0 = time.monotonic()
        self._deadline = self._t0 + cfg.duration if cfg.duration is not None else math.inf
        while True:
            ev = self.population.next_event()
            for due, dup, value in faults.due_duplicates(ev.ts):
                if not await self._pace(due):
                    return
                if not checker.remembers(dup.user_id, dup.event_id):
                    # Beyond the eventId memory a re-send is a new event, not a duplicate: skip it.
                    sent.duplicates_skipped += 1
                    continue
                checker.expect(dup, due)
                await self._send(producer, dup.user_id.encode(), value, due, dup.event_id)
                sent.duplicates += 1
            bad = faults.maybe_malformed(ev)
            if bad is not None:
                if not await self._pace(ev.ts):
                    return
                checker.expect_malformed(bad.event_id)
                await self._send(producer, bad.key, bad.value, ev.ts, None)
                sent.malformed[bad.kind] += 1
            if not await self._pace(ev.ts):
                return
            record_ts, late = faults.record_timestamp(ev)
            value = encode_event(ev)
            decision = checker.expect(ev, record_ts)
            conflicts = [c.session_id for c in decision.conflicts or ()]
            self.population.feedback(ev, decision.decision == "allow", conflicts, decision.evicted)
            await self._send(producer, ev.user_id.encode(), value, record_ts, ev.event_id)
            sent.by_type[ev.type] += 1
            sent.late += late
            faults.maybe_duplicate(ev, value)

    # consuming ---------------------------------------------------------------------------------
    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        checker = self.checker
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not batches:
                continue
            now = time.monotonic()
            if self.first_verdict_at is None:
                self.first_verdict_at = now
            self.last_verdict_at = now
            for records in batches.values():
                for record in records:
                    checker.on_verdict(record.value, now)

    async def _drain(self, consume: asyncio.Task[None]) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.cfg.drain_timeout
        while self.checker.outstanding > 0 and time.monotonic() < deadline:
            if consume.done():
                consume.result()  # raises what stopped the consumer
                raise RuntimeError("the verdict consumer stopped")
            await asyncio.sleep(0.05)
        self.drain_seconds = time.monotonic() - t0

    # progress ----------------------------------------------------------------------------------
    async def _monitor(self) -> None:
        progress = None
        task_id = None
        cfg = self.cfg
        if cfg.progress:
            progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                TaskProgressColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
                refresh_per_second=4,
            )
            total = cfg.events if cfg.events is not None else cfg.duration
            task_id = progress.add_task("producing", total=total, stats="")
            progress.start()
        last_t, last_sent, last_verdicts = time.monotonic(), 0, 0
        ticks = 0
        try:
            while True:
                await asyncio.sleep(0.25)
                ticks += 1
                now = time.monotonic()
                checker = self.checker
                if ticks % 4 == 0:
                    self.timeline.sample(now, self.sent.records, checker.unique)
                if progress is None or task_id is None:
                    continue
                dt = now - last_t
                send_rate = (self.sent.records - last_sent) / dt
                verdict_rate = (checker.unique - last_verdicts) / dt
                last_t, last_sent, last_verdicts = now, self.sent.records, checker.unique
                recent = sorted(checker.latencies_ms[-2000:])
                p99 = percentile(recent, 0.99)
                stats = (
                    f"sent {self.sent.records} {send_rate:,.0f}/s | verdicts {checker.unique} "
                    f"{verdict_rate:,.0f}/s | p99 {'-' if p99 is None else f'{p99:.0f}ms'} | "
                    f"waiting {checker.outstanding} | wrong {checker.failures}"
                )
                if self._phase == "producing":
                    done = self.sent.records if cfg.events is not None else now - self._t0
                    progress.update(task_id, completed=done, stats=stats)
                else:
                    progress.update(task_id, description="draining", stats=stats)
        finally:
            if progress is not None:
                progress.stop()
