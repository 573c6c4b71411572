"""CPU seconds of some processes and of the whole machine, sampled while a benchmark runs.

`between(t0, t1)` gives each figure's increase over a span known only afterwards (e.g. the
first and last verdict's LogAppendTime), interpolated between the 0.2 s samples.
"""

from __future__ import annotations

import asyncio
import time

import psutil


class Sampler:
    """Cumulative CPU seconds per part and the machine's busy/total CPU time, every 0.2 s."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.procs = {name: [psutil.Process(pid) for pid in pids] for name, pids in parts.items()}
        self.last: dict[int, float] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.running = True

    def _cpu(self, proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            self.last[proc.pid] = t.user + t.system
        except psutil.Error:  # exited: keep its last figure
            pass
        return self.last.get(proc.pid, 0.0)

    def sample(self) -> None:
        m = psutil.cpu_times()
        total = sum(m) - getattr(m, "guest", 0) - getattr(m, "guest_nice", 0)  # as psutil.cpu_percent
        row = {name: sum(self._cpu(p) for p in ps) for name, ps in self.procs.items()}
        row["machine_busy"] = total - m.idle - getattr(m, "iowait", 0)
        row["machine_total"] = total
        self.samples.append((time.time(), row))

    async def run(self) -> None:
        while self.running:
            self.sample()
            await asyncio.sleep(0.2)
        self.sample()

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """Each figure's increase from t0 to t1, interpolated between samples."""

        def at(t: float) -> dict[str, float]:
            before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
            after = [s for s in self.samples if s[0] >= t] or self.samples[-1:]
            (ta, a), (tb, b) = before[-1], after[0]
            f = 0.0 if tb == ta else (t - ta) / (tb - ta)
            return {k: a[k] + (b[k] - a[k]) * f for k in a}

        a, b = at(t0), at(t1)
        return {k: b[k] - a[k] for k in a}
