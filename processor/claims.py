"""Taking ownership of an assigned partition: the fencing epoch, and the state-loss checks.

Kafka's committed offset and Redis's applied offset must agree. Redis knowing less than
Kafka committed (or than a running owner applied) means Redis lost its last writes (a
failover, an AOF restart): the partition replays its log from Redis's applied offset
(repair.py). What cannot be replayed halts the partition until an operator accepts it
(ACCEPT_STATE_LOSS=true): Redis holding no state at all for a partition with committed
offsets (wiped; Redis that kept the epoch but no decision is replayed from offset 0), the
records to replay gone from the log (at the claim, or a position that later fell below the
log start), or Redis knowing offsets beyond the end of the log (the topic was recreated: its
new records would be answered as replays). A claim that fails at any step halts as
`claim_failed` and is retried whole; every halt pauses its partition and shows in one gauge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from redis import exceptions as redis_errors

from processor.config import Settings
from processor.lease_store import Claim, LeaseStore
from processor.metrics import Metrics
from processor.partitions import Partitions, PartitionState
from processor.repair import StateRepairer
from processor.retrying import StopRequested

log = logging.getLogger("processor")

RetryRedis = Callable[[str, Callable[[], Awaitable]], Awaitable]


class PartitionClaimer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        store: LeaseStore,
        settings: Settings,
        metrics: Metrics,
        retry_redis: RetryRedis,
        partitions: Partitions,
        backoff: Callable[[int], Awaitable[None]],
        repairer: StateRepairer,
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._retry_redis = retry_redis
        self._partitions = partitions
        self._backoff = backoff
        self._repairer = repairer
        self._retries: set[asyncio.Task] = set()

    async def take_or_retry(self, state: PartitionState) -> None:
        """take(), but a claim that fails (Kafka or Redis away mid-rebalance) halts the partition
        visibly (`claim_failed`: paused, in the halted gauge and /health) and is retried in the
        background; aiokafka would swallow the error and leave the partition paused and unseen."""
        try:
            await self.take(state)
        except StopRequested:
            raise
        except Exception as exc:  # noqa: BLE001 - see above
            self._claim_failed(state, exc)
            task = asyncio.ensure_future(self._retry(state))
            self._retries.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._retries.discard)

    def _claim_failed(self, state: PartitionState, exc: BaseException) -> None:
        log.error(
            "claiming a partition failed; retrying",
            extra={"partition": state.tp.partition, "error": repr(exc)},
        )
        if self._ours(state):
            self.halt(state, "claim_failed")

    async def _retry(self, state: PartitionState) -> None:
        """Retry the claim until every step of it succeeded; the partition stays halted
        (`claim_failed`, paused) until then, whatever step failed."""
        attempt = 0
        while self._ours(state) and state.halt_reason == "claim_failed":
            attempt += 1
            try:
                await self._backoff(attempt)
                if not self._ours(state):
                    return  # revoked meanwhile
                await self.take(state)
            except StopRequested:
                return
            except Exception as exc:  # noqa: BLE001 - logged and retried, the partition stays halted
                self._claim_failed(state, exc)
        if state.consuming and state.tp in self._consumer.assignment():
            self._consumer.resume(state.tp)

    def _ours(self, state: PartitionState) -> bool:
        return self._partitions.get(state.tp) is state

    async def take(self, state: PartitionState) -> None:
        """Claim a new epoch for the partition and run the state-loss checks. The partition
        changes phase (consuming, repairing, halted) only once every step succeeded: a step that
        raises leaves it as it was (assigned or halted, paused; or consuming under its old epoch,
        whose calls the new one fences)."""
        tp = state.tp

        async def claim_if_still_ours() -> Claim | None:
            # A claim retried in the background (Redis away) for a partition revoked meanwhile must
            # not take an epoch after its new owner's: that owner would be fenced until the next
            # rebalance. So every attempt checks first (the request in flight is the only window).
            if not self._ours(state):
                return None
            return await self._store.claim(tp.partition)

        claim = await self._retry_redis("claim", claim_if_still_ours)
        committed = await self._consumer.committed(tp)
        if claim is None or not self._ours(state):
            return  # revoked meanwhile: the next assignment claims it for itself
        if committed is not None:
            state.committed_up_to(committed)  # a fact of Kafka's, halted or not (the lag reads it)
        if claim.applied is not None or committed:
            end = (await self._consumer.end_offsets([tp]))[tp]
            if (claim.applied is not None and claim.applied >= end) or (committed or 0) > end:
                await self._topic_recreated(state, claim, committed, end)
                return
        if committed is None and state.epoch is None:
            # Nothing committed: the contract starts at the earliest retained event. Said here,
            # as the consumer never resets a position by itself (see consumer.py).
            log_start = await self._log_start(state)
            if self._complete(state, claim, committed):
                self._consumer.seek(tp, log_start)
            return
        if not committed or (claim.applied is not None and claim.applied >= committed - 1):
            self._complete(state, claim, committed)  # nothing decided yet, or Redis knows it all
            return
        applied = claim.applied
        if applied is None and claim.epoch > 1 and not claim.wiped:
            # Redis kept the partition's epoch but none of its decisions (only its first writes
            # were lost): its state is the empty one before offset 0, a replay from there.
            applied = -1
        elif applied is None:
            # Wiped: said in Redis first, so that the epoch this claim took does not read as an
            # owner's at the next claim (a retry, a restart) until an operator accepts the loss.
            await self._retry_redis("mark wiped", lambda: self._store.mark_wiped(tp.partition))
        where = {"partition": tp.partition, "committed": committed, "applied": claim.applied}
        if applied is not None:
            log_start = await self._replay_from(
                state, applied, "claim", complete=lambda: self._complete(state, claim, committed)
            )
            if log_start is None:
                return
            where["log_start"] = log_start
        if self._settings.accept_state_loss:
            await self._store.accept_state_loss(tp.partition, claim.epoch, committed - 1)
            if self._complete(state, claim, committed):
                log.warning(
                    "accepting lost Redis state (ACCEPT_STATE_LOSS=true): deciding from the state Redis "
                    "holds",
                    extra=where,
                )
            return
        if not self._ours(state):
            return
        self.halt(state, "state_lost")
        if applied is None:
            log.error(
                "Redis lost the lease state of this partition (it holds none, but Kafka has committed "
                "offsets): it is not decided until an operator restarts the processor with "
                "ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
                extra=where,
            )
        else:
            self._log_records_gone(where)

    def _complete(self, state: PartitionState, claim: Claim, committed: int | None) -> bool:
        """The claim's last step: the partition is consuming under its new epoch (False: it was
        revoked meanwhile, nothing changes)."""
        if not self._ours(state):
            return False
        state.claimed(claim.epoch, -1 if committed is None else committed)
        self._metrics.show_halt(state.tp.partition, None)
        return True

    async def show_active_leases(self, claimed) -> None:
        """The ledger's counts of newly owned partitions, before their first batch (an idle
        partition keeps its leases); each batch's reply updates them."""
        for tp in claimed:
            try:
                counts = await self._store.active_lease_counts(tp.partition)
            except (redis_errors.RedisError, OSError) as err:
                where = {"partition": tp.partition, "error": str(err)}
                log.warning("reading lease counts failed", extra=where)
                continue
            self._metrics.set_active_leases(tp.partition, counts)

    async def repair_or_halt(self, state: PartitionState, applied: int) -> None:
        """Redis's applied offset went below what this owner applied (the script's BEHIND):
        replay from it (-1: Redis kept the epoch but no decision, a replay from offset 0), or
        halt when the records are gone from the log."""
        log_start = await self._replay_from(state, applied, "running")
        if log_start is None:
            return
        self.halt(state, "state_lost")
        where = {"partition": state.tp.partition, "applied": applied, "owner_applied": state.applied}
        self._log_records_gone({**where, "log_start": log_start})

    async def positions_lost(self, err: OffsetOutOfRangeError | NoOffsetForPartitionError) -> None:
        """What getmany raised instead of resetting positions (see consumer.py), per partition."""
        arg = err.args[0] if err.args else None
        for tp, offset in arg.items() if isinstance(arg, dict) else [(arg, None)]:
            if isinstance(tp, TopicPartition):
                await self.position_lost(tp, offset)

    async def position_lost(self, tp: TopicPartition, offset: int | None) -> None:
        """The consumer met an owned partition's position out of the log's range (its start moved
        past it: records deleted, or past retention, after the claim's check), or none at all.
        Never a silent reset: the records there were never decided."""
        state = self._partitions.get(tp)
        if state is None or tp not in self._consumer.assignment():
            return
        log_start = await self._log_start(state)
        if not self._ours(state):
            return
        if offset is None or (state.consuming and state.committed < 0 and state.applied < 0):
            # No committed offset, nothing decided: the earliest retained event is the start.
            self._consumer.seek(tp, log_start)
            state.rewound()
            return
        if not state.consuming:
            return  # halted, or its claim (which sets the position) is not done yet
        where = {"partition": tp.partition, "position": offset, "log_start": log_start}
        if offset is not None and offset >= log_start:
            # The log ends before the position: truncated or recreated (the claim's check).
            self.halt(state, "events_topic_recreated")
            log.error(
                "the events partition ends before this owner's position: the topic was recreated or "
                "truncated. It is not decided until an operator restarts the processor",
                extra=where,
            )
            return
        if self._settings.accept_state_loss:
            log.warning(
                "accepting records gone from the log (ACCEPT_STATE_LOSS=true): deciding from its start",
                extra=where,
            )
            self._consumer.seek(tp, log_start)
            state.rewound()
            return
        self.halt(state, "state_lost")
        self._log_records_gone(where)

    async def _replay_from(
        self, state: PartitionState, applied: int, found: str, complete: Callable[[], bool] | None = None
    ) -> int | None:
        """Start replaying the partition from Redis's `applied` + 1, up to the furthest offset
        decided before (this owner's applied, or Kafka's committed - 1); None when started (after
        `complete`, a claim's last step), else the log start offset that lies past it (the
        records are gone: it cannot be replayed)."""
        log_start = await self._log_start(state)
        if applied + 1 < log_start:
            return log_start
        if self._ours(state) and (complete is None or complete()):
            self._repairer.start(state, applied, max(state.applied, state.committed - 1), found)
        return None

    async def _log_start(self, state: PartitionState) -> int:
        """The partition's log start offset (Kafka away: retried; the replay must not start
        below it, or the consumer's offset reset would skip the gap on a stale state)."""
        attempt = 0
        while True:
            try:
                return (await self._consumer.beginning_offsets([state.tp]))[state.tp]
            except KafkaError as exc:
                attempt += 1
                log.warning("reading the log start failed; retrying", extra={"error": repr(exc)})
                await self._backoff(attempt)

    @staticmethod
    def _log_records_gone(where: dict) -> None:
        log.error(
            "Redis lost lease writes of this partition and the records to replay them are gone from the "
            "log (deleted, or past retention): it is not decided until an operator restarts the processor "
            "with ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
            extra=where,
        )

    async def _topic_recreated(
        self, state: PartitionState, claim: Claim, committed: int | None, end: int
    ) -> None:
        tp = state.tp
        where = {"partition": tp.partition, "applied": claim.applied, "committed": committed, "log_end": end}
        if self._settings.accept_state_loss:
            await self._store.accept_state_loss(tp.partition, claim.epoch, -1)
            if self._complete(state, claim, committed):
                log.warning(
                    "accepting a recreated events topic (ACCEPT_STATE_LOSS=true): its log is decided "
                    "from the start, with the leases Redis holds",
                    extra=where,
                )
            return
        if not self._ours(state):
            return
        self.halt(state, "events_topic_recreated")
        log.error(
            "the events partition ends before the offsets Redis applied: the topic was recreated or "
            "truncated, and its new records would be taken for replays. It is not decided until an "
            "operator restarts the processor with ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
            extra=where,
        )

    def halt(self, state: PartitionState, reason: str) -> None:
        """Every halt, whatever its reason: paused (nothing fetched, nothing decided), shown in the
        halted gauge with its reason and on /health."""
        self._repairer.forget(state)
        state.halt(reason)
        if state.tp in self._consumer.assignment():
            self._consumer.pause(state.tp)
        self._metrics.show_halt(state.tp.partition, reason)
