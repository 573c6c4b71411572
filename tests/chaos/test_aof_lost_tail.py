"""Redis restarted from an AOF that lost its tail, under load: repaired from the log.

AOF `everysec` acknowledges a write before the disk has it, so a machine that crashes loses
up to a second of writes. A killed process does not (the page cache keeps them), so the test
cuts the tail off the AOF itself, at a transaction boundary (each script call's writes are one
MULTI/EXEC in the AOF), before Redis starts again. The partitions whose state went back replay
their log; none halts, and the verifier finds every verdict equal to the model's.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos.support import assert_clean, figures, repair_figures

MULTI = b"*1\r\n$5\r\nMULTI\r\n"


def drop_aof_tail(data_dir: Path, fraction: float, least: int) -> tuple[int, int]:
    """Cut the newest AOF file before its last `fraction` (at least `least`) transactions;
    (transactions dropped, bytes dropped)."""
    newest = max((data_dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: int(p.name.split(".")[-3]))
    data = newest.read_bytes()
    starts = []
    at = data.find(MULTI)
    while at >= 0:
        starts.append(at)
        at = data.find(MULTI, at + 1)
    drop = min(len(starts), max(least, int(len(starts) * fraction)))
    assert drop > 0, f"no transaction in {newest}"
    cut = starts[-drop]
    with newest.open("r+b") as f:
        f.truncate(cut)
    return drop, len(data) - cut


async def test_redis_restarted_from_an_aof_that_lost_its_tail_is_repaired_from_the_log(
    chaos_flow, isolated_services, tmp_path, record_figures
):
    redis = await isolated_services.redis()
    async with chaos_flow(partitions=4, redis=redis.url) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        load = await flow.load(seed=25, duplicates=0.03, late=0.05, without_event_id=0.05)
        await load.wait_acked(1200)
        await redis.akill()  # SIGKILL; then the disk loses the last writes, as in a machine crash
        dropped, dropped_bytes = drop_aof_tail(redis.data_dir, fraction=0.3, least=30)
        restarted_at = time.monotonic()
        await redis.astart()
        await load.wait_acked(load.stats.acked + 900)
        stats = await load.finish()
        await flow.wait_drained()
        drained_s = time.monotonic() - restarted_at
        status, body = await proc.health()
        repairs = await proc.metric("concurrency_state_repairs_total")
        report = await flow.verify()
        record_figures(
            figures(report, stats, aof_transactions_dropped=dropped, aof_bytes_dropped=dropped_bytes,
                    drained_after_restart_seconds=round(drained_s, 2), **repair_figures(proc),
                    faults="redis SIGKILL, AOF tail cut, restart")
        )  # fmt: skip
        assert proc.running, proc.log()[-3000:]
        assert repairs and repairs >= 1
        assert status == 200 and "haltReasons" not in body, body
        assert await proc.metric("concurrency_state_repairing") == 0
        assert_clean(report)
