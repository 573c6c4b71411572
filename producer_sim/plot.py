"""A PNG of the run: offered rate, verdict rate and latency over time.

matplotlib is imported only here, and only when a plot is asked for (extra `plot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Timeline:
    """Cumulative counters sampled about once a second (monotonic seconds since the start)."""

    t0: float
    times: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    verdicts: list[int] = field(default_factory=list)

    def sample(self, now: float, sent: int, verdicts: int) -> None:
        self.times.append(now - self.t0)
        self.sent.append(sent)
        self.verdicts.append(verdicts)


def _rates(times: list[float], totals: list[int]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i in range(1, len(times)):
        dt = times[i] - times[i - 1]
        if dt > 0:
            xs.append(times[i])
            ys.append((totals[i] - totals[i - 1]) / dt)
    return xs, ys


def write_plot(timeline: Timeline, latency_times: list[float], latencies_ms: list[float], path: Path) -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'stream-concurrency[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_lat) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    xs, ys = _rates(timeline.times, timeline.sent)
    ax_rate.plot(xs, ys, label="offered (records/s)")
    xs, ys = _rates(timeline.times, timeline.verdicts)
    ax_rate.plot(xs, ys, label="verdicts/s")
    ax_rate.set_ylabel("per second")
    ax_rate.legend(loc="upper right")
    ax_rate.grid(alpha=0.3)

    # Latency: per one-second bin, p50 and p99, plus the raw samples faintly.
    bins: dict[int, list[float]] = {}
    for t, ms in zip(latency_times, latencies_ms, strict=True):
        bins.setdefault(int(t - timeline.t0), []).append(ms)
    seconds = sorted(bins)
    p50, p99 = [], []
    for s in seconds:
        values = sorted(bins[s])
        p50.append(values[len(values) // 2])
        p99.append(values[min(len(values) - 1, int(len(values) * 0.99))])
    if latency_times:
        ax_lat.scatter([t - timeline.t0 for t in latency_times], latencies_ms, s=1, alpha=0.15, color="grey")
    ax_lat.plot(seconds, p50, label="p50")
    ax_lat.plot(seconds, p99, label="p99")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds since start")
    ax_lat.legend(loc="upper right")
    ax_lat.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
