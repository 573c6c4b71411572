"""Spread the events partitions evenly over a Redis Cluster's masters.

Every key of a partition carries the hash tag ``{<events topic>:<partition>}``, so a whole
partition lives in one slot. ``redis-cli --cluster create`` splits the 16,384 slots into equal
ranges, which says nothing about where a dozen particular slots land: the 12 tags of
``playback.events`` fall 2 / 5 / 5 on three masters, so one shard carries 42 % of the load.
``balance_partitions`` moves just those slots (with their keys, if any) until every master
holds ⌊n/m⌋ or ⌈n/m⌉ partitions, with Redis Cluster's own slot-migration commands (the steps
``redis-cli --cluster reshard`` takes, one chosen slot at a time). A move is safe while a
processor runs: every decide call names all the keys it touches, so Redis redirects it (ASK
during a move, MOVED after) instead of running it on half-moved state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from processor.lease_store import partition_slot

log = logging.getLogger("compose.launcher")


def partition_slots(events_topic: str, partitions: int) -> dict[int, int]:
    """partition -> the cluster slot its keys hash to."""
    return {p: partition_slot(events_topic, p) for p in range(partitions)}


@dataclass
class Node:
    """One line of CLUSTER NODES."""

    node_id: str
    host: str
    port: int
    slots: set[int]
    flags: tuple[str, ...] = ("master",)
    master_id: str = "-"  # a replica's master

    @property
    def live(self) -> bool:
        return "fail" not in self.flags and "noaddr" not in self.flags


def parse_nodes(text: str) -> list[Node]:
    """CLUSTER NODES, every node (failed ones too), by port."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        host, port = fields[1].split("@")[0].rsplit(":", 1)
        slots: set[int] = set()
        for part in fields[8:]:
            if part.startswith("["):  # a slot being migrated: [slot->-id] / [slot-<-id]
                continue
            lo, _, hi = part.partition("-")
            slots.update(range(int(lo), int(hi or lo) + 1))
        flags = tuple(fields[2].split(","))
        out.append(Node(fields[0], host or "127.0.0.1", int(port), slots, flags, fields[3]))
    return sorted(out, key=lambda n: n.port)


def masters_of(client: redis.Redis) -> list[Node]:
    """The cluster's live masters and their slots."""
    raw = client.execute_command("CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return [n for n in parse_nodes(text) if n.live and "master" in n.flags]


def spread(masters: list[Node], slots: dict[int, int]) -> dict[int, list[int]]:
    """master port -> the partitions it holds."""
    owner = {s: m.port for m in masters for s in m.slots}
    out: dict[int, list[int]] = {m.port: [] for m in masters}
    for partition, slot in sorted(slots.items()):
        if slot in owner:
            out[owner[slot]].append(partition)
    return out


def plan_moves(masters: list[Node], slots: dict[int, int]) -> list[tuple[int, Node, Node]]:
    """The fewest (slot, from, to) moves after which every master holds ⌊n/m⌋ or ⌈n/m⌉ partitions.

    Partitions that share a slot move together (they cannot be parted)."""
    by_port = {m.port: m for m in masters}
    held = {port: sorted({slots[p] for p in parts}) for port, parts in spread(masters, slots).items()}
    weight = {s: sum(1 for v in slots.values() if v == s) for s in set(slots.values())}
    load = {port: sum(weight[s] for s in ss) for port, ss in held.items()}
    moves = []
    while True:
        src = max(load, key=lambda port: (load[port], -port))
        dst = min(load, key=lambda port: (load[port], port))
        # Only moves that narrow the gap between the two (each one does: this ends).
        movable = [s for s in held[src] if load[src] - weight[s] > load[dst]]
        if not movable:
            return moves
        slot = min(movable, key=lambda s: (weight[s], s))
        held[src].remove(slot)
        held[dst].append(slot)
        load[src] -= weight[slot]
        load[dst] += weight[slot]
        moves.append((slot, by_port[src], by_port[dst]))


def move_slot(slot: int, src: Node, dst: Node, everyone: list[Node], timeout_ms: int = 5000) -> int:
    """Move one slot and its keys from src to dst; returns the number of keys moved."""
    with _client(src) as s, _client(dst) as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        moved = 0
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", dst.host, dst.port, "", 0, timeout_ms, "KEYS", *keys)
            moved += len(keys)
        # The new owner first, so the slot is never left without one (the order redis-cli uses).
        d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
    for other in everyone:
        if other.node_id not in (src.node_id, dst.node_id):
            with _client(other) as o:
                o.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
    return moved


def balance_partitions(host: str, port: int, events_topic: str, partitions: int) -> dict[int, list[int]]:
    """Move partition slots until the masters hold equal shares; returns master port -> partitions."""
    slots = partition_slots(events_topic, partitions)
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        masters = masters_of(client)
    before = spread(masters, slots)
    for slot, src, dst in plan_moves(masters, slots):
        keys = move_slot(slot, src, dst, masters)
        log.info("slot %d (partition tag of %s) moved %d -> %d with %d keys", slot, events_topic, src.port,
                 dst.port, keys)  # fmt: skip
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        after = spread(masters_of(client), slots)
    if after != before:
        log.info("partitions per master: %s -> %s", _counts(before), _counts(after))
    return after


def _counts(spread_: dict[int, list[int]]) -> str:
    return " / ".join(str(len(parts)) for _port, parts in sorted(spread_.items()))


def _client(m: Node) -> redis.Redis:
    return redis.Redis(host=m.host, port=m.port, socket_timeout=10, socket_connect_timeout=5)
