"""decide_batch.lua on real Redis: reused eventIds, a lowered eventId memory, long replays."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgpack
import pytest
from redis.asyncio import Redis

from processor import rules as codes
from processor.lease_store import LeaseStore, Rules
from processor.reference_model import ReferenceModel
from processor.script_results import Result
from processor.wire import DecodedEvent

T0 = 1_763_800_000_000
TTL = 90_000
CONFLICT = Result(codes.EVENT_ID_CONFLICT)
UNKNOWN = Result(0)


def rules(memory: int = 16, policy: str = "reject") -> Rules:
    return Rules(
        max_streams=3,
        lease_ttl_ms=TTL,
        overflow_policy=policy,
        event_id_memory=memory,
        idle_user_ttl_ms=3_600_000,
    )


def ev(
    kind: str, session: str, event_id: str | None, user: str = "u", target: str | None = None
) -> DecodedEvent:
    return DecodedEvent(kind, user, session, event_id, "tv", None, target)


class Partition:
    """Partition 0 of a fresh topic: batches at the next offsets, replays of earlier ones."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.topic = f"hard-{uuid.uuid4().hex}"
        self.epoch: int | None = None
        self.next_offset = 0
        self.sent: dict[int, tuple[int, int, DecodedEvent]] = {}

    def store(self, memory: int = 16) -> LeaseStore:
        return LeaseStore(self.redis, self.topic, rules(memory))

    async def decide(self, events: list[DecodedEvent], memory: int = 16, committed: int = -1) -> list[Result]:
        store = self.store(memory)
        if self.epoch is None:
            self.epoch = (await store.claim(0)).epoch
        batch = []
        for e in events:
            offset = self.next_offset
            self.next_offset += 1
            self.sent[offset] = (offset, T0 + 1000 * offset, e)
            batch.append(self.sent[offset])
        return await store.decide(0, self.epoch, committed, self.next_offset - 1, batch)

    async def replay(self, offsets: list[int], memory: int = 16, committed: int = -1) -> list[Result]:
        """Redeliver offsets decided earlier (the same records)."""
        assert self.epoch is not None
        batch = [self.sent[o] for o in offsets]
        return await self.store(memory).decide(0, self.epoch, committed, self.next_offset - 1, batch)

    async def leases(self, user: str = "u") -> set[str]:
        return set(await self.store().active_leases(0, user))

    async def state(self, user: str = "u") -> dict:
        state = await self.store().user_state(0, user)
        assert state is not None
        return state


@pytest.fixture
async def part(redis_url: str) -> AsyncIterator[Partition]:
    redis = Redis.from_url(redis_url)
    try:
        yield Partition(redis)
    finally:
        await redis.aclose()


# --- a reused eventId for another event is a conflict --------------------------------------


async def test_a_start_of_a_new_session_reusing_an_event_id_is_a_conflict_and_creates_no_lease(part) -> None:
    [first] = await part.decide([ev("start", "s1", "e1")])
    assert first.code == codes.STARTED
    clock = (await part.state())["c"]
    assert await part.decide([ev("start", "s2", "e1")]) == [CONFLICT]
    assert await part.leases() == {"s1"}
    assert (await part.state())["c"] == clock  # a conflict does not move the user's clock
    # Its redelivery is the conflict again; the eventId still names the first event.
    assert await part.replay([1]) == [CONFLICT]
    assert await part.decide([ev("start", "s1", "e1")]) == [first]


async def test_a_stop_reusing_a_starts_event_id_is_a_conflict_and_the_lease_stays(part) -> None:
    [first] = await part.decide([ev("start", "s1", "e1")])
    assert await part.decide([ev("stop", "s1", "e1")]) == [CONFLICT]
    assert await part.leases() == {"s1"}
    assert await part.decide([ev("heartbeat", "s1", "e1")]) == [CONFLICT]
    assert await part.decide([ev("start", "s1", "e1")]) == [first]  # the same event: a duplicate


