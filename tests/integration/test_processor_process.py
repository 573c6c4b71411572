"""The one processor-process wrapper (producer_sim/processor_proc.py) on the real services: its
probes, signals, restart and exit code, as the demo, the bench and the chaos tests use them."""

from __future__ import annotations

import subprocess

import pytest

from producer_sim.processor_proc import ProcessorError, ProcessorProcess


async def test_probes_pause_restart_and_a_clean_exit_of_one_processor_process(flow_factory, tmp_path):
    async with flow_factory(partitions=2) as flow:
        proc = flow.spawn_processor(tmp_path, SESSION_TIMEOUT_MS="6000", HEARTBEAT_INTERVAL_MS="1000")
        await proc.wait_healthy()
        assert await proc.assigned() == 2
        await flow.send("start", "u1", "s1", at=0, event_id="e1")
        await flow.wait_events("e1")
        assert await proc.metric("concurrency_events_total", reason="started") == 1
        assert await proc.metric("concurrency_events_total", reason="no_such_reason") == 0
        assert proc.logged("partitions assigned"), proc.log_tail()
        assert proc.rss_mb() > 10 and proc.cpu_seconds() > 0

        proc.pause()  # SIGSTOP: the process lives, its probes do not answer
        assert await proc.health() is None and await proc.metric("concurrency_events_total") is None
        assert proc.running
        proc.resume()
        await proc.wait_healthy()

        first_pid = proc.pid
        proc.restart()  # SIGTERM, then the same command, port and log again
        assert proc.pid != first_pid
        await proc.wait_healthy()
        assert len(proc.logged("processor stopped")) == 1, proc.log_tail()
        assert proc.terminate(30) == 0, proc.log_tail()
        assert not proc.running and proc.returncode == 0


async def test_a_processor_that_exits_fails_wait_healthy_at_once_with_its_log(tmp_path):
    # An unreachable Kafka is retried, an invalid setting is not: the process exits at start-up.
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "MAX_STREAMS": "not-a-number"}
    async with ProcessorProcess(env, tmp_path / "bad.log") as proc:
        with pytest.raises(ProcessorError, match="exited") as raised:
            await proc.wait_healthy(30)
        assert proc.returncode not in (None, 0)
        assert str(proc.returncode) in str(raised.value)
    sleep = ["-c", "import time; time.sleep(60)"]
    sleeper = ProcessorProcess({}, tmp_path / "sleep.log", python_args=sleep)
    with pytest.raises(subprocess.TimeoutExpired):  # a running process that does not exit
        with sleeper:
            sleeper.wait(0.2)
    assert sleeper.returncode is not None  # the context manager stopped it
