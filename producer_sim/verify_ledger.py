"""The verifier's session-ledger checks (producer_sim/verifier.py): the `expire` verdicts the
reference model pushes by stream time (expected and matched in producer_sim/expectations.py),
and the ledger invariant read from the verdicts alone (producer_sim.ledger.Ledger): every
lease that starts ends in exactly one of stopped, evicted, terminated, expired, or is still
active at the end with its expiry after its partition's stream time."""

from __future__ import annotations

from collections import Counter

from producer_sim.expectations import Expectations, Match
from producer_sim.ledger import Ledger
from producer_sim.verify_report import VerifyReport


class LedgerCheck:
    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.ledger = Ledger()

    def feed(self, v: dict) -> None:
        """Feed a distinct verdict to the ledger invariant."""
        self.ledger.feed(v)

    def expire(self, v: dict, m: Match) -> None:
        """An `expire` verdict, matched: one the model never pushed is unexpected."""
        if m.problem is not None:
            self.report.unexpected += 1
            self.report._example({"kind": "unexpected_expiry", "verdict": v})
        elif m.wrong:
            self.report.mismatch(
                "expire", userId=v.get("userId"), sessionId=v.get("sessionId"), fields=m.wrong
            )

    def finish(self, core: Expectations) -> None:
        rep = self.report
        for e in core.unseen_expiries():
            rep.lost += 1
            rep._example(
                {
                    "kind": "lost_expiry",
                    "userId": e.user_id,
                    "sessionId": e.session_id,
                    "expiry": e.lease_expires_at,
                }
            )
        models = core.models
        partition_of = {user: p for p, m in models.items() for user in m.users}
        stream_times = {p: m.stream_time.get(p) for p, m in models.items()}
        rep.leases_open = self.ledger.finish(lambda user: stream_times.get(partition_of.get(user, -1)))
        rep.leases_started = self.ledger.started
        rep.ledger_problems = Counter(self.ledger.problems)
        for example in self.ledger.examples[:5]:
            rep._example({"kind": "ledger", **example})
