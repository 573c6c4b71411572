"""Readiness says DOWN while nothing can be decided (issue 28): with its Redis stopped, a real
processor process answers /health 503 within seconds, naming the retry in progress, while
/live stays 200 (the loop is alive); both are UP again once Redis is back."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from tests.harness import wait_until

# Readiness probes act on a few seconds; the issue saw UP for over a minute (the stall limit).
DOWN_WITHIN_S = 15.0


async def test_readiness_goes_down_naming_the_redis_retry_while_liveness_stays_up(
    chaos_flow, isolated_services, tmp_path
):
    redis = await isolated_services.redis()
    async with chaos_flow(partitions=2, redis=redis.url) as flow:
        proc = flow.spawn(tmp_path)
        await proc.wait_healthy()
        producer = AIOKafkaProducer(bootstrap_servers=flow.bootstrap)
        await producer.start()
        try:
            await redis.astop()
            event = {"type": "start", "userId": "u1", "sessionId": "s1", "eventId": "while-away"}
            await producer.send_and_wait(flow.settings.events_topic, orjson.dumps(event), key=b"u1")

            async def down_naming_the_retry() -> dict | None:
                got = await proc.health()
                if got is None or got[0] != 503:
                    return None
                retrying = got[1].get("retrying") or []
                return got[1] if any(r["what"] == "redis: decide" for r in retrying) else None

            body = await wait_until(down_naming_the_retry, DOWN_WITHIN_S, 0.2, what="/health 503 naming it")
            [retry] = [r for r in body["retrying"] if r["what"] == "redis: decide"]
            assert retry["since"].endswith("Z") and retry["attempts"] >= 1
            live = await proc._get("/live")
            assert live is not None and live[0] == 200, live  # the loop is alive: not restarted

            await redis.astart()
            await proc.wait_healthy(60)
            assert "retrying" not in (await proc.health())[1]
        finally:
            await producer.stop()
        assert proc.running, proc.log_tail()
