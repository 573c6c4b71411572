"""The contract's Redis ACL users, written once: the rules the secured Redis loads from its ACL
file and the ``ACL SETUSER`` lines docs/security.md prints (a test checks they are the same).

- ``processor``: its own keys (``~sc:*``) and exactly the commands it calls: the scripts
  (``EVALSHA``, ``SCRIPT LOAD``) and the reads and writes around them. No ``INFO``, no ``CONFIG``
  (a user allowed ``CONFIG GET`` can read ``requirepass``), no pub/sub channels.
- ``gateway``: read-only commands on the same keys (``GET /v1/sessions`` reads the leases).
- ``admin``: everything; for operators and the tests' set-up, never for the components.
- ``default``: off, so a client without a user and password is refused.

No I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

KEY_PATTERN = "~sc:*"

PROCESSOR_COMMANDS = (
    "evalsha",
    "script|load",
    "get",
    "set",
    "hget",
    "hgetall",
    "hset",
    "hdel",
    "hincrby",
    "zrange",
    "zadd",
    "zrem",
)
GATEWAY_COMMANDS = ("get", "hget", "hgetall", "zrange")
# What redis-py's cluster client runs when it starts, on top (redis/asyncio/cluster.py finds the
# nodes with CLUSTER SLOTS; redis/_parsers/commands.py reads the COMMAND table to route by key).
CLUSTER_CLIENT_COMMANDS = ("cluster|slots", "command")


def _rules(key_pattern: str, commands: tuple[str, ...]) -> list[str]:
    # reset first, so a SETUSER on an existing user leaves nothing of its former rights
    return ["reset", "on", key_pattern, "resetchannels", "-@all", *(f"+{c}" for c in commands)]


# user -> its rules, without the password (added as ">password" or "#sha256" when rendered)
USER_RULES: dict[str, list[str]] = {
    "processor": _rules(KEY_PATTERN, PROCESSOR_COMMANDS),
    "gateway": _rules(KEY_PATTERN, GATEWAY_COMMANDS),
    "admin": ["reset", "on", "~*", "&*", "+@all"],
}


def _cluster_extra(name: str) -> list[str]:
    return [f"+{c}" for c in CLUSTER_CLIENT_COMMANDS] if name in ("processor", "gateway") else []


def acl_file(passwords: Mapping[str, str], cluster: bool = False) -> str:
    """The ACL file (``--aclfile``): ``default`` off, each user with its password's SHA-256 only,
    so the file holds no password; on a cluster's nodes with ``CLUSTER_CLIENT_COMMANDS`` too."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, rules in USER_RULES.items():
        digest = hashlib.sha256(passwords[name].encode()).hexdigest()
        extra = _cluster_extra(name) if cluster else []
        lines.append(" ".join(["user", name, *rules, *extra, f"#{digest}"]))
    return "\n".join(lines) + "\n"


def render_setuser_commands(users: tuple[str, ...] = ("processor", "gateway")) -> list[str]:
    """Ready-to-paste ``ACL SETUSER`` lines (the password left as ``>CHANGE-ME``), and the one that
    turns the passwordless ``default`` user off."""
    lines = [f"ACL SETUSER {name} {' '.join(USER_RULES[name])} >CHANGE-ME" for name in users]
    lines.append("ACL SETUSER default off")
    return lines


def render_cluster_setuser_commands(users: tuple[str, ...] = ("processor", "gateway")) -> list[str]:
    """What a Redis Cluster's users need on top of ``render_setuser_commands`` (on every node)."""
    return [f"ACL SETUSER {name} {' '.join(_cluster_extra(name))}" for name in users]
