"""The benchmark run's policies topic, for this tree's processor or one from before policies.

`--plans` writes the plan policies before any processor starts. A processor from before
issue 13 never reads the topic: it decides the same bytes with its settings, which is the
"before" figure of a before/after comparison.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson

from bench.access import bench_kafka
from bench.kafka_util import create_topics
from bench.procs import JWT_SECRET


def processor_has_policies() -> bool:
    """Whether the processor package in use (this tree's) has policies (issue 13).

    Looked up as a file of the package, not by import: the project's editable install would
    find a missing submodule in the main checkout when this runs in a worktree of an old commit.
    """
    spec = importlib.util.find_spec("processor")
    return bool(spec and spec.origin) and (Path(spec.origin).parent / "policies.py").is_file()


async def prepare_policies_topic(bootstrap: str, topic: str, records: dict[str, dict]) -> dict:
    """Create the (compacted) policies topic, write `records` (key -> policy) into it, and
    return the report's `policies` entry."""
    supported = processor_has_policies()
    if supported:
        from processor.config import load_settings
        from processor.policies import ensure_policies_topic

        settings = load_settings(
            kafka_bootstrap_servers=bootstrap, policies_topic=topic, jwt_secret=JWT_SECRET
        )
        await ensure_policies_topic(settings)
    else:  # a processor from before issue 13: it never reads the topic
        await create_topics(bootstrap, [topic], 1, {"cleanup.policy": "compact"})
    if records:
        producer = bench_kafka(bootstrap).producer(acks="all")
        await producer.start()
        try:
            for key, value in records.items():
                await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
        finally:
            await producer.stop()
    return {"topic": topic, "records": records, "processor_reads_policies": supported}
