"""The slot-move plan that evens the events partitions out over a Redis Cluster's masters."""

from __future__ import annotations

from collections import Counter

from compose.cluster_slots import Node, partition_slots, plan_moves, spread

SLOTS_12 = partition_slots("playback.events", 12)


def default_masters() -> list[Node]:
    """What `redis-cli --cluster create` gives three masters: equal slot ranges."""
    return [
        Node("a", "127.0.0.1", 7000, set(range(0, 5461))),
        Node("b", "127.0.0.1", 7001, set(range(5461, 10923))),
        Node("c", "127.0.0.1", 7002, set(range(10923, 16384))),
    ]


def apply(masters: list[Node], moves) -> list[Node]:
    for slot, src, dst in moves:
        assert slot in src.slots
        src.slots.remove(slot)
        dst.slots.add(slot)
    return masters


def test_the_default_split_of_playback_events_is_uneven_and_two_moves_even_it():
    masters = default_masters()
    assert sorted(len(p) for p in spread(masters, SLOTS_12).values()) == [2, 5, 5]
    moves = plan_moves(masters, SLOTS_12)
    assert len(moves) == 2
    after = spread(apply(masters, moves), SLOTS_12)
    assert sorted(len(p) for p in after.values()) == [4, 4, 4]
    assert sorted(p for parts in after.values() for p in parts) == list(range(12))


def test_a_balanced_cluster_needs_no_move():
    masters = default_masters()
    apply(masters, plan_moves(masters, SLOTS_12))
    assert plan_moves(masters, SLOTS_12) == []


def test_every_partition_on_one_master_ends_floor_or_ceil_everywhere():
    for n in (1, 5, 7, 12, 13, 40):
        slots = partition_slots("t", n)
        masters = default_masters()
        everything = set(range(16384))
        masters[0].slots, masters[1].slots, masters[2].slots = everything, set(), set()
        moves = plan_moves(masters, slots)
        counts = sorted(len(p) for p in spread(apply(masters, moves), slots).values())
        assert counts == sorted([n // 3 + (1 if i < n % 3 else 0) for i in range(3)]), (n, counts)
        assert len(moves) == n - counts[-1]  # nothing moved twice or needlessly


def test_partitions_sharing_a_slot_move_together_and_the_plan_still_ends():
    slots = {0: 100, 1: 100, 2: 100, 3: 200, 4: 300}  # three partitions in one slot
    masters = default_masters()
    moves = plan_moves(masters, slots)
    after = spread(apply(masters, moves), slots)
    holder = next(port for port, parts in after.items() if 0 in parts)
    assert {0, 1, 2} <= set(after[holder])
    assert Counter(len(p) for p in after.values()) == Counter([3, 1, 1])
