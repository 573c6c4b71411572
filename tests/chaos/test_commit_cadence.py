"""The committed offsets follow the verdicts at a steady rate: at most one commit in flight,
at most one per COMMIT_INTERVAL_MS, and the tail of a burst committed by the timer (issue 20:
a commit chained per cycle fell behind without bound at low rates)."""

from __future__ import annotations

import asyncio
import bisect
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.chaos.support import assert_clean, figures

INTERVAL_S = 0.3
# A commit's round trip and the poll's own period on a loaded CI machine: generous, but a
# chain that falls behind (seconds, growing with the run) is far beyond it.
SLACK_S = 1.0


class VerdictTimes:
    """When each verdictId was first read from the verdicts topic (monotonic seconds)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.seen: dict[str, float] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._task: asyncio.Task | None = None

    async def start(self) -> VerdictTimes:
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for recs in batch.values():
                for rec in recs:
                    self.seen.setdefault(orjson.loads(rec.value)["verdictId"], now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


async def test_committed_offsets_trail_each_verdict_by_at_most_one_commit_interval_at_a_steady_rate(
    chaos_flow, tmp_path, record_figures
):
    async with chaos_flow(partitions=4) as flow:
        s = flow.settings
        proc = flow.spawn(tmp_path, COMMIT_INTERVAL_MS=str(int(INTERVAL_S * 1000)))
        await proc.wait_healthy()
        verdicts = await VerdictTimes(s.kafka_bootstrap_servers, s.verdicts_topic, s.topic_partitions).start()
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
        await admin.start()
        samples: list[tuple[float, dict[int, int]]] = []  # (when read, committed offsets)

        async def sample() -> None:
            offsets = await admin.list_consumer_group_offsets(s.consumer_group)
            samples.append((time.monotonic(), {tp.partition: m.offset for tp, m in offsets.items()}))
            await asyncio.sleep(0.05)

        load = await flow.load(seed=20, rate=400.0)
        try:
            until = time.monotonic() + 8.0
            while time.monotonic() < until:
                await sample()
            stats = await load.finish()
            # The tail: nothing follows the last events, so only the timer can commit them.
            tail_until = time.monotonic() + INTERVAL_S + SLACK_S + 3.0
            while time.monotonic() < tail_until:
                await sample()
        finally:
            await verdicts.stop()
            await admin.close()
        verifier = await flow.verifier()
        report = verifier.report
        assert_clean(report)
        when = [t for t, _ in samples]
        delays = []
        for exp in verifier.expected.values():
            if not exp.main_ids or exp.main_ids[0] not in verdicts.seen:
                continue
            seen = verdicts.seen[exp.main_ids[0]]
            # The first sample read after the verdict was whose commit covers the event.
            first = bisect.bisect_right(when, seen)
            covered = next((t for t, c in samples[first:] if c.get(exp.partition, -1) > exp.offset), None)
            assert covered is not None, f"event at {exp.partition}:{exp.offset} never committed"
            delays.append(covered - seen)
        assert len(delays) > 1000, "too few verdicts seen to judge the cadence"
        delays.sort()
        record_figures(
            figures(report, stats, faults="none: steady 400 ev/s", commit_interval_s=INTERVAL_S,
                    commit_delay_p50_s=round(delays[len(delays) // 2], 3),
                    commit_delay_max_s=round(delays[-1], 3))
        )  # fmt: skip
        assert delays[-1] <= INTERVAL_S + SLACK_S, f"a verdict waited {delays[-1]:.2f} s for its commit"
