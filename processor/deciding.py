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
from processor.lease_store import LeaseStore
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

    async def decide_and_build(self, batch: PartitionBatch) -> bool:
        """Decide the batch and build its verdict records; False when it was not decided."""
        if not await self._decide(batch):
            return False
        build_batch_verdicts(batch, self._events_topic, self._signer, self._verdict_partition)
        return True

    async def _decide(self, batch: PartitionBatch) -> bool:
        """Run the batch's script call; False when the partition was taken by another owner."""
        tp = batch.tp
        # Resolved once per batch: a redelivery gets its stored result, whatever changed since.
        table = self._policies.table
        policies = [table.resolve(ev.user_id, ev.plan) for _o, _t, ev in batch.events] if len(table) else None
        while True:
            epoch = self._partitions.epoch(tp)
            if epoch is None:
                self._rewind(batch)  # revoked meanwhile: read again if it comes back
                return False
            state = self._partitions.get(tp)
            applied = state.applied if state is not None else -1
            try:
                batch.results = await self._retry_redis(
                    "decide",
                    lambda epoch=epoch, applied=applied: self._store.decide(
                        tp.partition,
                        epoch,
                        self._partitions.committed(tp),
                        batch.last_offset,
                        batch.events,
                        policies,
                        applied,
                    ),
                )
                if state is not None:
                    state.applied = max(state.applied, batch.last_offset)
                    self._repairer.decided(state, batch.first_offset, batch.last_offset)  # repair: progress
                return True
            except StateBehind as err:
                # Repair: Redis lost writes under this owner; replay from its applied offset
                # (the repairer seeks there, and this batch is read again in the replay).
                if state is not None:
                    await self._claimer.repair_or_halt(state, err.applied)
                    if not state.consuming:
                        self._rewind(batch)
                else:
                    self._rewind(batch)
                return False
            except FencedError as err:
                self._metrics.fenced.inc()
                state = self._partitions.get(tp)
                if state is not None and (err.current_epoch is None or err.current_epoch < epoch):
                    # Redis lost the partition's hash (restart without data), or a failover lost
                    # this owner's claim (repair: the epoch went back): take it again, which also
                    # runs the state-loss checks.
                    log.error(
                        "partition state vanished from Redis, or went back before this owner's claim",
                        extra={"partition": tp.partition, "epoch": epoch, "redis_epoch": err.current_epoch},
                    )
                    generation = state.generation
                    await self._claimer.take(state)
                    if not state.consuming:
                        self._rewind(batch)
                        return False
                    if state.generation != generation:
                        return False  # the claim started a repair: its replay reads this batch again
                    continue
                log.warning(
                    "fenced: another instance owns this partition now; batch dropped",
                    extra={"partition": tp.partition, "first_offset": batch.first_offset},
                )
                self._rewind(batch)
                return False
