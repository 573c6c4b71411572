"""The processor under tracemalloc, for `bench.soak --tracemalloc`: what grows, and where.

Run as `python -X tracemalloc=8 -m bench.soak_trace` with the processor's settings in the
environment. After SOAK_TRACE_BASELINE_S seconds it takes a baseline snapshot; then each
minute it appends to SOAK_TRACE_FILE the traced total and the 15 allocation sites (by
traceback) that grew most since the baseline. A diagnostic, not a way to run production.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc

from processor.cli import main


def _trace(path: str, baseline_after_s: float) -> None:
    time.sleep(baseline_after_s)
    baseline = tracemalloc.take_snapshot()
    started = time.monotonic()
    while True:
        time.sleep(60)
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        top = snapshot.compare_to(baseline, "traceback")[:15]
        with open(path, "a") as out:
            out.write(
                f"\n=== {time.monotonic() - started:.0f} s after the baseline: "
                f"traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB)\n"
            )
            for stat in top:
                out.write(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks\n")
                for line in stat.traceback.format(limit=4):
                    out.write(f"      {line}\n")


if __name__ == "__main__":
    if not tracemalloc.is_tracing():
        tracemalloc.start(8)
    threading.Thread(
        target=_trace,
        args=(os.environ["SOAK_TRACE_FILE"], float(os.environ.get("SOAK_TRACE_BASELINE_S", "300"))),
        daemon=True,
    ).start()
    sys.exit(main([]))
