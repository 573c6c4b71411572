"""Prose that states facts about the code, checked against the code: docs/architecture.md's
module table against the files, docs/performance.md's capacity plan against what
bench/capacity_plan.py prints from the measured figures the page gives, and the README's
failover figures against the runs docs/state-repair.md reports.

A module added without its row, or a row left behind by a renamed or removed file, fails here
with the exact rows to add or drop.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from bench.capacity_plan import Measured, format_plan, plan

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PERFORMANCE = ROOT / "docs" / "performance.md"
STATE_REPAIR = ROOT / "docs" / "state-repair.md"
README = ROOT / "README.md"
# The packages whose every module the table must name (package plumbing aside).
PACKAGES = ("processor", "gateway", "producer_sim")
PLUMBING = {"__init__.py", "__main__.py"}
_CODE = re.compile(r"`([^`]+)`")
TIMES = "\N{MULTIPLICATION SIGN}"  # as the doc writes its products


def module_table_rows() -> list[tuple[str, str]]:
    """(first cell, whole row) of the table under the `| module | job |` header."""
    rows, inside = [], False
    for line in ARCHITECTURE.read_text().splitlines():
        if line.startswith("| module | job |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not line.startswith("| ---"):
            rows.append((line.split("|")[1], line))
    assert rows, "docs/architecture.md has no `| module | job |` table"
    return rows


def named_modules() -> dict[str, str]:
    """Each .py file a row names, as a path from the root -> the row's first cell.

    A row is about the directory of the first path in its first cell (`gateway/`,
    `processor/config.py`); a bare name (`tokens.py`) is in that directory, a name with a
    slash is from the root or, failing that, from the row's directory (`chaos/load.py`)."""
    named: dict[str, str] = {}
    for first_cell, row in module_table_rows():
        heads = _CODE.findall(first_cell)
        assert heads, f"a row of the module table names no path in its first cell: {row}"
        base = heads[0] if heads[0].endswith("/") else heads[0].rsplit("/", 1)[0] + "/"
        for name in _CODE.findall(row):
            if not name.endswith(".py"):
                continue
            from_root = name if "/" in name and (ROOT / name).exists() else base + name
            named[from_root] = first_cell.strip()
    return named


def test_the_module_table_names_every_module_of_the_packages_and_no_missing_file():
    named = named_modules()
    present = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name not in PLUMBING
    }
    missing_rows = sorted(present - named.keys())
    assert not missing_rows, (
        "docs/architecture.md's module table has no row naming: "
        + ", ".join(missing_rows)
        + " (add a row `| `<module>` | <its one job> |`, or name it in its package's row)"
    )
    stale = sorted(path for path in named if not (ROOT / path).exists())
    assert not stale, f"docs/architecture.md's module table names files that do not exist: {stale}"


def test_the_drift_check_reads_the_table_it_means():
    """The parser itself: rows of several forms resolve to the files they name."""
    named = named_modules()
    assert named["processor/config.py"] == "`processor/config.py`"
    assert named["processor/tokens.py"].startswith("`processor/verdicts.py`")  # a bare name
    assert "gateway/calls.py" in named and "tests/chaos/load.py" in named


def capacity_section() -> str:
    page = PERFORMANCE.read_text()
    start = page.index("## Capacity plan")
    end = page.find("\n## ", start + 1)
    return page[start:] if end < 0 else page[start:end]


def _stated(pattern: str, text: str, what: str) -> re.Match:
    found = re.search(pattern, text)
    assert found, f"docs/performance.md's capacity notes no longer state {what} (looked for {pattern!r})"
    return found


def _number(text: str) -> float:
    return float(re.search(r"[\d,]+(?:\.\d+)?", text)[0].replace(",", ""))


