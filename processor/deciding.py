"""Deciding one partition's batch: may it be decided now, the script call under the
partition's fencing epoch, and what a refusal means.

A batch is decided only by the partition state it was fetched under (partitions); one that
may not be decided now is rewound and read again. The script refuses a call with an older
epoch (FencedError: another instance owns the partition) and one whose Redis state is
behind what this owner applied (StateBehind: Redis lost writes; the partition replays its
log from Redis's applied offset, see repair.py, or halts when it cannot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from processor.batches import PartitionBatch, build_batch_verdicts
from processor.claims import PartitionClaimer, RetryRedis
from processor.lease_store import DecideCall, LeaseStore
from processor.metrics import Metrics
from processor.partitions import Partitions
from processor.policies import PolicyFollower
from processor.repair import StateRepairer
from processor.script_results import FencedError, StateBehind
from processor.tokens import TokenSigner

log = logging.getLogger("processor")


class BatchDecider:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        partitions: Partitions,
        store: LeaseStore,
        claimer: PartitionClaimer,
        policies: PolicyFollower,
        metrics: Metrics,
        retry_redis: RetryRedis,
        events_topic: str,
        signer: TokenSigner,
        verdict_partition: Callable[[bytes], int],
        repairer: StateRepairer,
    ) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self._store = store
        self._claimer = claimer
        self._policies = policies
        self._metrics = metrics
        self._retry_redis = retry_redis
        self._events_topic = events_topic
        self._signer = signer
        self._verdict_partition = verdict_partition
        self._repairer = repairer

    def ready(self, b: PartitionBatch) -> bool:
        """Whether this batch may be decided now; a batch that may not is read again later."""
        state = self._partitions.get(b.tp)
        if state is None:
            return False  # not ours: the next owner reads it from the committed offset
        if b.owner is None:
            # Returned before this assignment's callback ran: the position may have moved past
            # these records under the new assignment, so read them again.
            self._rewind(b)
            return False
        if not state.fetched_now(b.owner, b.generation):
            return False  # prefetched before a rewind or a revocation: the position was reset
        if not state.consuming:
            self._rewind(b)  # state lost, or fetched before the claim finished
            return False
        return True

    def _rewind(self, b: PartitionBatch) -> None:
        """Put the partition's position back to the batch's start, if it is still ours."""
        state = self._partitions.get(b.tp)
        if state is not None and b.tp in self._consumer.assignment():
            self._consumer.seek(b.tp, b.first_offset)
            state.rewound()

    async def decide_all(self, batches: list[PartitionBatch]) -> list[PartitionBatch]:
        """Decide the batches (each partition's at most once) in one Redis round trip and build
        their verdict records; return those decided. A batch refused (fenced, state behind) or
        revoked meanwhile is rewound or dropped as its partition's state says."""
        decided: list[PartitionBatch] = []
        todo = batches
        policies = {id(b): self._policies_of(b) for b in batches}  # resolved once per batch
        while todo:
            calls, live = [], []
            for b in todo:
                epoch = self._partitions.epoch(b.tp)
                if epoch is None:
                    self._rewind(b)  # revoked meanwhile: read again if it comes back
                    continue
                state = self._partitions.get(b.tp)
                applied = state.applied if state is not None else -1
                committed = self._partitions.committed(b.tp)
                calls.append(
                    DecideCall(
                        b.tp.partition, epoch, committed, b.last_offset, b.events, policies[id(b)], applied
                    )
                )
                live.append(b)
            if not calls:
                break
            outcomes = await self._retry_redis("decide", lambda calls=calls: self._store.decide_many(calls))
            todo = []
            for b, call, outcome in zip(live, calls, outcomes, strict=True):
                state = self._partitions.get(b.tp)
                if isinstance(outcome, StateBehind):
                    # Repair: Redis lost writes under this owner; replay from its applied offset
                    # (the repairer seeks there, and this batch is read again in the replay).
                    if state is not None:
                        await self._claimer.repair_or_halt(state, outcome.applied)
                    if state is None or not state.consuming:
                        self._rewind(b)
                elif isinstance(outcome, FencedError):
                    if await self._fenced(b, call.epoch, outcome):
                        todo.append(b)  # claimed again: decide it under the new epoch
                else:
                    b.results = outcome
                    if state is not None:
                        state.applied = max(state.applied, b.last_offset)
                        self._repairer.decided(state, b.first_offset, b.last_offset)  # repair: progress
                    decided.append(b)
        for b in decided:
            build_batch_verdicts(b, self._events_topic, self._signer, self._verdict_partition)
        return decided

    def _policies_of(self, batch: PartitionBatch) -> list | None:
        """Each event's policy, resolved once per batch: a redelivery gets its stored result,
        whatever changed since."""
        table = self._policies.table
        if not len(table):
            return None
        return [table.resolve(ev.user_id, ev.plan) for _o, _t, ev in batch.events]

    async def _fenced(self, batch: PartitionBatch, epoch: int, err: FencedError) -> bool:
        """A call refused for its epoch; True when the partition was claimed again and the
        batch may go again, else it is rewound or dropped."""
        self._metrics.fenced.inc()
        state = self._partitions.get(batch.tp)
        if state is not None and (err.current_epoch is None or err.current_epoch < epoch):
            # Redis lost the partition's hash (restart without data), or a failover lost this
            # owner's claim (repair: the epoch went back): take it again, which also runs the
            # state-loss checks.
            log.error(
                "partition state vanished from Redis, or went back before this owner's claim",
                extra={"partition": batch.tp.partition, "epoch": epoch, "redis_epoch": err.current_epoch},
            )
            generation = state.generation
            # A failure here (Kafka away) halts the partition visibly and retries the claim in the
            # background, as at an assignment, instead of ending the processor.
            await self._claimer.take_or_retry(state)
            if not state.consuming:
                self._rewind(batch)
                return False
            # A claim that started a repair reads this batch again in its replay.
            return state.generation == generation
        log.warning(
            "fenced: another instance owns this partition now; batch dropped",
            extra={"partition": batch.tp.partition, "first_offset": batch.first_offset},
        )
        self._rewind(batch)
        return False
