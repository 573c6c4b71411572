"""docs/security.md prints the ACL commands that compose/kafka_acls.py and compose/redis_acls.py
render, line for line: the page an operator pastes from is the set the tests run with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compose.kafka_acls import gateway_acls, processor_acls, render_acl_commands
from compose.redis_acls import render_cluster_setuser_commands, render_setuser_commands

pytestmark = pytest.mark.unit

PAGE = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def block_after(marker: str) -> list[str]:
    """The lines of the fenced block that follows ``<!-- marker -->`` on the page."""
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)\n```", PAGE.read_text(), re.S)
    assert found, f"docs/security.md has no code block after <!-- {marker} -->"
    return found.group(1).splitlines()


@pytest.mark.parametrize(
    ("marker", "rendered"),
    [
        ("kafka-acls:processor", lambda: render_acl_commands(processor_acls())),
        ("kafka-acls:gateway", lambda: render_acl_commands(gateway_acls())),
        ("redis-acls", render_setuser_commands),
        ("redis-acls:cluster", render_cluster_setuser_commands),
    ],
)
def test_the_page_prints_exactly_the_acl_commands_the_code_renders(marker: str, rendered) -> None:
    assert block_after(marker) == rendered()


def test_the_processor_redis_user_gets_neither_info_nor_config() -> None:
    (processor_line,) = [
        line for line in block_after("redis-acls") if line.startswith("ACL SETUSER processor")
    ]
    assert "-@all" in processor_line
    assert not re.search(r"\+(info|config|@)", processor_line)
