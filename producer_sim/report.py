"""The run's report: one JSON-able dict, and its rendering as rich tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from producer_sim.checker import Checker
from producer_sim.population import KINDS


@dataclass
class SendStats:
    """What the producer sent (records acknowledged by the broker)."""

    by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    duplicates_skipped: int = 0  # re-sends dropped because the eventId left the dedupe memory
    late: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    records: int = 0

    @property
    def events(self) -> int:
        return sum(self.by_type.values())


def build_report(
    checker: Checker,
    sent: SendStats,
    *,
    run: dict[str, Any],
    produce_seconds: float,
    drain_seconds: float,
    first_verdict_at: float | None = None,
    last_verdict_at: float | None = None,
    stopped_by_revoke: int = 0,
) -> dict[str, Any]:
    missing = checker.missing if checker.missing is not None else checker.finish()
    verdict_span = (
        (last_verdict_at - first_verdict_at)
        if first_verdict_at is not None and last_verdict_at is not None
        else 0.0
    )
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, decision), n in sorted(checker.by_kind.items()):
        by_kind.setdefault(kind, {})[decision] = n
    return {
        "ok": checker.failures == 0,
        "run": run,
        "sent": {
            "records": sent.records,
            "events": sent.events,
            "by_type": dict(sorted(sent.by_type.items())),
            "duplicates": sent.duplicates,
            "duplicates_skipped": sent.duplicates_skipped,
            "late": sent.late,
            "malformed": sum(sent.malformed.values()),
            "malformed_by_kind": dict(sorted(sent.malformed.items())),
        },
        "verdicts": {
            "received": checker.received,
            "unique": checker.unique,
            "redelivered_identical": checker.redelivered,
            "unexpected": checker.unexpected,
            "by_decision": dict(sorted(checker.by_decision.items())),
            "by_reason": dict(sorted(checker.by_reason.items())),
            "by_decision_reason": {f"{d}/{r}": n for (d, r), n in sorted(checker.by_decision_reason.items())},
            "by_user_kind": {k: by_kind[k] for k in KINDS if k in by_kind},
        },
        "policies": policy_figures(checker, sent, run.get("policies", {}), stopped_by_revoke),
        "latency_ms": checker.latency_summary(),
        "rates": {
            "produce_seconds": round(produce_seconds, 3),
            "drain_seconds": round(drain_seconds, 3),
            "offered_events_per_s": round(sent.records / produce_seconds, 1) if produce_seconds > 0 else None,
            "verdicts_per_s": round(checker.unique / verdict_span, 1) if verdict_span > 0 else None,
        },
        "check": {
            "mismatches": checker.mismatches,
            "mismatch_kinds": dict(sorted(checker.mismatch_kinds.items())),
            "missing": missing,
            "malformed_verdicts": checker.malformed_verdicts,
            "examples": checker.examples,
            "missing_examples": checker.missing_examples,
        },
    }


def policy_figures(
    checker: Checker, sent: SendStats, in_force: dict[str, dict], stopped_by_revoke: int
) -> dict[str, Any]:
    """Plans, deny advice and terminates, from the checked verdicts."""
    by_plan: dict[str, dict[str, int]] = {}
    for (plan, reason), n in sorted(checker.starts_by_plan.items()):
        by_plan.setdefault(plan, {})[reason] = n
    typed = checker.by_type_reason
    return {
        "in_force": in_force,
        "starts_by_plan": by_plan,
        "denies": {reason: typed[("start", reason)] for reason in ("limit_exceeded", "device_class_limit")},
        "evicted": checker.revokes_by_reason["evicted"],
        "terminates": {
            "sent": sent.by_type.get("terminate", 0),
            "terminated": typed[("terminate", "terminated")],
            "not_active": typed[("terminate", "not_active")],
            "revoked_sessions": checker.revokes_by_reason["terminated"],
            "players_stopped": stopped_by_revoke,
        },
        "advice_examples": checker.advice_examples,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _limits(policy: dict | None) -> str:
    if policy is None:
        return "-"
    caps = ", ".join(f"{cls} {n}" for cls, n in sorted(policy.get("deviceClasses", {}).items()))
    n = policy["maxStreams"]
    return f"{n} stream{'' if n == 1 else 's'}" + (f" ({caps})" if caps else "")


def _advice_lines(verdict: dict[str, Any]) -> list[str]:
    """One deny with its advice, as a player would be told it (times relative to the deny)."""
    at = verdict["decidedAt"]

    def rel(ms: int | None) -> str:
        return "?" if ms is None else f"{(ms - at) / 1000:+.0f}s"

    lines = [
        f"{verdict['reason']} for {verdict['userId']} session {verdict['sessionId']} "
        f"(policy {verdict.get('policy')}, {verdict['activeStreams']} of {verdict['maxStreams']} active); "
        f"nextFreeAt {verdict.get('nextFreeAt')} ({rel(verdict.get('nextFreeAt'))}), conflicts:"
    ]
    for c in verdict.get("conflicts") or ():
        lines.append(
            f"  {c['sessionId']} on {c['deviceId']} ({c['deviceClass']}) watching {c['contentId']}, "
            f"started {rel(c['startedAt'])}, lease expires {c['leaseExpiresAt']} ({rel(c['leaseExpiresAt'])})"
        )
    return lines


def render_policies(report: dict[str, Any], console: Console) -> None:
    """Starts and denies by plan, terminates, and one deny of each kind with its advice."""
    pol = report.get("policies")
    if not pol:
        return
    if pol["starts_by_plan"].keys() - {"-"}:
        table = Table(title="starts by plan", show_header=True, header_style="bold")
        for name in ("plan", "policy", "started", "already active", "denied: limit", "denied: class cap"):
            table.add_column(name, justify="left" if name in ("plan", "policy") else "right")
        reasons = ("started", "already_active", "limit_exceeded", "device_class_limit")
        in_force = pol["in_force"]
        policies = {
            plan: in_force.get(f"plan:{plan}", in_force.get("default")) for plan in pol["starts_by_plan"]
        }
        for plan in sorted(policies, key=lambda p: (policies[p] or {}).get("maxStreams", 0)):
            counts = pol["starts_by_plan"][plan]
            table.add_row(plan, _limits(policies[plan]), *(str(counts.get(r, 0)) for r in reasons))
        console.print(table)

    table = Table(title="denies, evictions, terminates", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    term = pol["terminates"]
    for label, n in (
        ("denied starts: limit_exceeded", pol["denies"]["limit_exceeded"]),
        ("denied starts: device_class_limit (class cap)", pol["denies"]["device_class_limit"]),
        ("leases evicted (revoke evicted)", pol["evicted"]),
        ("terminates sent (from another device)", term["sent"]),
        ("  terminated a session", term["terminated"]),
        ("  target no longer active (not_active)", term["not_active"]),
        ("  revoke verdicts (terminated)", term["revoked_sessions"]),
        ("players that stopped on their revoke", term["players_stopped"]),
    ):
        table.add_row(label, str(n))
    console.print(table)
    for reason, verdict in pol["advice_examples"].items():
        console.print(f"[bold]example deny with advice ({reason}):[/bold]", markup=True)
        for line in _advice_lines(verdict):
            console.print(line, markup=False, highlight=False)


def render(report: dict[str, Any], console: Console) -> None:
    sent, verdicts, check = report["sent"], report["verdicts"], report["check"]

    table = Table(title="sent", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    for kind, n in sent["by_type"].items():
        table.add_row(f"events: {kind}", str(n))
    table.add_row("duplicates (re-sent eventIds)", str(sent["duplicates"]))
    table.add_row("late record timestamps", str(sent["late"]))
    table.add_row("malformed records", str(sent["malformed"]))
    table.add_row("records in total", str(sent["records"]))
    console.print(table)

    table = Table(title="verdicts", show_header=True, header_style="bold")
    table.add_column("decision")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for pair, n in verdicts["by_decision_reason"].items():
        decision, _, reason = pair.partition("/")
        table.add_row(decision, reason, str(n))
    table.add_row("", "redelivered (identical)", str(verdicts["redelivered_identical"]))
    table.add_row("", "not from this run", str(verdicts["unexpected"]))
    console.print(table)

    if verdicts["by_user_kind"]:
        table = Table(title="verdicts by viewer kind", show_header=True, header_style="bold")
        table.add_column("viewers")
        for decision in ("allow", "deny", "revoke"):
            table.add_column(decision, justify="right")
        for kind, counts in verdicts["by_user_kind"].items():
            table.add_row(kind, *(str(counts.get(d, 0)) for d in ("allow", "deny", "revoke")))
        console.print(table)

    render_policies(report, console)

    lat, rates = report["latency_ms"], report["rates"]
    table = Table(title="latency and rates", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for q in ("p50", "p95", "p99", "max"):
        table.add_row(f"latency {q} (ms)", _fmt_ms(lat[q]))
    table.add_row("offered (records/s)", str(rates["offered_events_per_s"]))
    table.add_row("verdicts (per s)", str(rates["verdicts_per_s"]))
    table.add_row("producing (s)", str(rates["produce_seconds"]))
    console.print(table)

    table = Table(title="check", show_header=True, header_style="bold")
    table.add_column("problem")
    table.add_column("count", justify="right")
    for name in ("mismatches", "missing", "malformed_verdicts"):
        n = check[name]
        table.add_row(name.replace("_", " "), f"[red]{n}[/red]" if n else "[green]0[/green]")
    for kind, n in check["mismatch_kinds"].items():
        table.add_row(f"  mismatch: {kind}", str(n))
    console.print(table)
    for example in check["examples"][:5]:
        console.print("[red]example:[/red]", orjson.dumps(example).decode()[:600], markup=True)
    for example in check["missing_examples"][:5]:
        console.print("[red]missing:[/red]", orjson.dumps(example).decode()[:600], markup=True)
    if report["ok"]:
        console.print("[bold green]OK[/bold green]: every verdict matched the reference model")
    else:
        console.print("[bold red]FAILED[/bold red]: see the check table above")
