"""The cycle's policy: how long a cycle gathers records, and when offsets are committed.

One cycle is gather -> decide every partition in one Redis round trip -> publish -> commit.
Its fixed costs (a fetch, a Redis round trip, a produce round, a commit) are paid per cycle,
not per event; at low rates a cycle would carry about one event per partition. So while
records flow, a fetch asks the broker to hold its answer until `gather_bytes` have arrived or
`gather_ms` have passed (fetch.min.bytes / fetch.max.wait.ms): one fetch, one cycle, per
window. That wait is the latency the amortisation buys, bounded and named here. After a poll
that found nothing the consumer long-polls with `idle_wait_ms` and fetch.min.bytes 1: an
idle processor sleeps, and the first record of an idle period is decided at once.

Commits: at most one in flight, and a new one starts at most every `commit_interval_s`; what
is published meanwhile merges into it. The interval bounds how far the committed offsets
trail the verdicts (and so the replay after a crash, and the results Redis keeps for
offsets not yet committed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CyclePolicy:
    gather_ms: int  # GATHER_MS: the most a fetch waits for more records while records flow
    gather_bytes: int  # GATHER_BYTES: a fetch that has this much answers at once
    idle_wait_ms: int  # FETCH_MAX_WAIT_MS: the long poll of an idle consumer
    commit_interval_s: float  # COMMIT_INTERVAL_MS: the least time between two commits' starts

    def fetch_wait(self, idle: bool) -> tuple[int, int]:
        """(fetch.max.wait.ms, fetch.min.bytes) for the next fetches."""
        if idle or self.gather_ms == 0:
            return self.idle_wait_ms, 1
        return self.gather_ms, self.gather_bytes

    def commit_delay(self, last_commit_start: float, now: float) -> float:
        """Seconds until the next commit may start."""
        return max(0.0, last_commit_start + self.commit_interval_s - now)
