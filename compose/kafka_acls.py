"""The contract's Kafka ACL sets as data, and the same sets as ready-to-paste ``kafka-acls.sh`` lines.

The contract ("Secured Kafka and Redis") gives each principal the least it needs:

- processor: Read + Describe on the events and policies topics; Write + Describe on the verdicts
  and dead-letter topics and on the reply topics; Read on its consumer group. Nothing else.
- gateway: Write + Describe on the events topic; Read + Describe on its replies topic; Read on
  its consumer group, as a prefixed ACL (the gateway may add a suffix to the group's name).

``processor_acls`` / ``gateway_acls`` return those bindings; ``render_acl_commands`` prints them
for docs/security.md (a test checks the page shows exactly these lines), and
compose/kafka_admin.py applies them to a broker. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

ResourceType = Literal["TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"]
PatternType = Literal["LITERAL", "PREFIXED"]
Operation = Literal[
    "READ", "WRITE", "DESCRIBE", "CREATE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"
]


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource, from any host."""

    principal: str  # "User:processor"
    resource_type: ResourceType
    resource_name: str
    operation: Operation
    pattern_type: PatternType = "LITERAL"


@dataclass(frozen=True)
class Topics:
    """The names the ACLs are about; the defaults are the contract's."""

    events: str = "playback.events"
    verdicts: str = "playback.verdicts"
    dlq: str = "playback.events.dlq"
    policies: str = "playback.policies"
    replies: str = "playback.replies"
    processor_group: str = "concurrency-processor"
    gateway_group: str = "concurrency-gateway"


def _on(principal: str, kind: ResourceType, name: str, *ops: Operation, pattern: PatternType = "LITERAL"):
    return [AclBinding(principal, kind, name, op, pattern) for op in ops]


def processor_acls(
    principal: str = "User:processor",
    topics: Topics = Topics(),
    reply_topics: Sequence[str] | None = None,
) -> list[AclBinding]:
    """The processor's set. ``reply_topics`` are literal names (default: the replies topic)."""
    replies = [topics.replies] if reply_topics is None else list(reply_topics)
    out = []
    for name in (topics.events, topics.policies):
        out += _on(principal, "TOPIC", name, "READ", "DESCRIBE")
    for name in (topics.verdicts, topics.dlq, *replies):
        out += _on(principal, "TOPIC", name, "WRITE", "DESCRIBE")
    out += _on(principal, "GROUP", topics.processor_group, "READ")
    return out


def gateway_acls(
    principal: str = "User:gateway",
    topics: Topics = Topics(),
) -> list[AclBinding]:
    """The gateway's set; its group is a prefix (an instance may suffix the configured name)."""
    return [
        *_on(principal, "TOPIC", topics.events, "WRITE", "DESCRIBE"),
        *_on(principal, "TOPIC", topics.replies, "READ", "DESCRIBE"),
        *_on(principal, "GROUP", topics.gateway_group, "READ", pattern="PREFIXED"),
    ]


def without(bindings: Iterable[AclBinding], *dropped: AclBinding) -> list[AclBinding]:
    """``bindings`` less ``dropped`` (e.g. the processor's set minus Write on the verdicts topic)."""
    gone = set(dropped)
    return [b for b in bindings if b not in gone]


def as_principal(bindings: Iterable[AclBinding], principal: str) -> list[AclBinding]:
    """The same rules for another principal (a test's "processor-nowrite")."""
    return [
        AclBinding(principal, b.resource_type, b.resource_name, b.operation, b.pattern_type) for b in bindings
    ]


_FLAG = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}
_OPERATION_NAME = {"DESCRIBE_CONFIGS": "DescribeConfigs", "IDEMPOTENT_WRITE": "IdempotentWrite"}


def _resource_flags(b: AclBinding) -> str:
    where = "--cluster" if b.resource_type == "CLUSTER" else f"{_FLAG[b.resource_type]} {b.resource_name}"
    if b.pattern_type == "PREFIXED":
        where += " --resource-pattern-type prefixed"
    return where


def render_acl_commands(
    bindings: Iterable[AclBinding],
    bootstrap: str = "$BOOTSTRAP",
    command_config: str = "admin.properties",
) -> list[str]:
    """One ``kafka-acls.sh --add`` line per principal and resource (its operations as flags), in
    the order the bindings come (which keeps the contract's order)."""
    lines = []
    keyed = groupby(bindings, key=lambda b: (b.principal, b.resource_type, b.resource_name, b.pattern_type))
    for (principal, *_), group in keyed:
        rules = list(group)
        ops = " ".join(
            f"--operation {_OPERATION_NAME.get(b.operation, b.operation.capitalize())}" for b in rules
        )
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {command_config} "
            f"--add --allow-principal {principal} {ops} {_resource_flags(rules[0])}"
        )
    return lines
