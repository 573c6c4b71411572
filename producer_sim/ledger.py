"""The session ledger read back from the verdicts topic: every lease's start and its one end.

A downstream consumer needs nothing but `playback.verdicts`: a lease opens with an
`allow`/`started` verdict (its `deviceClass` is the lease's) and ends with exactly one of
`allow`/`stopped`, `revoke`/`evicted`, `revoke`/`terminated` or `revoke`/`expired` (the
`expire` verdict stream time pushes). Copies of one verdictId count once.

`Ledger` keeps the open leases and checks the invariant as it goes (an end without a start,
a second start or end of one lease are `problems`); `finish(stream_time_of)` holds the
leases still open at the end against their partition's stream time (each must expire after
it). The verifier feeds it on every run. `concurrency()` gives concurrent streams over time,
total and per device class: a lease counts from its start to its end (an expired lease
until its expiry).

`python -m producer_sim.ledger --bootstrap ... --verdicts-topic ... [--plot ledger.png]`
prints the figures and writes the plot; exit status 1 when the ledger breaks the invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from processor.connections import KafkaAccess

ENDS = {("allow", "stopped"), ("revoke", "evicted"), ("revoke", "terminated"), ("revoke", "expired")}
RENEWALS = {"renewed", "already_active"}
MAX_EXAMPLES = 20
NO_CLASS = "-"


@dataclass
class OpenLease:
    started_at: int
    device_class: str | None
    expires_at: int


@dataclass
class Ledger:
    open: dict[tuple[str, str], OpenLease] = field(default_factory=dict)
    ended: Counter[str] = field(default_factory=Counter)  # by reason
    started: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # (time, +1 | -1, device class) of every start and end, for concurrency()
    steps: list[tuple[int, int, str | None]] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def feed(self, verdict: dict[str, Any]) -> None:
        """One verdict, in the order of its verdicts partition (one user's stay in order)."""
        verdict_id = verdict.get("verdictId")
        if verdict_id in self._seen:
            return  # a redelivered copy
        self._seen.add(verdict_id)  # type: ignore[arg-type]
        key = (verdict.get("userId"), verdict.get("sessionId"))
        decision, reason = verdict.get("decision"), verdict.get("reason")
        lease = self.open.get(key)  # type: ignore[arg-type]
        if (decision, reason) == ("allow", "started"):
            if lease is not None:
                self._problem("started_twice", verdict)
            self.started += 1
            cls = verdict.get("deviceClass")
            self.open[key] = OpenLease(verdict["decidedAt"], cls, verdict.get("leaseExpiresAt") or 0)  # type: ignore[index]
            self.steps.append((verdict["decidedAt"], 1, cls))
        elif decision == "allow" and reason in RENEWALS:
            if lease is None:
                self._problem("renewed_without_start", verdict)
            else:
                lease.expires_at = verdict.get("leaseExpiresAt") or lease.expires_at
        elif (decision, reason) in ENDS:
            if lease is None:
                self._problem("ended_without_start", verdict)
                return
            del self.open[key]  # type: ignore[arg-type]
            self.ended[reason] += 1  # type: ignore[index]
            at = verdict["leaseExpiresAt"] if reason == "expired" else verdict["decidedAt"]
            self.steps.append((at, -1, lease.device_class))

    def feed_all(self, values: Iterable[bytes | None]) -> None:
        for value in values:
            try:
                verdict = orjson.loads(value or b"")
            except orjson.JSONDecodeError:
                self.problems["malformed_verdict"] += 1
                continue
            if isinstance(verdict, dict):
                self.feed(verdict)

    def finish(self, stream_time_of: Callable[[str], int | None]) -> int:
        """Leases still open must expire after their partition's stream time
        (`stream_time_of(userId)`, None: unknown, not checked). Returns the open leases."""
        for (user_id, session_id), lease in self.open.items():
            stream_time = stream_time_of(user_id)
            if stream_time is not None and lease.expires_at <= stream_time:
                self._problem(
                    "open_past_expiry",
                    {"userId": user_id, "sessionId": session_id, "leaseExpiresAt": lease.expires_at,
                     "streamTime": stream_time},
                )  # fmt: skip
        return len(self.open)

    def _problem(self, kind: str, verdict: dict[str, Any]) -> None:
        self.problems[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"kind": kind, "verdict": verdict})

    def concurrency(self) -> list[tuple[int, int, dict[str, int]]]:
        """(time ms, concurrent leases, {device class: concurrent}) after each change."""
        total, by_class = 0, Counter[str]()
        out: list[tuple[int, int, dict[str, int]]] = []
        for at, step, cls in sorted(self.steps, key=lambda s: (s[0], s[1])):  # ends first at a tie
            total += step
            by_class[cls or NO_CLASS] += step
            out.append((at, total, dict(by_class)))
        return out

    def summary(self) -> dict[str, Any]:
        series = self.concurrency()
        peak = max(series, key=lambda s: s[1]) if series else None
        return {
            "started": self.started,
            "ended": dict(self.ended),
            "open": len(self.open),
            "peak": None if peak is None else {"at": peak[0], "streams": peak[1], "byClass": peak[2]},
            "problems": dict(self.problems),
            "examples": self.examples[:5],
        }


