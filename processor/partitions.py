"""The life of one assigned events partition, owned by one object.

    assigned ──claim──► consuming ──(state lost)──► halted
        │                   │                         │
        └───────────────────┴──────── revoked ◄───────┘

A partition is `assigned` (paused, fetches held) until its fencing epoch is claimed in
Redis; then it is `consuming`, or `halted` when Redis lost its state beyond repair. Revocation
ends it. A consuming partition whose Redis state went back replays its log (`repair`, see
repair.py) and stays consuming meanwhile.
A batch is decided only under the state, and the generation of it, it was fetched under:
a batch the loop prefetched before a rewind, or before the partition was revoked and
assigned again, is stale (its offsets may lie beyond the reset position: deciding it would
leave a gap that the replay path then answers with nothing). aiokafka itself drops the
records it buffered when a position is reset.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import TopicPartition


class Phase(enum.Enum):
    ASSIGNED = "assigned"
    CONSUMING = "consuming"
    HALTED = "halted"
    REVOKED = "revoked"


@dataclass
class Repair:
    """A replay in progress (repair.py): offsets first..upto are decided again."""

    first: int  # Redis's applied offset + 1: where the replay starts
    upto: int  # the highest offset decided before the loss (owner's applied, or committed - 1)
    started: float  # time.monotonic() when the loss was found
    records: int = 0  # records decided again so far


@dataclass
class PartitionState:
    tp: TopicPartition
    phase: Phase = Phase.ASSIGNED
    epoch: int | None = None  # fencing epoch taken in Redis when claimed
    committed: int = -1  # next offset to read, as committed in Kafka (-1: none)
    generation: int = 0  # +1 at each rewind; batches fetched under an older one are stale
    halt_reason: str | None = None
    applied: int = -1  # the highest offset applied in Redis under this state's epoch
    repair: Repair | None = None  # set while the partition replays lost Redis writes

    def claimed(self, epoch: int, committed: int) -> None:
        self.phase, self.epoch, self.committed = Phase.CONSUMING, epoch, committed
        self.halt_reason = None

    def halt(self, reason: str) -> None:
        self.phase, self.halt_reason = Phase.HALTED, reason

    def revoke(self) -> None:
        self.phase, self.epoch = Phase.REVOKED, None

    @property
    def consuming(self) -> bool:
        return self.phase is Phase.CONSUMING

    def rewound(self) -> None:
        self.generation += 1

    def fetched_now(self, owner: PartitionState | None, generation: int) -> bool:
        """Whether a batch fetched under (owner, generation) still belongs to this state."""
        return owner is self and generation == self.generation

    def committed_up_to(self, offset: int) -> None:
        self.committed = max(self.committed, offset)


class Partitions:
    """The partitions this instance owns now, by TopicPartition."""

    def __init__(self) -> None:
        self._states: dict[TopicPartition, PartitionState] = {}

    def assign(self, tp: TopicPartition) -> PartitionState:
        state = PartitionState(tp)  # an assignment resets positions to the committed offsets
        self._states[tp] = state
        return state

    def revoke(self, tp: TopicPartition) -> PartitionState | None:
        state = self._states.pop(tp, None)
        if state is not None:
            state.revoke()
        return state

    def get(self, tp: TopicPartition) -> PartitionState | None:
        return self._states.get(tp)

    def epoch(self, tp: TopicPartition) -> int | None:
        """The epoch to decide with, None unless the partition is being consumed."""
        state = self._states.get(tp)
        return state.epoch if state is not None and state.consuming else None

    def committed(self, tp: TopicPartition) -> int:
        state = self._states.get(tp)
        return -1 if state is None else state.committed

    def halted(self) -> list[PartitionState]:
        return sorted((s for s in self._states.values() if s.phase is Phase.HALTED), key=lambda s: s.tp)

    def repairing(self) -> list[PartitionState]:
        return sorted((s for s in self._states.values() if s.repair is not None), key=lambda s: s.tp)

    def __iter__(self) -> Iterator[PartitionState]:
        return iter(list(self._states.values()))
