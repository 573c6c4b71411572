"""The operator commands as an operator runs them: `python -m processor policy ...` and `terminate`.

Each command runs as a child process with its settings in the environment, against the test
broker; refused input exits 2 with a message on stderr and writes nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.partitioning import partition_for
from processor.policies import POLICY_PARTITIONS, ensure_policies_topic
from producer_sim.processor_proc import REPO_ROOT
from tests.harness import Flow


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return orjson.loads(self.out)


async def cli(flow: Flow | None, *args: str, within: float = 60) -> Run:
    """`python -m processor ARGS` with the flow's settings in the environment (none: help only)."""
    env = dict(os.environ)
    if flow is not None:
        s = flow.settings
        env |= {
            "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "REDIS_URL": s.redis_url,
            "EVENTS_TOPIC": s.events_topic,
            "VERDICTS_TOPIC": s.verdicts_topic,
            "DLQ_TOPIC": s.dlq_topic,
            "POLICIES_TOPIC": s.policies_topic,
            "TOPIC_PARTITIONS": str(s.topic_partitions),
            "EVENT_PARTITIONER": s.event_partitioner,
        }
    env.pop("JWT_SECRET", None)  # the commands sign nothing: they must not need it
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return Run(proc.returncode, out.decode(), err.decode())


async def records_of(flow: Flow, topic: str, partitions: int = POLICY_PARTITIONS) -> list:
    """Every record of `topic` (none when it does not exist), read to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=flow.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


async def topic_config(flow: Flow, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=flow.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_code, _msg, _type, _name, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


# -- policy set / delete / list ---------------------------------------------------------


async def test_policy_set_writes_the_validated_policy_to_a_compacted_policies_topic(flow_factory):
    async with flow_factory() as flow:
        value = {"maxStreams": 4, "deviceClasses": {"tv": 2}}
        run = await cli(flow, "policy", "set", "plan:premium", orjson.dumps(value).decode())
        assert run.code == 0, run.err
        printed = run.json()
        assert (printed["set"], printed["value"], printed["topic"]) == (
            "plan:premium",
            value,
            flow.settings.policies_topic,
        )
        [record] = await records_of(flow, flow.settings.policies_topic)
        assert (record.key, orjson.loads(record.value), record.offset) == (
            b"plan:premium",
            value,
            printed["offset"],
        )
        assert (await topic_config(flow, flow.settings.policies_topic))["cleanup.policy"] == "compact"


async def test_policy_delete_writes_a_tombstone_for_the_key(flow_factory):
    async with flow_factory() as flow:
        assert (await cli(flow, "policy", "set", "user:u1", '{"maxStreams": 1}')).code == 0
        run = await cli(flow, "policy", "delete", "user:u1")
        assert run.code == 0, run.err
        assert run.json()["deleted"] == "user:u1"
        records = await records_of(flow, flow.settings.policies_topic)
        assert [(r.key, r.value) for r in records][-1] == (b"user:u1", None)


async def test_policy_list_prints_every_policy_in_force_and_the_settings(flow_factory):
    async with flow_factory() as flow:
        await flow.send_policy("default", {"maxStreams": 5})
        await flow.send_policy("plan:basic", {"maxStreams": 1, "overflow": "evict_oldest"})
        await flow.send_policy("plan:basic", b'{"maxStreams": -1}')  # malformed: the last good stays
        await flow.send_policy("plan:gone", {"maxStreams": 2})
        await flow.send_policy("plan:gone", None)
        await flow.send_policy("user:vip", {"maxStreams": 9, "deviceClasses": {"tv": 3}, "note": "x"})
        run = await cli(flow, "policy", "list")
        assert run.code == 0, run.err
        listing = run.json()
        assert listing["topic"] == flow.settings.policies_topic
        assert listing["settings"] == {"maxStreams": 3, "overflow": "reject"}
        assert listing["policies"] == {
            "default": {"maxStreams": 5, "overflow": "reject"},
            "plan:basic": {"maxStreams": 1, "overflow": "evict_oldest"},
            "user:vip": {"maxStreams": 9, "overflow": "reject", "deviceClasses": {"tv": 3}},
        }


async def test_policy_list_of_an_empty_topic_prints_no_policies(flow_factory):
    async with flow_factory() as flow:
        run = await cli(flow, "policy", "list")
        assert run.code == 0, run.err
        assert run.json()["policies"] == {}


async def test_a_policy_set_with_the_cli_is_followed_by_a_running_processor(flow: Flow):
    await flow.send("start", "u1", "s0", at=0, event_id="e0", plan="basic")
    await flow.wait_events("e0")
    assert (await cli(flow, "policy", "set", "plan:basic", '{"maxStreams": 1}')).code == 0
    await flow.wait_policy("u1", "plan:basic", 1, plan="basic", at=10)
    await flow.send("start", "u1", "s1", at=20, event_id="e1", plan="basic")
    [v] = [v for v in await flow.wait_events("e1") if v["eventId"] == "e1"]
    assert (v["reason"], v["maxStreams"], v["policy"]) == ("limit_exceeded", 1, "plan:basic")


REFUSED_POLICIES: dict[str, tuple[list[str], str]] = {
    "bad_json": (["set", "plan:basic", "{maxStreams: 1"], "JSON"),
    "json_not_an_object": (["set", "plan:basic", "[1]"], "policy"),
    "no_max_streams": (["set", "plan:basic", '{"overflow": "reject"}'], "maxStreams"),
    "max_streams_over_1000": (["set", "plan:basic", '{"maxStreams": 1001}'], "maxStreams"),
    "max_streams_a_string": (["set", "default", '{"maxStreams": "2"}'], "maxStreams"),
    "unknown_overflow": (["set", "default", '{"maxStreams": 2, "overflow": "drop"}'], "overflow"),
    "class_cap_negative": (["set", "default", '{"maxStreams": 2, "deviceClasses": {"tv": -1}}'], "tv"),
    "class_name_over_32": (
        ["set", "default", orjson.dumps({"maxStreams": 2, "deviceClasses": {"c" * 33: 1}}).decode()],
        "deviceClasses",
    ),
    "set_a_bad_key": (["set", "gold", '{"maxStreams": 1}'], "gold"),
    "set_an_empty_plan_key": (["set", "plan:", '{"maxStreams": 1}'], "plan:"),
    "delete_a_bad_key": (["delete", "users:u1"], "users:u1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_POLICIES))
async def test_a_bad_policy_or_key_is_refused_with_exit_code_2_and_writes_nothing(flow_factory, case: str):
    args, needle = REFUSED_POLICIES[case]
    async with flow_factory() as flow:
        await ensure_policies_topic(flow.settings)
        run = await cli(flow, "policy", *args)
        assert run.code == 2, (run.out, run.err)
        assert run.err.startswith("concurrency-processor:") and needle in run.err, run.err
        assert "Traceback" not in run.err
        assert run.out == ""
        assert await records_of(flow, flow.settings.policies_topic) == []


@pytest.mark.parametrize(
    "args", [["policy"], ["policy", "set", "plan:basic"], ["policy", "delete"], ["terminate", "u1"]]
)
async def test_a_command_missing_its_arguments_exits_2_with_its_usage(args: list[str]):
    run = await cli(None, *args)
    assert run.code == 2 and "usage:" in run.err, run.err


# -- terminate --------------------------------------------------------------------------


async def test_terminate_publishes_a_terminate_event_that_the_processor_decides(flow: Flow):
    # The command's event carries the wall clock as its record timestamp: start the lease "now" too.
    now = int(time.time() * 1000) - flow.t0
    await flow.send("start", "u1", "tv", at=now, event_id="start-tv")
    await flow.wait_events("start-tv")
    run = await cli(flow, "terminate", "u1", "tv", "--requester", "support-desk")
    assert run.code == 0, run.err
    event = run.json()["published"]
    assert {k: event[k] for k in ("type", "userId", "sessionId", "targetSessionId")} == {
        "type": "terminate",
        "userId": "u1",
        "sessionId": "support-desk",
        "targetSessionId": "tv",
    }
    verdicts = await flow.wait_events(event["eventId"])
    mine = [v for v in verdicts if v["eventId"] == event["eventId"]]
    assert [(v["decision"], v["reason"], v["sessionId"]) for v in mine] == [
        ("allow", "terminated", "support-desk"),
        ("revoke", "terminated", "tv"),
    ]


async def test_leases_and_terminate_find_the_user_where_event_partitioner_puts_it(flow_factory):
    """EVENT_PARTITIONER=crc32 (librdkafka's default): a user whose partition murmur2 would not
    give is listed from, and terminated through, its crc32 partition; nothing is dead-lettered."""
    user = next(
        u
        for u in (f"user-{i}" for i in range(100))
        if partition_for("crc32", u.encode(), 4) != partition_for("murmur2", u.encode(), 4)
    )
    async with flow_factory(event_partitioner="crc32") as flow:
        await flow.start_processor()
        now = int(time.time() * 1000) - flow.t0
        sent = await flow.send("start", user, "tv", at=now, event_id="start-tv")
        assert sent.partition == partition_for("crc32", user.encode(), 4)
        await flow.wait_events("start-tv")
        listing = await cli(flow, "leases", user)
        assert listing.code == 0, listing.err
        assert listing.json()["partition"] == sent.partition and list(listing.json()["leases"]) == ["tv"]
        run = await cli(flow, "terminate", user, "tv")
        assert run.code == 0, run.err
        assert run.json()["partition"] == sent.partition
        event_id = run.json()["published"]["eventId"]
        mine = [v for v in await flow.wait_events(event_id) if v["eventId"] == event_id]
        # Decided (a dead letter gets no verdict) on the user's own state: the lease is gone.
        assert [(v["decision"], v["reason"]) for v in mine] == [
            ("allow", "terminated"),
            ("revoke", "terminated"),
        ]


async def test_terminate_without_a_requester_names_an_operator_session(flow: Flow):
    run = await cli(flow, "terminate", "u1", "nothing-here")
    assert run.code == 0, run.err
    event = run.json()["published"]
    assert event["sessionId"].startswith("operator-") and event["eventId"]
    [v] = [v for v in await flow.wait_events(event["eventId"]) if v["eventId"] == event["eventId"]]
    assert (v["decision"], v["reason"], v["sessionId"]) == ("allow", "not_active", event["sessionId"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["u1", ""], "empty_id"),
        (["u1", "s" * 129], "id_too_long"),
        (["", "s1"], "empty_id"),
        (["u1", "s1", "--requester", "r" * 129], "id_too_long"),
    ],
    ids=["empty_target", "target_over_128", "empty_user", "requester_over_128"],
)
async def test_terminate_with_a_bad_id_is_refused_with_exit_code_2_and_publishes_nothing(
    flow_factory, args: list[str], needle: str
):
    async with flow_factory() as flow:
        run = await cli(flow, "terminate", *args)
        assert run.code == 2, (run.out, run.err)
        assert run.err.startswith("concurrency-processor:") and needle in run.err, run.err
        assert await records_of(flow, flow.settings.events_topic, flow.settings.topic_partitions) == []


# -- --help -----------------------------------------------------------------------------

HELP: dict[str, tuple[list[str], list[str]]] = {
    "top": ([], ["policy", "terminate", "leases", "run"]),
    "policy": (["policy"], ["set", "delete", "list", "POLICIES_TOPIC", "maxStreams"]),
    "policy_set": (["policy", "set"], ["KEY", "JSON", "plan:"]),
    "policy_delete": (["policy", "delete"], ["KEY", "tombstone"]),
    "policy_list": (["policy", "list"], ["policies"]),
    "terminate": (["terminate"], ["USER_ID", "SESSION_ID", "--requester", "EVENTS_TOPIC"]),
}


@pytest.mark.parametrize("case", sorted(HELP))
async def test_each_command_has_help(case: str):
    args, words = HELP[case]
    run = await cli(None, *args, "--help")
    assert run.code == 0, run.err
    assert run.out.startswith("usage: concurrency-processor"), run.out
    missing = [w for w in words if w not in run.out]
    assert not missing, run.out
