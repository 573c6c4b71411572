"""The verifier's session-ledger checks (producer_sim/verifier.py): the `expire` verdicts the
reference model pushes by stream time, and the ledger invariant read from the verdicts alone
(producer_sim.ledger.Ledger): every lease that starts ends in exactly one of stopped, evicted,
terminated, expired, or is still active at the end with its expiry after its partition's
stream time."""

from __future__ import annotations

from collections import Counter
from typing import Any

from processor.reference_model import Expired, ReferenceModel
from producer_sim.expect import differences
from producer_sim.ledger import Ledger
from producer_sim.verify_report import VerifyReport


def expire_fields(e: Expired) -> dict[str, Any]:
    """The fields of an `expire` verdict (all but verdictId, userId, sessionId, leaseExpiresAt)."""
    return {
        "eventId": None,
        "type": "expire",
        "decision": "revoke",
        "reason": "expired",
        "activeStreams": e.active_streams,
        "maxStreams": None,
        "decidedAt": e.decided_at,
        "token": None,
        "deviceClass": e.device_class,
    }


class LedgerCheck:
    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.ledger = Ledger()
        # (userId, sessionId, expiry) -> [the expiry the model pushes, copies seen]
        self.expiries: dict[tuple[str, str, int], list] = {}

    def expect(self, expired: tuple[Expired, ...]) -> None:
        """The expiries the model pushes before one record (replays repeat none: keyed)."""
        for e in expired:
            if self.expiries.setdefault((e.user_id, e.session_id, e.lease_expires_at), [e, 0])[0] is e:
                self.report.expiries += 1

    def verdict(self, v: dict) -> bool:
        """Feed a distinct verdict to the ledger; True when it was an `expire` (checked here)."""
        self.ledger.feed(v)
        if v.get("type") != "expire":
            return False
        entry = self.expiries.get((v.get("userId"), v.get("sessionId"), v.get("leaseExpiresAt")))  # type: ignore[arg-type]
        if entry is None:
            self.report.unexpected += 1
            self.report._example({"kind": "unexpected_expiry", "verdict": v})
            return True
        entry[1] += 1
        wrong = differences(v, expire_fields(entry[0]))
        if wrong:
            self.report.mismatch("expire", userId=v.get("userId"), sessionId=v.get("sessionId"), fields=wrong)
        return True

    def finish(self, models: dict[int, ReferenceModel]) -> None:
        rep = self.report
        for (user_id, session_id, expiry), (_e, seen) in self.expiries.items():
            if not seen:
                rep.lost += 1
                where = {"userId": user_id, "sessionId": session_id, "expiry": expiry}
                rep._example({"kind": "lost_expiry", **where})
        partition_of = {user: p for p, m in models.items() for user in m.users}
        stream_times = {p: m.stream_time.get(p) for p, m in models.items()}
        rep.leases_open = self.ledger.finish(lambda user: stream_times.get(partition_of.get(user, -1)))
        rep.leases_started = self.ledger.started
        rep.ledger_problems = Counter(self.ledger.problems)
        for example in self.ledger.examples[:5]:
            rep._example({"kind": "ledger", **example})
