"""MAX_EXPIRIES_PER_CALL: a partition silent past the lease TTL expires all its leases at its next
record; bounded, that work is spread over several script calls (Redis serves others between
them) and the verdicts are exactly those of one unbounded call, also when the processor dies
between two of the calls. And the script names every key it touches, the expired users' too."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

import pytest

from processor.lease_store import LeaseStore, Rules
from processor.redis_client import connect
from processor.wire import DecodedEvent
from tests.harness import wait_until

TTL = 90_000
T0 = 1_700_000_000_000
USERS = 40


def rules(bound: int) -> Rules:
    return Rules(3, TTL, "reject", 16, 3_600_000, max_expiries_per_call=bound)


def silent_then_late() -> list[tuple[int, int, DecodedEvent]]:
    """USERS starts a millisecond apart, then one record far past all their expiries."""
    events = [
        (n, T0 + n, DecodedEvent("start", f"u{n:02d}", "s1", f"e{n}", None, None, None, None, "tv"))
        for n in range(USERS)
    ]
    late = DecodedEvent("start", "late", "s1", "late", None, None, None, None, None)
    return [*events, (USERS, T0 + 10 * TTL, late)]


class Crash(RuntimeError):
    pass


def calls_counted(store: LeaseStore, crash_after: int | None = None) -> list[bytes]:
    """Record the replies of the store's script calls; raise Crash after `crash_after` of them."""
    replies: list[bytes] = []
    call = store._decide

    async def counted(**kwargs):
        reply = await call(**kwargs)
        replies.append(reply[:5])
        if crash_after is not None and len(replies) >= crash_after:
            raise Crash("the processor died between two calls of one batch")
        return reply

    store._decide = counted
    return replies


async def decide_all(store: LeaseStore, events) -> list:
    epoch = (await store.claim(0)).epoch
    starts, late = events[:-1], events[-1:]
    await store.decide(0, epoch, 0, USERS - 1, starts)
    return await store.decide(0, epoch, USERS, USERS, late)


async def test_bounded_calls_give_the_verdicts_of_one_unbounded_call_even_after_a_crash_between_them(
    redis_client,
):
    events = silent_then_late()
    unbounded = LeaseStore(redis_client, f"bx-{uuid.uuid4().hex}", rules(0))
    [want] = await decide_all(unbounded, events)
    assert len(want.expired) == USERS
    assert [e.user_id for e in want.expired] == [f"u{n:02d}" for n in range(USERS)]  # expiry order

    bounded = LeaseStore(redis_client, f"bx-{uuid.uuid4().hex}", rules(7))
    replies = calls_counted(bounded)
    [got] = await decide_all(bounded, events)
    assert got == want
    assert replies.count(b"MORE:") == 5 and len(replies) == 1 + 6  # the starts, then 40 / 7 -> 6 calls

    # Dies after its second call of the late record's batch: the batch is decided again from the start.
    crashing = LeaseStore(redis_client, f"bx-{uuid.uuid4().hex}", rules(7))
    epoch = (await crashing.claim(0)).epoch
    await crashing.decide(0, epoch, 0, USERS - 1, events[:-1])
    calls_counted(crashing, crash_after=2)
    with pytest.raises(Crash):
        await crashing.decide(0, epoch, USERS, USERS, events[-1:])
    again = LeaseStore(redis_client, crashing.events_topic, rules(7))
    [after_crash] = await again.decide(0, epoch, USERS, USERS, events[-1:])
    assert after_crash == want  # the 14 expiries done before the crash lead, then the rest
    [replayed] = await again.decide(0, epoch, USERS, USERS, events[-1:])
    assert replayed == want  # a redelivery: the stored result
    assert await again.active_lease_counts(0) == await unbounded.active_lease_counts(0)


async def test_the_processor_publishes_every_expiry_of_a_bounded_batch_in_order(flow_factory):
    async with flow_factory(partitions=1) as flow:
        await flow.start_processor(max_expiries_per_call=5)
        for n in range(20):
            await flow.send("start", f"u{n:02d}", "s1", at=n, event_id=f"e{n}")
        await flow.wait_events(*(f"e{n}" for n in range(20)))
        await flow.send("start", "late", "s1", at=10 * TTL, event_id="late")
        verdicts = await flow.wait_events("late")
        tail = verdicts[20:]
        assert [v["eventId"] for v in tail] == [None] * 20 + ["late"]
        assert [v["userId"] for v in tail[:20]] == [f"u{n:02d}" for n in range(20)]
        assert all(v["type"] == "expire" and v["reason"] == "expired" for v in tail[:20])
        p = flow._running[0].processor
        active = {"partition": "0"}
        await wait_until(
            lambda: p.metrics.registry.get_sample_value("concurrency_active_leases", active) == 1,
            what="one lease left (late's)",
        )


TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')


async def monitored(redis_url: str, lines: list[bytes], ready: asyncio.Event) -> None:
    """Every command Redis runs, scripts' own included (MONITOR), as raw lines."""
    client = connect(redis_url)
    try:
        async with client.monitor() as m:
            ready.set()
            while True:
                lines.append(await m.connection.read_response())
    finally:
        await client.aclose()


def undeclared_user_keys(lines: list[bytes], topic: str) -> tuple[int, list[bytes]]:
    """(user keys read or written by the decide script, those of them not among the KEYS of
    the EVALSHA that ran it)."""
    declared: set[bytes] = set()
    touched, undeclared = 0, []
    for line in lines:
        tokens = TOKEN.findall(line)
        if not tokens:
            continue
        command = tokens[0].upper()
        if b"[0 lua]" not in line and command == b"EVALSHA":
            declared = set(tokens[3 : 3 + int(tokens[2])])
        elif b"[0 lua]" in line and command in (b"GET", b"SET") and b":u:" in tokens[1]:
            if topic.encode() in tokens[1]:
                touched += 1
                if tokens[1] not in declared:
                    undeclared.append(tokens[1])
    return touched, undeclared


@pytest.mark.parametrize("bound", [0, 7])
async def test_the_script_names_the_keys_of_the_users_it_expires(redis_url, bound):
    lines: list[bytes] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(monitored(redis_url, lines, ready))
    await asyncio.wait_for(ready.wait(), 10)
    client = connect(redis_url)
    try:
        store = LeaseStore(client, f"bk-{uuid.uuid4().hex}", rules(bound))
        epoch = (await store.claim(0)).epoch
        events = silent_then_late()
        await store.decide(0, epoch, 0, USERS - 1, events[:-1])
        # Others than the expired users: none of the 40 users whose leases lapse is in this batch.
        later = [
            (
                USERS + n,
                T0 + 10 * TTL + n,
                DecodedEvent("start", f"new{n}", "s1", None, None, None, None, None, None),
            )
            for n in range(5)
        ]
        decided = await store.decide(0, epoch, USERS, USERS + 4, later)
        assert sum(len(r.expired) for r in decided) == USERS
        await asyncio.sleep(0.5)  # MONITOR lines trail the replies a little
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.aclose()
    touched, undeclared = undeclared_user_keys(lines, store.events_topic)
    assert touched >= 2 * USERS  # each expired user's state read and written
    assert undeclared == []
