"""Taking ownership of an assigned partition: the fencing epoch, and the state-loss checks.

Kafka's committed offset and Redis's applied offset must agree: Redis knowing less than
Kafka committed means the leases of that history are gone (Redis lost its state); Redis
knowing offsets beyond the end of the log means the topic was recreated or truncated and
the state belongs to another log. Either halts the partition until an operator accepts
it (ACCEPT_STATE_LOSS=true); deciding on would grant streams twice or answer new events
as replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from processor.config import Settings
from processor.lease_store import Claim, LeaseStore
from processor.metrics import Metrics
from processor.partitions import Partitions, PartitionState

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
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._retry_redis = retry_redis
        self._partitions = partitions
        self._backoff = backoff
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
        claim: Claim = await self._retry_redis("claim", lambda: self._store.claim(tp.partition))
        committed = await self._consumer.committed(tp)
        state.claimed(claim.epoch, -1 if committed is None else committed)
        if claim.applied is not None or committed:
            end = (await self._consumer.end_offsets([tp]))[tp]
            if (claim.applied is not None and claim.applied >= end) or (committed or 0) > end:
                await self._topic_recreated(state, claim, committed, end)
                return
        if not committed or (claim.applied is not None and claim.applied >= committed - 1):
            return  # nothing decided yet, or Redis knows at least what Kafka committed
        where = {"partition": tp.partition, "committed": committed, "applied": claim.applied}
        if self._settings.accept_state_loss:
            log.warning(
                "accepting lost Redis state (ACCEPT_STATE_LOSS=true): deciding from an empty state",
                extra=where,
            )
            await self._store.accept_state_loss(tp.partition, claim.epoch, committed - 1)
            return
        self._halt(state, "state_lost")
        log.error(
            "Redis lost the lease state of this partition: it is not decided until an operator restarts "
            "the processor with ACCEPT_STATE_LOSS=true (see docs/operations.md, 'What each halt means')",
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
            "operator restarts the processor with ACCEPT_STATE_LOSS=true "
            "(see docs/operations.md, 'What each halt means')",
            extra=where,
        )

    def halt_state_lost(self, state: PartitionState, err: Exception) -> None:
        """Redis lost writes under a running owner (the script saw its applied offset go back)."""
        self._halt(state, "state_lost")
        log.error(
            "Redis lost acknowledged lease writes of this partition (a failover to a replica that had "
            "not got them?): it is not decided until an operator restarts the processor with "
            "ACCEPT_STATE_LOSS=true (see docs/operations.md, 'What each halt means')",
            extra={"partition": state.tp.partition, "error": str(err)},
        )

    def _halt(self, state: PartitionState, reason: str) -> None:
        state.halt(reason)
        self._consumer.pause(state.tp)
        self._metrics.state_lost.labels(str(state.tp.partition)).set(1)