def plot(ledger: Ledger, path: str) -> None:
    """Concurrent streams over time, total and per device class, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = ledger.concurrency()
    if not series:
        raise ValueError("no leases in the ledger: nothing to plot")
    t0 = series[0][0]
    xs = [(at - t0) / 60_000 for at, _, _ in series]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.step(xs, [total for _, total, _ in series], where="post", label="all", linewidth=2)
    classes = sorted({c for _, _, by in series for c in by})
    for cls in classes:
        ax.step(xs, [by.get(cls, 0) for _, _, by in series], where="post", label=cls, linewidth=1)
    ax.set_xlabel("event time since the first start (min)")
    ax.set_ylabel("concurrent streams")
    ax.set_title("Concurrent streams from the session ledger (playback.verdicts)")
    ax.legend(title="device class")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_series(ledger: Ledger, points: int = 12) -> None:
    series = ledger.concurrency()
    if not series:
        print("no leases")
        return
    t0, t1 = series[0][0], series[-1][0]
    step = max(1, (t1 - t0) // points)
    classes = sorted({c for _, _, by in series for c in by})
    print(f"{'minute':>8} {'all':>6} " + " ".join(f"{c:>8}" for c in classes))
    j = 0
    for at in range(t0, t1 + 1, step):
        while j + 1 < len(series) and series[j + 1][0] <= at:
            j += 1
        _, total, by = series[j]
        print(f"{(at - t0) / 60_000:8.1f} {total:6d} " + " ".join(f"{by.get(c, 0):8d}" for c in classes))


async def read_ledger(bootstrap: KafkaAccess | str, verdicts_topic: str) -> Ledger:
    from producer_sim.kafka_io import read_topic

    records = await read_topic(bootstrap, verdicts_topic)
    ledger = Ledger()
    # One user's verdicts keep their order within their partition; that is all a lease needs.
    ledger.feed_all(r.value for r in sorted(records, key=lambda r: (r.partition, r.offset)))
    return ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producer_sim.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--verdicts-topic", default="playback.verdicts")
    parser.add_argument("--plot", default="ledger.png", help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    ledger = asyncio.run(read_ledger(args.bootstrap, args.verdicts_topic))
    ledger.finish(lambda _user: None)
    print_series(ledger)
    print(orjson.dumps(ledger.summary(), option=orjson.OPT_INDENT_2).decode())
    if args.plot and ledger.steps:
        plot(ledger, args.plot)
        print(f"plot: {args.plot}")
    return 1 if ledger.problems else 0


if __name__ == "__main__":
    sys.exit(main())
