from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from tests.chaos.support import ChaosFlow

_FIGURES: list[tuple[str, float, dict]] = []


@pytest.fixture(autouse=True)
def _quiet_clients() -> Iterator[None]:
    """The test's own Kafka clients log every failed reconnect while a broker is down on purpose."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture
def chaos_flow(kafka_bootstrap: str, redis_url: str) -> Callable[..., ChaosFlow]:
    """`async with chaos_flow(partitions=4) as flow:` fresh topics and group on the session services;
    `chaos_flow(bootstrap=..., redis_url=...)` on isolated ones."""

    def make(
        partitions: int = 4, bootstrap: str | None = None, redis: str | None = None, **overrides: object
    ) -> ChaosFlow:
        return ChaosFlow(bootstrap or kafka_bootstrap, redis or redis_url, partitions, overrides)

    return make


@pytest.fixture
def record_figures(request: pytest.FixtureRequest, record_property) -> Iterator[Callable[[dict], None]]:
    """Record a test's figures: printed (captured), kept as junit properties, summarised at the end."""
    started = time.monotonic()
    recorded: list[dict] = []

    def record(figs: dict) -> None:
        recorded.append(figs)
        print(f"FIGURES {request.node.name}: {orjson.dumps(figs).decode()}")
        for key, value in figs.items():
            record_property(key, value)

    yield record
    for figs in recorded:
        _FIGURES.append((request.node.name, time.monotonic() - started, figs))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, seconds, figs in _FIGURES:
        terminalreporter.write_line(f"{name} ({seconds:.1f} s): {orjson.dumps(figs).decode()}")
