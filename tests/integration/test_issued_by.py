"""The contract's support console on the processor's side: an event with the Kafka header
`issued-by` gets verdicts (its own and its revoke) with `issuedBy`; one without, none; a
redelivery is byte-identical; the verifier holds the topics to the reference model with it."""

from __future__ import annotations

import orjson

from producer_sim.verifier import verify
from tests.harness import Flow
from tests.integration.test_terminate_and_advice import rewind_group, values_of

AGENT = "support:agent-7"


async def test_a_terminate_with_the_issued_by_header_names_the_agent_on_its_verdicts_one_without_nobody(
    flow: Flow,
):
    await flow.send("start", "u1", "tv", at=0, event_id="start-tv", deviceClass="tv")
    await flow.send("start", "u1", "phone", at=10, event_id="start-phone")
    await flow.send("start", "u1", "web", at=20, event_id="start-web")
    issued = [("issued-by", AGENT.encode())]
    await flow.send(
        "terminate", "u1", "console", at=30, event_id="t-agent", headers=issued, targetSessionId="tv"
    )
    await flow.send("terminate", "u1", "phone", at=40, event_id="t-player", targetSessionId="web")
    # A heartbeat with the header too: the field follows the header, whatever the event type.
    await flow.send("heartbeat", "u1", "phone", at=50, event_id="hb", headers=issued)
    verdicts = await flow.wait_events("start-tv", "start-phone", "start-web", "t-agent", "t-player", "hb")
    by_agent = [v for v in verdicts if v["eventId"] == "t-agent"]
    assert [(v["decision"], v["reason"], v.get("issuedBy")) for v in by_agent] == [
        ("allow", "terminated", AGENT),
        ("revoke", "terminated", AGENT),
    ]
    by_player = [v for v in verdicts if v["eventId"] == "t-player"]
    assert [(v["decision"], v["reason"]) for v in by_player] == [
        ("allow", "terminated"),
        ("revoke", "terminated"),
    ]
    assert all("issuedBy" not in v for v in by_player)
    assert [v.get("issuedBy") for v in verdicts if v["eventId"] == "hb"] == [AGENT]
    assert all("issuedBy" not in v for v in verdicts if v["eventId"].startswith("start-"))

    report = await verify(
        flow.bootstrap,
        flow.settings.events_topic,
        flow.settings.verdicts_topic,
        flow.settings.dlq_topic,
        flow.settings.redis_url,
    )
    assert report.clean, report.summary()


async def test_a_redelivered_terminate_with_the_header_yields_byte_identical_verdicts(flow_factory):
    async with flow_factory() as flow:
        running = await flow.start_processor()
        await flow.send("start", "u1", "tv", at=0, event_id="start-tv")
        await flow.send(
            "terminate", "u1", "console", at=10, event_id="t", headers=[("issued-by", AGENT.encode())],
            targetSessionId="tv",
        )  # fmt: skip
        await flow.wait_events("start-tv", "t")
        first = values_of(flow, "t")
        assert [orjson.loads(v)["issuedBy"] for v in first] == [AGENT, AGENT]
        await running.stop()
        await rewind_group(flow)
        await flow.start_processor()  # decides the whole log again
        await flow.send("stop", "u1", "console", at=20, event_id="after")
        await flow.wait_events("after")
        assert values_of(flow, "t") == first * 2
