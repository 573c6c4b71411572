"""Prose that states facts about the code, checked against the code: docs/architecture.md's
module table against the files.

A module added without its row, or a row left behind by a renamed or removed file, fails here
with the exact rows to add or drop.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# The packages whose every module the table must name (package plumbing aside).
PACKAGES = ("processor", "gateway", "producer_sim")
PLUMBING = {"__init__.py", "__main__.py"}
_CODE = re.compile(r"`([^`]+)`")


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
