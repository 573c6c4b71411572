"""The cycle's policy: how long a cycle gathers records, and when offsets are committed.

One cycle is gather -> decide every partition in one Redis round trip -> publish -> commit.
Its fixed costs (a fetch, a Redis round trip, a produce round, a commit) are paid per cycle,
not per event; at low rates a cycle would carry about one event per partition, so a small
batch waits up to `gather_s` for more before it is decided. That wait is the latency the
amortisation buys, bounded and named here. The first records after an idle poll are decided
at once: a lone event is not kept waiting for company that is not coming.

Commits: at most one in flight, and a new one starts at most every `commit_interval_s`; what
is published meanwhile merges into it. The interval bounds how far the committed offsets
trail the verdicts (and so the replay after a crash, and the results Redis keeps for
offsets not yet committed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CyclePolicy:
    gather_s: float  # GATHER_MS: the most a small batch waits for more records
    gather_records: int  # a batch this large is decided at once
    commit_interval_s: float  # COMMIT_INTERVAL_MS: the least time between two commits' starts

    def gather_for(self, records: int, after_idle: bool) -> float:
        """Seconds to wait for more records before deciding a fetched batch of `records`."""
        if after_idle or records >= self.gather_records:
            return 0.0
        return self.gather_s

    def commit_delay(self, last_commit_start: float, now: float) -> float:
        """Seconds until the next commit may start."""
        return max(0.0, last_commit_start + self.commit_interval_s - now)
