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


def _rules(key_pattern: str, commands: tuple[str, ...]) -> list[str]:
    # reset first, so a SETUSER on an existing user leaves nothing of its former rights
    return ["reset", "on", key_pattern, "resetchannels", "-@all", *(f"+{c}" for c in commands)]


# user -> its rules, without the password (added as ">password" or "#sha256" when rendered)
USER_RULES: dict[str, list[str]] = {
    "processor": _rules(KEY_PATTERN, PROCESSOR_COMMANDS),
    "gateway": _rules(KEY_PATTERN, GATEWAY_COMMANDS),
    "admin": ["reset", "on", "~*", "&*", "+@all"],
}


def acl_file(passwords: Mapping[str, str]) -> str:
    """The ACL file (``--aclfile``): ``default`` off, each user with its password's SHA-256 only,
    so the file holds no password."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, rules in USER_RULES.items():
        digest = hashlib.sha256(passwords[name].encode()).hexdigest()
        lines.append(" ".join(["user", name, *rules, f"#{digest}"]))
    return "\n".join(lines) + "\n"


def render_setuser_commands(users: tuple[str, ...] = ("processor", "gateway")) -> list[str]:
    """Ready-to-paste ``ACL SETUSER`` lines (the password left as ``>CHANGE-ME``), and the one that
    turns the passwordless ``default`` user off."""
    lines = [f"ACL SETUSER {name} {' '.join(USER_RULES[name])} >CHANGE-ME" for name in users]
    lines.append("ACL SETUSER default off")
    return lines
