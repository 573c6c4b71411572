"""Taking ownership of an assigned partition: the fencing epoch, and the state-loss checks.

Kafka's committed offset and Redis's applied offset must agree. Redis knowing less than
Kafka committed (or than a running owner applied) means Redis lost its last writes (a
failover, an AOF restart): the partition replays its log from Redis's applied offset
(repair.py). What cannot be replayed halts the partition until an operator accepts it
(ACCEPT_STATE_LOSS=true): Redis holding no state at all for a partition with committed
offsets (wiped), the records to replay gone from the log, or Redis knowing offsets beyond
the end of the log (the topic was recreated: its new records would be answered as replays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from processor.config import Settings
from processor.lease_store import Claim, LeaseStore
from processor.metrics import Metrics
from processor.partitions import Partitions, PartitionState
from processor.repair import StateRepairer

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
        visibly (`claim_failed`) and is retried in the background; aiokafka would swallow the
        error and leave the partition paused and unseen."""
        try:
            await self.take(state)
        except Exception as exc:  # noqa: BLE001 - see above
            log.error(
                "claiming a partition failed; retrying",
                extra={"partition": state.tp.partition, "error": repr(exc)},
            )
            state.halt("claim_failed")
            task = asyncio.ensure_future(self._retry(state))
            self._retries.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._retries.discard)

    async def _retry(self, state: PartitionState) -> None:
        attempt = 0
        while self._partitions.get(state.tp) is state and state.halt_reason == "claim_failed":
            attempt += 1
            try:
                await self._backoff(attempt)
            except Exception:  # noqa: BLE001 - stopping
                return
            if self._partitions.get(state.tp) is not state:
                return  # revoked meanwhile
            with contextlib.suppress(Exception):
                await self.take(state)
        if state.consuming and state.tp in self._consumer.assignment():
            self._consumer.resume(state.tp)

    async def take(self, state: PartitionState) -> None:
        """Claim a new epoch for the partition; leave it consuming, or halted and paused."""
        tp = state.tp

        async def claim_if_still_ours() -> Claim | None:
            # A claim retried in the background (Redis away) for a partition revoked meanwhile must
            # not take an epoch after its new owner's: that owner would be fenced until the next
            # rebalance. So every attempt checks first (the request in flight is the only window).
            if self._partitions.get(tp) is not state:
                return None
            return await self._store.claim(tp.partition)

        claim = await self._retry_redis("claim", claim_if_still_ours)
        committed = await self._consumer.committed(tp)
        if claim is None or self._partitions.get(tp) is not state:
            return  # revoked meanwhile: the next assignment claims it for itself
        state.claimed(claim.epoch, -1 if committed is None else committed)
        if claim.applied is not None or committed:
            end = (await self._consumer.end_offsets([tp]))[tp]
            if (claim.applied is not None and claim.applied >= end) or (committed or 0) > end:
                await self._topic_recreated(state, claim, committed, end)
                return
        if not committed or (claim.applied is not None and claim.applied >= committed - 1):
            return  # nothing decided yet, or Redis knows at least what Kafka committed
        where = {"partition": tp.partition, "committed": committed, "applied": claim.applied}
        if claim.applied is not None:
            log_start = await self._replay_from(state, claim.applied, "claim")
            if log_start is None:
                return
            where["log_start"] = log_start
        if self._settings.accept_state_loss:
            log.warning(
                "accepting lost Redis state (ACCEPT_STATE_LOSS=true): deciding from the state Redis holds",
                extra=where,
            )
            await self._store.accept_state_loss(tp.partition, claim.epoch, committed - 1)
            return
        self._halt(state, "state_lost")
        if claim.applied is None:
            log.error(
                "Redis lost the lease state of this partition (it holds none, but Kafka has committed "
                "offsets): it is not decided until an operator restarts the processor with "
                "ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
                extra=where,
            )
        else:
            self._log_records_gone(where)

    async def repair_or_halt(self, state: PartitionState, applied: int) -> None:
        """Redis's applied offset went below what this owner applied (the script's BEHIND):
        replay from it, or halt when that cannot rebuild the state."""
        where = {"partition": state.tp.partition, "applied": applied, "owner_applied": state.applied}
        if applied >= 0:
            log_start = await self._replay_from(state, applied, "running")
            if log_start is None:
                return
            self._halt(state, "state_lost")
            self._log_records_gone({**where, "log_start": log_start})
            return
        self._halt(state, "state_lost")
        log.error(
            "Redis lost the lease state of this partition under its running owner (it holds no applied "
            "offset any more): it is not decided until an operator restarts the processor with "
            "ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
            extra=where,
        )

    async def _replay_from(self, state: PartitionState, applied: int, found: str) -> int | None:
        """Start replaying the partition from Redis's `applied` + 1, up to the furthest offset
        decided before (this owner's applied, or Kafka's committed - 1); None when started, else
        the log start offset that lies past it (the records are gone: it cannot be replayed)."""
        log_start = await self._log_start(state)
        if applied + 1 < log_start:
            return log_start
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
            log.warning(
                "accepting a recreated events topic (ACCEPT_STATE_LOSS=true): its log is decided from "
                "the start, with the leases Redis holds",
                extra=where,
            )
            await self._store.accept_state_loss(tp.partition, claim.epoch, -1)
            return
        self._halt(state, "events_topic_recreated")
        log.error(
            "the events partition ends before the offsets Redis applied: the topic was recreated or "
            "truncated, and its new records would be taken for replays. It is not decided until an "
            "operator restarts the processor with ACCEPT_STATE_LOSS=true (see docs/state-repair.md)",
            extra=where,
        )

    def _halt(self, state: PartitionState, reason: str) -> None:
        self._repairer.forget(state)
        state.halt(reason)
        self._consumer.pause(state.tp)
        self._metrics.state_lost.labels(str(state.tp.partition)).set(1)
