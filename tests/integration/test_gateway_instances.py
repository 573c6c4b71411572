"""Two gateway instances side by side: each reads only its own replies, and no reply is lost."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from tests.gateway_harness import bearer, running_gateway
from tests.harness import wait_until


async def test_two_instances_share_200_calls_and_every_call_gets_its_own_verdict(flow_factory):
    async with flow_factory() as flow:
        await flow.start_processor()
        async with (
            running_gateway(flow) as one,
            running_gateway(flow, ready=False) as two,
            httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=40)) as http,
        ):

            async def both_up() -> bool:
                codes = [(await http.get(f"{g.url}/health")).status_code for g in (one, two)]
                parts = {one.gateway.router.partition, two.gateway.router.partition}
                return codes == [200, 200] and None not in parts and len(parts) == 2

            await wait_until(both_up, 30, what="both instances owning a reply partition")
            owned = [set(g.gateway.router.assigned_partitions) for g in (one, two)]
            assert not owned[0] & owned[1]
            gate = asyncio.Semaphore(20)

            async def call(n: int) -> httpx.Response:
                url = (one, two)[n % 2].url
                # 50 users with 4 starts each: 3 allowed and one denied per user.
                user, session = f"u-{n % 50}", f"s-{n // 50}"
                async with gate:
                    return await http.post(
                        f"{url}/v1/sessions", json={"sessionId": session}, headers=bearer(user)
                    )

            answers = await asyncio.gather(*(call(n) for n in range(200)))
            timeouts = [g.gateway.metrics.timeouts.labels("start")._value.get() for g in (one, two)]
            matched = [g.gateway.metrics.replies.labels("matched")._value.get() for g in (one, two)]
        assert sorted(a.status_code for a in answers) == [200] * 150 + [409] * 50
        # The replies may come before the verdicts reader has the verdicts.
        await flow.wait_events(*(a.json()["eventId"] for a in answers))
        by_event = {
            orjson.loads(r.value)["eventId"]: r.value
            for r in flow.verdict_records()
            if orjson.loads(r.value)["decision"] != "revoke"
        }
        for answer in answers:
            assert answer.content == by_event[answer.json()["eventId"]]  # its own verdict, byte for byte
        assert matched == [100, 100]  # each read the replies of its own calls only
        assert timeouts == [0, 0]
