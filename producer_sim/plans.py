"""The simulator's plans and device classes, and the policy records that set their limits.

With plans on, every simulated user has a plan (basic 1 stream, standard 2, premium 4 with
at most 2 on TVs) and each of their devices a class (tv, mobile, web). The plans are
written to the policies topic (`plan:<name>` records) before the run starts and stay fixed
during it, so the checker knows exactly which policy every event resolves to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

from processor.policies import PolicyTable


@dataclass(frozen=True)
class Plan:
    name: str
    max_streams: int
    device_classes: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return f"plan:{self.name}".encode()

    @property
    def value(self) -> bytes:
        """The policy record's value, as an operator would write it (overflow from the settings)."""
        body: dict = {"maxStreams": self.max_streams}
        if self.device_classes:
            body["deviceClasses"] = dict(self.device_classes)
        return orjson.dumps(body)


BASIC: Final = Plan("basic", 1)
STANDARD: Final = Plan("standard", 2)
PREMIUM: Final = Plan("premium", 4, {"tv": 2})
PLANS: Final[dict[str, Plan]] = {p.name: p for p in (BASIC, STANDARD, PREMIUM)}

# Each device of the population belongs to one class.
DEVICE_CLASSES: Final[dict[str, str]] = {
    "tv-livingroom": "tv",
    "tv-bedroom": "tv",
    "console": "tv",
    "phone": "mobile",
    "tablet": "mobile",
    "car": "mobile",
    "laptop": "web",
    "desktop": "web",
}


def policy_records(plans: dict[str, Plan] | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) of the policies-topic records of the plans."""
    return [(p.key, p.value) for p in (plans or PLANS).values()]


def policy_table(
    max_streams: int, overflow: str, records: list[tuple[bytes | None, bytes | None]]
) -> PolicyTable:
    """The table the processor builds from these records (in order), over the settings."""
    table = PolicyTable(max_streams, overflow)
    for key, value in records:
        table.apply(key, value)
    return table


def plan_limit(plan: str) -> int:
    return PLANS[plan].max_streams
