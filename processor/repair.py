"""Repairing a partition whose Redis state went back: replay its log from Redis's applied offset.

Redis acknowledges a write before its replica has it (and AOF everysec before the disk has
it), so a failover or a restart can leave a partition's state behind what its owner applied
or Kafka committed. That state is still a state of the partition: the fold of its events up
to the applied offset it carries (the script writes state and applied offset atomically, and
replication and the AOF keep a prefix of those writes). A decision depends only on the
record, the state and the policy, so deciding the records after that offset again rebuilds
what was lost and yields the verdicts published the first time, byte for byte (consumers
dedupe on verdictId). The partition keeps consuming while it replays; the others go on.

The checks that find the loss, and the halts, live in claims.py; the script call that meets
it (BEHIND) in deciding.py. What cannot be replayed still halts: the records are gone from
the log (below its start offset), Redis holds no state at all (wiped), the topic was recreated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from processor.metrics import Metrics
from processor.partitions import PartitionState, Repair

log = logging.getLogger("processor")

# A policy changed this recently may have been in force for some of the lost decisions and
# not for their replay (the only way a replayed verdict can differ): the log says so.
POLICY_CHANGE_WINDOW_S = 60.0


class StateRepairer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        metrics: Metrics,
        policy_changed_at: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._policy_changed_at = policy_changed_at

    def start(self, state: PartitionState, applied: int, upto: int, found: str) -> None:
        """Replay the partition from `applied` + 1 (the caller checked that the log still starts
        at or before it): seek there and drop every batch fetched before (the generation), so
        the next batches are the replay, up to `upto` (the furthest offset decided before)."""
        tp = state.tp
        self._consumer.seek(tp, applied + 1)
        state.rewound()
        state.applied = applied  # what Redis holds now: the script's check starts from it
        previous = state.repair
        upto = max(upto, previous.upto) if previous is not None else upto
        state.repair = Repair(applied + 1, upto, time.monotonic())
        self._metrics.state_repairs.inc()
        self._metrics.state_repairing.labels(str(tp.partition)).set(1)
        where = {
            "partition": tp.partition,
            "applied": applied,
            "replay_from": applied + 1,
            "replay_upto": upto,
            "records": max(0, upto - applied),
            "found": found,
        }
        if previous is not None:
            where["interrupted_repair_from"] = previous.first
        log.warning(
            "Redis lost lease writes of this partition (a failover or a restart): replaying its log "
            "from Redis's applied offset; the verdicts are published again, identical",
            extra=where,
        )
        changed = self._policy_changed_at()
        ago = None if changed is None else round(time.monotonic() - changed, 1)
        if ago is not None and ago < POLICY_CHANGE_WINDOW_S:
            log.warning(
                "a policy changed shortly before this repair: replayed events decided before the change "
                "are decided under the policy in force now, so their verdicts may differ from the first",
                extra={"partition": tp.partition, "policy_changed_seconds_ago": ago},
            )

    def decided(self, state: PartitionState, first_offset: int, last_offset: int) -> None:
        """A batch of the partition (offsets first..last) was decided: count the replayed
        records, and end the repair once the state is back where it was."""
        repair = state.repair
        if repair is None:
            return
        replayed = max(0, min(last_offset, repair.upto) - max(first_offset, repair.first) + 1)
        repair.records += replayed
        self._metrics.state_repair_records.inc(replayed)
        if state.applied < repair.upto:
            return
        state.repair = None
        self._metrics.state_repairing.labels(str(state.tp.partition)).set(0)
        log.warning(
            "partition repaired from the log: its Redis state is back where it was",
            extra={
                "partition": state.tp.partition,
                "replayed_from": repair.first,
                "replayed_upto": repair.upto,
                "records": repair.records,
                "seconds": round(time.monotonic() - repair.started, 3),
            },
        )

    def forget(self, state: PartitionState) -> None:
        """The partition was revoked mid-repair: its next owner finds the loss at its claim."""
        if state.repair is not None:
            state.repair = None
            self._metrics.state_repairing.labels(str(state.tp.partition)).set(0)
