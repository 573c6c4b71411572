"""The consume loop. One cycle: gather -> decide every partition in one Redis round trip ->
publish -> commit.

`getmany` returns the records of several partitions; while records flow, the consumer's
fetches gather for up to GATHER_MS (the cycle's policy, cycle.py). Every partition's valid
events are decided by its own atomic script call, all the calls in one pipeline (deciding);
the verdicts and dead letters are published in one produce round (publisher); once Kafka has
acknowledged all of them the offsets are handed to the committer, which keeps at most one
commit in flight and starts one at most every COMMIT_INTERVAL_MS. The next cycle's records
are fetched and decoded while this one is decided. A crash anywhere replays the tail, and the
stored results turn the replay into identical verdicts. Each partition's life (assigned,
consuming, halted, revoked) is one PartitionState (partitions); waiting out an absent Redis
is the retrier's job (retrying).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from redis.asyncio import Redis

from processor.batches import PartitionBatch, observe, split
from processor.claims import PartitionClaimer
from processor.committer import OffsetCommitter
from processor.config import Settings
from processor.connections import kafka_access, redis_access
from processor.consumer import FetchPacing, RefusedFetches, events_consumer
from processor.cycle import CyclePolicy
from processor.deciding import BatchDecider
from processor.http import HttpServer
from processor.kafka_checks import check_kafka_login
from processor.key_mismatches import KeyMismatches
from processor.lag import LagWatch
from processor.lease_store import LeaseStore, Rules
from processor.metrics import Metrics
from processor.partitioning import VERDICTS_PARTITIONER, PartitionCheck, key_partitioner
from processor.partitions import Partitions
from processor.policies import PolicyFollower, follow_policies
from processor.publisher import VerdictPublisher, VerdictRecords
from processor.readiness import liveness, readiness
from processor.redis_checks import (
    check_redis_login,
    check_redis_mode,
    check_redis_safe,
    warn_uneven_partitions,
)
from processor.repair import StateRepairer
from processor.replies import ReplySender
from processor.retrying import Retrier, StopRequested
from processor.tokens import make_signer
from processor.topics import ensure_processor_topics

log = logging.getLogger("processor")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._processor.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._processor.on_assigned(assigned)


def _no_partitions(key: bytes) -> int:
    raise RuntimeError("the processor is not started")


class Processor:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._signer = make_signer(settings)
        self._redis: Redis | None = None
        self._store: LeaseStore | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: VerdictPublisher | None = None
        self._replies: ReplySender | None = None
        self._committer: OffsetCommitter | None = None
        self._claimer: PartitionClaimer | None = None
        self._repairer: StateRepairer | None = None
        self._decider: BatchDecider | None = None
        self.policies: PolicyFollower | None = None
        self._http: HttpServer | None = None
        self._lag: LagWatch | None = None
        self._verdict_partition = _no_partitions
        self._placement: PartitionCheck | None = None  # the events topic's, when checked
        self._mismatches = KeyMismatches(self.metrics, settings.event_partitioner)
        self.partitions = Partitions()
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._retrier = Retrier(self.metrics, self._stopping)
        self._retry_redis = self._retrier.retry_redis
        self._backoff = self._retrier.backoff
        self._consuming = False
        self._assigning = False  # in the assignment callback: new partitions paused until claimed
        self._last_poll = 0.0
        self._in_cycle: tuple[str, float] | None = None  # (step, wall clock when it began), /health
        self._cycle = CyclePolicy(
            settings.gather_ms,
            settings.gather_bytes,
            settings.fetch_max_wait_ms,
            settings.commit_interval_ms / 1000,
        )
        self._pacing: FetchPacing | None = None
        self._fetches: RefusedFetches | None = None
        self.http_port: int | None = None

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        kafka = kafka_access(s)
        await check_kafka_login(kafka)  # a refused login or certificate: one line, not a retry
        counts = await ensure_processor_topics(kafka, s)
        self._verdict_partition = key_partitioner(VERDICTS_PARTITIONER, counts[s.verdicts_topic])
        if s.check_event_partition:
            events = counts[s.events_topic]
            # Same hash, same count (the usual case): one function, so one cache, for both topics.
            same = s.event_partitioner == VERDICTS_PARTITIONER and events == counts[s.verdicts_topic]
            self._placement = PartitionCheck(
                s.event_partitioner, events, self._verdict_partition if same else None
            )
        self.policies = await follow_policies(s, self.metrics)  # read to its end before any event
        redis = redis_access(s)
        self._redis = redis.client(socket_timeout=10, socket_connect_timeout=5)
        self._store = LeaseStore(
            self._redis,
            s.events_topic,
            Rules(
                s.max_streams,
                s.lease_ttl_ms,
                s.overflow_policy,
                s.event_id_memory,
                s.idle_user_ttl_seconds * 1000,
                s.max_expiries_per_call,
            ),
        )
        await self._retry_redis("Redis login", lambda: check_redis_login(self._redis, redis))
        await self._retry_redis("Redis mode check", lambda: check_redis_mode(self._redis, s.redis_cluster))
        await self._retry_redis("maxmemory-policy check", lambda: check_redis_safe(self._redis, s))
        await self._retry_redis(
            "partition count check", lambda: self._store.check_partition_count(counts[s.events_topic])
        )
        partitions = counts[s.events_topic]
        await self._retry_redis(
            "partition spread", lambda: warn_uneven_partitions(self._redis, s.events_topic, partitions)
        )
        self._publisher = VerdictPublisher(kafka, s.verdicts_topic, s.dlq_topic, self.metrics, self._backoff)
        await self._publisher.start()
        self._replies = ReplySender(
            kafka,
            self.metrics,
            s.reply_topics,
            (s.events_topic, s.verdicts_topic, s.dlq_topic, s.policies_topic),
        )
        self._consumer = events_consumer(s, kafka)
        self._fetches = RefusedFetches(kafka, {s.events_topic: "Read"}, self._backoff)
        self._pacing = FetchPacing(self._consumer, self._cycle)
        self._committer = OffsetCommitter(self._consumer, self.partitions, self.metrics, self._cycle)
        policies = self.policies
        self._repairer = StateRepairer(self._consumer, self.metrics, lambda: policies.changed_at)
        self._claimer = PartitionClaimer(
            self._consumer,
            self._store,
            s,
            self.metrics,
            self._retry_redis,
            self.partitions,
            self._backoff,
            self._repairer,
        )
        self._decider = BatchDecider(
            self._consumer,
            self.partitions,
            self._store,
            self._claimer,
            self.policies,
            self.metrics,
            self._retry_redis,
            s.events_topic,
            self._signer,
            self._verdict_partition,
            self._repairer,
        )
        self._consumer.subscribe([s.events_topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._lag = LagWatch(self._consumer, self.partitions, self.metrics, s.lag_interval_ms / 1000)
        self._lag.start()
        self._http = HttpServer(s.http_port, self.metrics.registry, self.health, self.live)
        await self._http.start()
        self.http_port = self._http.port
        log.info(
            "processor started",
            extra={
                "group": s.consumer_group,
                "events_topic": s.events_topic,
                "http_port": self.http_port,
                "max_streams": s.max_streams,
                "policy": s.overflow_policy,
                "event_partitioner": s.event_partitioner if s.check_event_partition else "not checked",
            },
        )

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return."""
        self._stopping.set()

    async def run(self) -> None:
        try:
            await self.start()  # a start that fails half-way still closes what it opened
            await self.consume_until_stopped()
        finally:
            await self.close()

    async def close(self) -> None:
        self._consuming = False
        if self._lag is not None:
            await self._lag.stop()
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group, partitions move at once
        if self._publisher is not None:
            await self._publisher.stop()
        if self._replies is not None:
            await self._replies.stop()
        if self.policies is not None:
            await self.policies.stop()
        if self._http is not None:
            await self._http.stop()
        if self._redis is not None:
            await self._redis.aclose()
        log.info("processor stopped")

    @property
    def halted_partitions(self) -> list[int]:
        return [s.tp.partition for s in self.partitions.halted()]

    def _stalled(self) -> bool:
        return time.monotonic() - self._last_poll > max(30.0, self.settings.max_poll_interval_ms / 1000)

    def health(self) -> tuple[bool, dict]:
        """Readiness (readiness.py)."""
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        failing = self._publisher.failing if self._publisher is not None else None
        return readiness(
            self._consuming,
            self._assigning,
            len(assigned),
            self.partitions,
            failing,
            self._stalled(),
            self._retrier.in_progress(),
            self._in_cycle,
            self._fetches.detail if self._fetches is not None else None,
        )

    def live(self) -> tuple[bool, dict]:
        """Liveness (readiness.py)."""
        return liveness(self._consuming, self._stalled())

    # -- rebalancing --------------------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight finish, and commit what it published while we still own it.
        async with self._batch_lock:
            await self._commit_pending()
        if self._committer is not None:
            self._committer.forget(revoked)
        for tp in revoked:
            state = self.partitions.revoke(tp)
            if state is not None and self._repairer is not None:
                self._repairer.forget(state)  # repair: its next owner finds the loss at its claim
            self.metrics.forget_partition(tp.partition)
        self.metrics.assigned.set(0)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self._consumer is not None and self._claimer is not None
        # The fetcher may already fetch the new partitions: hold them until they are claimed
        # (getmany returns nothing of a paused partition; its position stays put).
        self._consumer.pause(*assigned)
        self._assigning = True
        try:
            for tp in sorted(assigned):
                await self._claimer.take_or_retry(self.partitions.assign(tp))
            claimed = [tp for tp in assigned if self.partitions.epoch(tp) is not None]
            self._consumer.resume(*claimed)
            self.metrics.assigned.set(len(assigned))
            await self._claimer.show_active_leases(claimed)
        finally:
            self._assigning = False
        log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)})

    # -- the loop -----------------------------------------------------------------------
    async def consume_until_stopped(self) -> None:
        assert self._consumer is not None
        self._consuming = True
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        fetch = asyncio.ensure_future(self._fetch())
        try:
            while not self._stopping.is_set():
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    break
                batches = fetch.result()
                # Fetch and decode the next batch while Redis decides this one.
                fetch = asyncio.ensure_future(self._fetch())
                if not batches:
                    continue
                try:
                    async with self._batch_lock:
                        await self._process(batches)
                except StopRequested:
                    break
        finally:
            # A prefetched batch is dropped uncommitted: the next owner reads it again.
            fetch.cancel()
            stop_wait.cancel()
            self._consuming = False
            await self._commit_pending()

    async def _fetch(self) -> list[PartitionBatch]:
        """The next cycle's records. While records flow, the consumer's fetches gather for up
        to GATHER_MS (FetchPacing); after a poll that found nothing it long-polls and answers
        the first record at once."""
        assert self._consumer is not None and self._pacing is not None and self._claimer is not None
        assert self._fetches is not None
        self._last_poll = time.monotonic()
        try:
            records = await self._fetches.getmany(  # a refused fetch (an ACL revoked) is held: {}
                self._consumer,
                timeout_ms=self.settings.fetch_timeout_ms,
                max_records=self.settings.batch_max_records,
            )
        except (OffsetOutOfRangeError, NoOffsetForPartitionError) as err:
            async with self._batch_lock:  # answered between two batches, never a silent reset
                await self._claimer.positions_lost(err)
            return []
        self._pacing.set(idle=not records)
        # Tagged now: no rebalance runs between here and getmany.
        return [self._batch(tp, recs, self._tag(tp)) for tp, recs in records.items() if recs]

    def _tag(self, tp) -> tuple[object, int]:
        """The partition state (and its generation) records fetched now belong to."""
        state = self.partitions.get(tp)
        return state, state.generation if state is not None else 0

    def _batch(self, tp, recs: list, tag: tuple[object, int]) -> PartitionBatch:
        self.metrics.batch_size.observe(len(recs))
        self._committer.fetched(tp, recs[-1].offset)  # waits for its commit from now on
        batch = split(tp, recs, self._placement)
        batch.owner, batch.generation = tag
        return batch

    async def _process(self, batches: list[PartitionBatch]) -> None:
        assert self._decider is not None
        started = time.perf_counter()
        work = [b for b in batches if self._decider.ready(b)]
        if not work:
            return
        self._in_cycle = ("decide", time.time())
        try:
            batches = await self._decider.decide_all(work)  # one Redis round trip for all
            self._in_cycle = ("publish", time.time())
            await self._publish(batches)
        finally:
            self._in_cycle = None
        assert self._committer is not None and self._consumer is not None
        for b in batches:
            self._committer.published(b.tp, b.last_offset)
            observe(self.metrics, b)
            if b.dead_letters:
                self._mismatches.observe(b.dead_letters)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _publish(self, batches: list[PartitionBatch]) -> None:
        """Produce every verdict and dead letter of the batches; return when Kafka acknowledged all."""
        assert self._publisher is not None
        by_partition: VerdictRecords = {}
        for b in batches:
            for target, key, value in b.verdicts:
                by_partition.setdefault(target, []).append((key, value, None))
        dead_letters = [dl for b in batches for dl in b.dead_letters]
        replies = [r for b in batches for r in b.replies]
        if not replies:
            await self._publisher.publish(by_partition, dead_letters)
            return
        # Both before the commit; side by side, so a waiting requester is not kept waiting twice.
        assert self._replies is not None
        await asyncio.gather(self._publisher.publish(by_partition, dead_letters), self._replies.send(replies))

    async def _commit_pending(self) -> None:
        if self._committer is not None:
            await self._committer.flush()