async def test_a_conflict_within_one_batch_and_the_eventids_of_other_users_are_apart(part) -> None:
    got = await part.decide(
        [ev("start", "s1", "e1"), ev("start", "s2", "e1"), ev("start", "s2", "e1", user="v")]
    )
    assert [r.code for r in got] == [codes.STARTED, codes.EVENT_ID_CONFLICT, codes.STARTED]


async def test_a_terminate_names_its_target_too(part) -> None:
    await part.decide([ev("start", "s1", None), ev("start", "s2", None)])
    [first] = await part.decide([ev("terminate", "phone", "e1", target="s1")])
    assert first.code == codes.TERMINATED
    # Another target under e1 is another event; the same target again is a duplicate.
    assert await part.decide([ev("terminate", "phone", "e1", target="s2")]) == [CONFLICT]
    assert await part.decide([ev("terminate", "phone", "e1", target="s1")]) == [first]
    assert await part.decide([ev("stop", "phone", "e1")]) == [CONFLICT]
    assert await part.leases() == {"s2"}


async def test_a_replayed_conflict_whose_result_was_trimmed_gets_no_result_not_the_first_events(part) -> None:
    started, conflict = await part.decide([ev("start", "s1", "e1"), ev("stop", "s1", "e1")])
    assert conflict == CONFLICT
    await part.decide([ev("heartbeat", "s1", None)], committed=2)  # results of offsets 0, 1 trimmed
    assert "0|" not in str((await part.state())["r"])
    # A rewound group: offset 1 must not get the start's result from the eventId memory.
    assert await part.replay([0, 1], committed=2) == [started, UNKNOWN]


async def test_a_replayed_offset_whose_event_id_now_names_a_later_event_gets_no_result(part) -> None:
    await part.decide([ev("start", "s1", "e1"), ev("start", "s2", "e2")], memory=1)  # e1 forgotten
    [stopped] = await part.decide([ev("stop", "s1", "e1")], memory=1)  # a new event under e1
    assert stopped.code == codes.STOPPED
    await part.decide([ev("heartbeat", "s2", None)], memory=1, committed=3)
    # e1 names another event now: offset 0 gets no result, not the stop's.
    assert await part.replay([0, 2], memory=1, committed=3) == [UNKNOWN, stopped]


# --- the eventId memory --------------------------------------------------------------------


async def test_a_lowered_event_id_memory_forgets_the_oldest_ids_and_shrinks_the_state(part) -> None:
    first = await part.decide(
        [ev("start", "s1", "e0")] + [ev("heartbeat", "s1", f"e{i}") for i in range(1, 10)]
    )
    assert len((await part.state())["i"]) == 10
    # Restarted with a memory of 4: e0 is forgotten, a re-send is decided anew.
    [again] = await part.decide([ev("start", "s1", "e0")], memory=4)
    assert again.code == codes.ALREADY_ACTIVE
    assert len((await part.state())["i"]) == 4
    # The 4 most recent are still remembered.
    assert await part.decide([ev("heartbeat", "s1", "e9")], memory=4) == [first[9]]


async def test_a_long_memory_uses_the_index_and_matches_the_model(part) -> None:
    model = ReferenceModel(3, TTL, "reject", event_id_memory=100)
    batches = [
        (100, [ev("start", f"s{i % 4}", f"e{i}") for i in range(60)]),
        (
            100,
            [
                ev("start", "s0", "e0"),
                ev("stop", "s0", "e1"),
                ev("heartbeat", "s1", "e59"),
                ev("stop", "s1", "x"),
            ],
        ),
        # e0..e13 forgotten: a new event under e0; e20 was a start of s0
        (50, [ev("stop", "s0", "e0"), ev("start", "s0", "e20"), ev("stop", "s2", "e20")]),
    ]
    for memory, events in batches:
        model.event_id_memory = memory
        got = await part.decide(events, memory=memory)
        offsets = range(part.next_offset - len(events), part.next_offset)
        want = [
            model.apply(e.user_id, e.session_id, e.type, T0 + 1000 * o, e.event_id)
            for o, e in zip(offsets, events, strict=True)
        ]
        assert [r.code for r in got] == [d.code for d in want]
    assert [r.code for r in got] == [codes.STOPPED, codes.ALREADY_ACTIVE, codes.EVENT_ID_CONFLICT]
    assert len((await part.state())["i"]) == 50


