"""The documentation a person who clones the repository reads: every relative link of README.md
and docs/*.md resolves to a file (and to a heading, for an anchor into a Markdown page), the
README stays a front page, and docs/contract.md lists every setting with the default the code
has."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from gateway.settings import GatewaySettings
from processor.config import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages other branches of issue 21-23 write in parallel: a link to one may point nowhere only
# while the page does not exist; once it does, its links and anchors are checked like the rest.
# (Empty this set once they are all merged.)
PAGES_IN_FLIGHT: set[str] = set()
README_MAX_LINES = 300

_md = MarkdownIt("commonmark").enable("table")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation and symbols dropped, spaces to dashes."""
    kept = "".join(c for c in heading.strip().lower() if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    tokens = _md.parse(page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        inline = tokens[i + 1]
        text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    out = []
    for token in _md.parse(page.read_text()):
        for child in token.children or []:
            if child.type == "link_open":
                out.append(str(child.attrs["href"]))
            elif child.type == "image":
                out.append(str(child.attrs["src"]))
    return out


def test_the_anchor_of_a_heading_follows_github():
    assert slug("The HTTP gateway (`python -m gateway`, `concurrency-gateway`)") == (
        "the-http-gateway-python--m-gateway-concurrency-gateway"
    )
    assert (
        slug("Capacity plan: 10 million concurrent viewers") == "capacity-plan-10-million-concurrent-viewers"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(page: Path):
    broken = []
    for href in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):
            continue  # http:, https:, mailto:
        path_part, _, anchor = href.partition("#")
        target = (page.parent / path_part).resolve() if path_part else page
        relative = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        if not target.exists():
            if relative not in PAGES_IN_FLIGHT:
                broken.append(f"{href}: no file {relative}")
            continue
        if anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{href}: no heading #{anchor} in {relative}")
    assert not broken, "\n".join(broken)


def test_nothing_links_outside_the_repository():
    for page in PAGES:
        for href in links(page):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", href):
                target = (page.parent / href.partition("#")[0]).resolve()
                assert target.is_relative_to(ROOT), f"{page.name}: {href} leaves the repository"


def test_the_readme_is_a_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text and "make test" in text
    linked = {href.partition("#")[0] for href in links(ROOT / "README.md")}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked or page.name == "README.md", f"README does not list {page.name}"


def _settings_table(text: str) -> dict[str, str]:
    """`NAME` -> its default cell, from the settings tables of docs/contract.md."""
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[A-Z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _shown(default: object) -> str:
    if default is None:
        return "—"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    return f"`{default}`"


@pytest.mark.parametrize("settings", [Settings, GatewaySettings], ids=["processor", "gateway"])
def test_contract_lists_every_setting_with_its_default(settings):
    documented = _settings_table((ROOT / "docs" / "contract.md").read_text())
    for name, field in settings.model_fields.items():
        env = name.upper()
        assert env in documented, f"{env} is not in docs/contract.md's settings"
        cell = documented[env]
        if cell.startswith("see "):
            continue  # the default is stated on the page the link names
        assert cell == _shown(field.default), f"{env}: docs say {cell}, the code {_shown(field.default)}"


def test_the_pages_the_code_sends_operators_to_exist():
    """Error messages and log lines name docs pages: each must be there (and its section, when quoted)."""
    named = []
    for source in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in source.parts:
            continue
        for match in re.finditer(r"(docs/[\w-]+\.md)(?:, '([^']+)')?", source.read_text()):
            named.append((source.relative_to(ROOT).as_posix(), match.group(1), match.group(2)))
    assert any(path.startswith("processor/") for path, _, _ in named)
    for where, page, section in named:
        target = ROOT / page
        if page in PAGES_IN_FLIGHT and not target.exists():
            continue
        assert target.exists(), f"{where} names {page}"
        if section:
            headings = {slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)}
            assert any(h.startswith(slug(section)) for h in headings), (
                f"{where}: no section {section!r} in {page}"
            )
