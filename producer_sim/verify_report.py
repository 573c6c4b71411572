"""The verifier's figures (producer_sim/verifier.py): what it counted and whether the run is
clean. The bottom of the verifier's modules: the checks (verifier, verify_ledger,
verify_side_effects) all write into one VerifyReport and it imports none of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_EXAMPLES = 20


@dataclass
class VerifyReport:
    """The figures of one verification. `clean` is the verdict on the run."""

    events: int = 0  # records in the events topic
    valid_events: int = 0  # records decode_event accepts
    distinct_events: int = 0  # distinct event identities among them (upstream duplicates fold)
    upstream_duplicates: int = 0  # valid records whose identity appeared before
    bad_records: int = 0  # records decode_event rejects
    expected_verdicts: int = 0  # distinct verdicts the model calls for (own + revokes)
    verdicts: int = 0  # verdict records read
    unique_verdicts: int = 0  # distinct verdictIds
    redelivered: int = 0  # copies of a verdictId beyond the first
    revokes: int = 0  # distinct revoke verdicts
    lost: int = 0  # expected verdicts that never came
    applied_twice: int = 0  # verdicts or states showing an effect applied twice
    mismatches: int = 0  # everything that disagrees with the model (lost and applied_twice aside)
    over_limit: int = 0  # steps at which a user held more than the limit (model trace or verdicts)
    unexpected: int = 0  # verdicts for no known event
    dlq: int = 0  # dead-letter records read
    dlq_unique: int = 0  # distinct source (partition, offset) among them
    dlq_missing: int = 0  # bad records without a dead letter
    dlq_unexpected: int = 0  # dead letters of records that are valid or unknown, or altered
    dlq_wrong_error: int = 0  # dead letters whose `error` header is not the record's error
    bad_by_error: Counter[str] = field(default_factory=Counter)  # bad records by decode_event's code
    users: int = 0
    users_checked_in_redis: int | None = None  # None: the Redis state was not checked
    state_mismatches: int = 0  # users whose Redis leases differ from the model's
    expiries: int = 0  # distinct `expire` verdicts the model calls for (the session ledger)
    leases_started: int = 0  # leases the verdicts open (allow/started)
    leases_open: int = 0  # of them, still active at the end (expiry after stream time)
    ledger_problems: Counter[str] = field(default_factory=Counter)  # the ledger invariant broken
    mismatch_kinds: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.lost == 0
            and self.applied_twice == 0
            and self.mismatches == 0
            and self.over_limit == 0
            and self.unexpected == 0
            and self.state_mismatches == 0
            and not self.ledger_problems
            and self.dlq_missing == 0
            and self.dlq_unexpected == 0
            and self.dlq_wrong_error == 0
            and self.dlq_unique == self.bad_records
        )

    def figures(self) -> dict[str, Any]:
        """The figures as plain data (no examples)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("mismatch_kinds", "examples")}
        out["mismatch_kinds"] = dict(self.mismatch_kinds)
        out["bad_by_error"] = dict(self.bad_by_error)
        out["ledger_problems"] = dict(self.ledger_problems)
        out["clean"] = self.clean
        return out

    def summary(self) -> str:
        return (
            f"events={self.events} valid={self.valid_events} distinct={self.distinct_events} "
            f"dups={self.upstream_duplicates} bad={self.bad_records} verdicts={self.verdicts} "
            f"unique={self.unique_verdicts} redelivered={self.redelivered} lost={self.lost} "
            f"applied_twice={self.applied_twice} mismatches={self.mismatches} over_limit={self.over_limit} "
            f"unexpected={self.unexpected} dlq={self.dlq} dlq_unique={self.dlq_unique} "
            f"state_mismatches={self.state_mismatches} expiries={self.expiries} "
            f"leases_started={self.leases_started} leases_open={self.leases_open} "
            f"ledger_problems={sum(self.ledger_problems.values())} users={self.users} clean={self.clean}"
        )

    def _example(self, example: dict[str, Any]) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(orjson.loads(orjson.dumps(example, default=repr)))

    def mismatch(self, kind: str, **detail: Any) -> None:
        self.mismatches += 1
        self.mismatch_kinds[kind] += 1
        self._example({"kind": kind, **detail})