async def test_fingerprints_of_forgotten_event_ids_are_dropped_and_the_rest_tell_events_apart(part) -> None:
    model = ReferenceModel(3, TTL, "evict_oldest", event_id_memory=4)
    store = LeaseStore(part.redis, part.topic, rules(4, "evict_oldest"))
    epoch = (await store.claim(0)).epoch
    offset = 0
    for b in range(6):  # every event a start of a new session: a fingerprint each
        events = [ev("start", f"s{b}-{i}", f"e{b}-{i}") for i in range(5)]
        events += [ev("start", f"s{b}-4", f"e{b}-4"), ev("stop", f"s{b}-3", f"e{b}-3")]  # duplicate, conflict
        batch = [(offset + n, T0 + 1000 * (offset + n), e) for n, e in enumerate(events)]
        offset += len(events)
        got = await store.decide(0, epoch, -1, offset - 1, batch)
        want = [model.apply(e.user_id, e.session_id, e.type, ts, e.event_id) for _, ts, e in batch]
        assert [r.code for r in got] == [d.code for d in want]
        assert got[5] == got[4] and got[6] == CONFLICT
        state = await part.state()
        assert len(state["i"]) == 4 and len(state["x"]) == 8 and len(state["f"]) <= 4 + 8
        assert sorted(state["l"]) == sorted(model.active_leases("u"))


async def test_event_ids_stored_before_fingerprints_answer_duplicates_as_before(part) -> None:
    await part.decide([ev("heartbeat", "s1", None)])  # creates the partition and the user
    old_result = "[1,1,3,1763800090000,1763800000000]"
    state = await part.state()
    state["i"] = [f"2:e0{old_result}", f"2:e1{old_result}"]
    await part.redis.set(part.store().user_key(0, "u"), msgpack.packb(state))
    assert await part.decide([ev("start", "s1", "e1")]) == [Result(1, 1, 3, T0 + TTL, T0)]
    await part.decide([ev("heartbeat", "s1", None)], committed=3)
    assert await part.replay([1], committed=3) == [UNKNOWN]  # the event is not named: not certain
    # Cut to a lowered memory without a new eventId (the entries' keys are rebuilt).
    await part.decide([ev("heartbeat", "s1", None)], memory=1)
    assert (await part.state())["i"] == [f"2:e1{old_result}"]
    assert await part.decide([ev("stop", "s1", "e1")], memory=1) == [Result(1, 1, 3, T0 + TTL, T0)]


# --- long batches --------------------------------------------------------------------------


async def test_a_4000_event_batch_of_one_user_is_decided_and_replayed_like_the_model(part) -> None:
    kinds = ["start", "heartbeat", "heartbeat", "stop"]

    def nth(i: int) -> DecodedEvent:
        if i % 50 == 49:  # another event under the previous one's eventId (if it had one)
            return ev("stop", "other", f"e{(i - 1) % 3000}")
        # eventIds come back after 3,000 events, long forgotten: new events then
        return ev(kinds[i % 4], f"s{(i // 4) % 5}", None if i % 7 == 0 else f"e{i % 3000}")

    events = [nth(i) for i in range(4000)]
    model = ReferenceModel(3, TTL, "reject", event_id_memory=16)
    want = [
        model.apply(e.user_id, e.session_id, e.type, T0 + 1000 * o, e.event_id) for o, e in enumerate(events)
    ]
    got = await part.decide(events)
    assert [r.code for r in got] == [d.code for d in want]
    assert [r.expires_at for r in got] == [d.lease_expires_at or 0 for d in want]
    assert sum(r.code == codes.EVENT_ID_CONFLICT for r in got) > 50
    assert await part.replay(list(range(4000))) == got
    assert len((await part.state())["r"]) == 4000
