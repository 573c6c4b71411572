"""The support console's ledger index (gateway/console/ledger.py): CPU per verdict and memory
at a given number of accounts.

    python -m bench.console_index --users 50000 --heartbeats 10

Each account, spread over an hour of event time, starts three sessions (tv, mobile, web), is
denied a fourth (limit_exceeded, with its advice), renews each session `--heartbeats` times
and stops one: 3 + 1 + 3h + 1 verdicts, shaped byte for byte as the processor writes them
(orjson, a 250-character token on allows). At the end every account has two active sessions
and a full recent list: the index at its largest for that many accounts.

Two passes over the same verdicts: one timed (index.add only, in process CPU time, so other
work on a shared machine does not count; the verdicts are built before, per chunk of
accounts), one under tracemalloc for the memory the index keeps (what is still
allocated once the verdicts themselves are freed). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import tracemalloc

import orjson

from gateway.console.ledger import LedgerIndex

HOUR_MS = 3_600_000
T0 = 1_796_000_000_000
TOKEN = "e" * 250  # a playback JWT's size
CLASSES = ("tv", "mobile", "web")


def _verdict(
    user: str, n: int, session: str, kind: str, decision: str, reason: str, at: int, **extra
) -> bytes:
    value = {
        "verdictId": os.urandom(16).hex(),
        "eventId": f"gw-{user}-{n}",
        "userId": user,
        "sessionId": session,
        "type": kind,
        "decision": decision,
        "reason": reason,
        "activeStreams": 3,
        "maxStreams": 3,
        "leaseExpiresAt": at + 90_000 if decision == "allow" and kind != "stop" else None,
        "decidedAt": at,
        "token": TOKEN if decision == "allow" and kind in ("start", "heartbeat") else None,
        "policy": "default",
        **extra,
    }
    return orjson.dumps(value)


def account(i: int, heartbeats: int) -> list[bytes]:
    """One account's verdicts, in event order."""
    user = f"user-{i:06d}"
    at = T0 + (i * 7919) % HOUR_MS
    out = []
    sessions = [f"{user}-s{k}-{os.urandom(4).hex()}" for k in range(3)]
    for k, (sid, cls) in enumerate(zip(sessions, CLASSES, strict=True)):
        out.append(_verdict(user, k, sid, "start", "allow", "started", at + k, deviceClass=cls))
    conflicts = [
        {"sessionId": sid, "deviceId": f"{cls}-device", "deviceClass": cls, "contentId": "title-123",
         "startedAt": at + k, "leaseExpiresAt": at + k + 90_000}
        for k, (sid, cls) in enumerate(zip(sessions, CLASSES, strict=True))
    ]  # fmt: skip
    out.append(
        _verdict(
            user, 3, "tablet", "start", "deny", "limit_exceeded", at + 5, conflicts=conflicts, nextFreeAt=at
        )
    )
    for h in range(heartbeats):
        for k, sid in enumerate(sessions):
            out.append(
                _verdict(user, 10 + 3 * h + k, sid, "heartbeat", "allow", "renewed", at + 30_000 * (h + 1))
            )
    out.append(_verdict(user, 9, sessions[0], "stop", "allow", "stopped", at + 30_000 * (heartbeats + 1)))
    return out


def feed(index: LedgerIndex, users: int, heartbeats: int, chunk: int = 2000) -> tuple[float, int, float, int]:
    """(seconds in index.add, verdicts, of which seconds for renewals, renewals)."""
    spent = renewals_spent = 0.0
    count = renewals = 0
    add = index.add
    for first in range(0, users, chunk):
        batch = [v for i in range(first, min(users, first + chunk)) for v in account(i, heartbeats)]
        renewed = [v for v in batch if b'"reason":"renewed"' in v]
        others = [v for v in batch if b'"reason":"renewed"' not in v]
        started = time.process_time()
        for v in others:
            add(v)
        middle = time.process_time()
        for v in renewed:
            add(v)
        spent += time.process_time() - started
        renewals_spent += time.process_time() - middle
        count += len(batch)
        renewals += len(renewed)
    return spent, count, renewals_spent, renewals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console_index", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--heartbeats", type=int, default=10, help="renewals per session")
    parser.add_argument("--recent", type=int, default=5, help="CONSOLE_RECENT_PER_USER")
    args = parser.parse_args(argv)

    index = LedgerIndex(args.recent, max_users=args.users)
    gc.collect()
    spent, count, renewals_spent, renewals = feed(index, args.users, args.heartbeats)
    timed_stats = index.stats()
    del index
    gc.collect()

    tracemalloc.start()
    index = LedgerIndex(args.recent, max_users=args.users)
    feed(index, args.users, args.heartbeats)
    gc.collect()
    kept, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    series_started = time.process_time()
    index.series(T0 + HOUR_MS)
    series_ms = (time.process_time() - series_started) * 1000
    parsed = count - renewals
    print(
        json.dumps(
            {
                "users": args.users,
                "verdicts": count,
                "recent_per_user": args.recent,
                "us_per_verdict": round(spent / count * 1e6, 2),
                "us_per_parsed_verdict": round((spent - renewals_spent) / parsed * 1e6, 2),
                "us_per_renewal": round(renewals_spent / renewals * 1e6, 3),
                "index_mb": round(kept / 2**20, 1),
                "bytes_per_account": round(kept / args.users),
                "series_ms": round(series_ms, 2),
                "index": timed_stats,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
