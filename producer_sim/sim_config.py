"""What one simulation run is asked to do (rate, length, population, faults), and how much
simulated time it is expected to cover."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

MAX_SPAN_S = 48 * 3600  # a clock further back could meet the topic's retention
ASSUMED_MAX_RATE = 50_000.0  # records/s, to size the simulated span of an unpaced run


@dataclass(frozen=True)
class SimConfig:
    rate: float | None = None  # records per wall second; None: no cap
    duration: float | None = None  # wall seconds of producing
    events: int | None = None  # records to produce
    users: int = 1000
    seed: int = 1
    speed: float | None = None  # simulated seconds per wall second; None: not tied to the wall clock
    heartbeat_interval_s: float = 30.0
    sharers: float = 0.05
    families: float = 0.2
    duplicates: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    plans: bool = False  # users get plans (basic, standard, premium) written as policies first
    terminates: float = 0.0  # chance that a denied start first terminates the oldest conflict
    policy_grace_s: float = 3.0  # wait after writing policies a running processor must read
    drain_timeout: float = 30.0
    progress: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        if self.duration is None and self.events is None:
            object.__setattr__(self, "duration", 60.0)
        for name in ("rate", "speed", "duration"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.events is not None and self.events < 1:
            raise ValueError("events must be at least 1")


def simulated_span_s(cfg: SimConfig, sim_events_per_s: float) -> float:
    """How much simulated time the run is expected to cover (an upper estimate)."""
    if cfg.speed is not None and cfg.duration is not None:
        span = cfg.duration * cfg.speed
    elif cfg.events is not None:
        span = cfg.events / sim_events_per_s
    else:
        assert cfg.duration is not None
        span = cfg.duration * (cfg.rate or ASSUMED_MAX_RATE) / sim_events_per_s
    return min(span, MAX_SPAN_S)