def documented_capacity_run() -> Measured:
    """The plan's inputs as the page states them, picked as bench.capacity_plan.measured()
    picks them from a report: the lone process of the cluster runs, the dearest Redis CPU of
    any cluster run, the script time of the least busy one; the bytes from the notes."""
    section = capacity_section()
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit() and int(cells[0]) > 1:
            rows.append(cells)  # shards | processes | events/s | per process | Redis CPU | script | ...
    assert len(rows) >= 3, "the capacity table's cluster rows are not found"
    alone = next(r for r in rows if r[1] == "1")
    worst = max(rows, key=lambda r: _number(r[4]))
    quiet = min(rows, key=lambda r: _number(r[9]))
    per_call = _stated(r"(\d+) events per script call", worst[1], "the worst run's batch size")
    bytes_ = _stated(
        r"([\d.]+) B per event, ([\d.]+) B per verdict, ([\d.]+)\s+verdicts per event",
        section,
        "the Kafka bytes",
    )
    per_lease = _stated(r"Memory per lease: ([\d.]+) B", section, "the bytes per lease")
    per_user = _stated(
        TIMES + r" ([\d.]+) B \(Redis bytes per user with state", section, "the bytes per user"
    )
    return Measured(
        events_per_s_per_process=_number(alone[3]),
        cpu_s_per_event=_number(alone[8]) / 1e6,
        redis_usec_per_event=_number(quiet[5]),
        redis_cpu_usec_per_event=_number(worst[4]),
        events_per_script_call=float(per_call[1]),
        bytes_per_lease=float(per_lease[1]),
        bytes_per_user=float(per_user[1]),
        event_bytes=float(bytes_[1]),
        verdict_bytes=float(bytes_[2]),
        verdicts_per_event=float(bytes_[3]),
    )


def test_the_printed_capacity_plan_in_the_doc_is_what_the_code_prints_from_the_docs_figures():
    computed = plan(documented_capacity_run())
    printed = format_plan(computed)
    shown = re.search(r"```text\n(Capacity plan for .*?)\n```", capacity_section(), flags=re.S)
    assert shown, "docs/performance.md's capacity plan has no printed plan (```text block)"
    diff = "\n".join(
        difflib.unified_diff(shown[1].splitlines(), printed.splitlines(), "doc", "code", lineterm="")
    )
    assert shown[1] == printed, f"the doc's printed plan differs from bench.capacity_plan's:\n{diff}"
    # The steps below the block quote its results.
    pr, rd, pa = computed["processors"], computed["redis"], computed["partitions"]
    for figure in (
        f"**{computed['rate']['planned_events_per_s']:,} events/s**",
        f"**{pr['processes']} processes**",
        f"**{pr['cpu_cores']} cores**",
        f"**{pa['processes']} processes {TIMES} {pa['partitions_per_process']} partitions**",
        f"**{rd['shards']} shards**",
        f"**{pa['shards']} shards {TIMES} {pa['partitions_per_shard']} partitions**",
        f"**Events partitions: {pa['chosen']}, created up front**",
    ):
        assert figure in capacity_section(), f"docs/performance.md's capacity steps do not say {figure}"


def table_columns(page: Path, header_cell: str) -> dict[str, list[str]]:
    """The columns of the first table of `page` whose header has `header_cell`, by header."""
    lines = page.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("|") and header_cell in line)
    header = [c.strip() for c in lines[at].strip("|").split("|")]
    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}


def _span(values: list[float], digits: int) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def test_the_readmes_failover_figures_are_the_runs_of_the_state_repair_page():
    runs = table_columns(STATE_REPAIR, "failover (kill to all slots served)")
    assert len(runs["run"]) >= 5
    failover = [_number(v) for v in runs["failover (kill to all slots served)"]]
    repaired = [int(_number(v)) for v in runs["partitions repaired"]]
    replayed = [int(_number(v)) for v in runs["records replayed"]]
    repair_times = [
        float(t) for v in runs["time to repair (loss found to state back)"] for t in re.findall(r"[\d.]+", v)
    ]
    said = (
        f"failover {_span(failover, 2)} s, {min(repaired)}-{max(repaired)} partitions repaired from the log,"
        f" {min(replayed)}-{max(replayed)} records decided again (identical verdicts)"
        f" in {_span(repair_times, 2)} s"
    )
    readme = " ".join(README.read_text().split())
    assert said in readme, f"README.md should say, as docs/state-repair.md's runs do: {said!r}"
