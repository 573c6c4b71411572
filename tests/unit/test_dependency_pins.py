"""Every package the project needs is pinned in constraints.txt at the version installed here.

The processor writes aiokafka's private fetcher attributes (processor/consumer.py), so an
unpinned upgrade could silently change its behaviour: `make install` installs with
`-c constraints.txt`, and this test fails when a dependency is added to pyproject.toml without
re-pinning (`make constraints`), or when the environment under test is not the pinned one.
"""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ops_queries import ROOT

pytestmark = pytest.mark.unit

PROJECT = "stream-concurrency"
EXTRAS = ("dev", "plot")  # what `make install` installs: -e '.[dev,plot]'
CONSTRAINTS = ROOT / "constraints.txt"


def pins() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._\-\[\],]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match[1].split("[", 1)[0])
        assert name not in pinned, f"constraints.txt pins {name} twice"
        pinned[name] = match[2]
    return pinned


def required_distributions() -> set[str]:
    """The project's requirements with its dev and plot extras, and theirs, transitively."""
    needed: set[str] = set()
    todo = [(PROJECT, EXTRAS)]
    while todo:
        name, extras = todo.pop()
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                req.marker.evaluate({**default_environment(), "extra": extra}) for extra in ("", *extras)
            ):
                continue
            dep = canonicalize_name(req.name)
            if dep not in needed:
                needed.add(dep)
                todo.append((dep, tuple(req.extras)))
    return needed


def test_constraints_pin_every_package_the_project_needs_at_the_installed_version():
    pinned = pins()
    needed = required_distributions()
    assert "aiokafka" in needed and len(needed) > 30  # the walk reached the transitive requirements
    unpinned = sorted(needed - pinned.keys())
    assert not unpinned, f"not in constraints.txt (run `make constraints`): {unpinned}"
    differ = {
        name: (pinned[name], metadata.version(name))
        for name in sorted(needed)
        if metadata.version(name) != pinned[name]
    }
    assert not differ, f"installed versions differ from the pins (pinned, installed): {differ}"


def test_constraints_pin_nothing_the_project_does_not_need():
    """A dependency dropped from pyproject.toml leaves no stale pin behind (nor is the project pinned)."""
    stale = sorted(pins().keys() - required_distributions())
    assert not stale, f"pinned but not needed (run `make constraints`): {stale}"
