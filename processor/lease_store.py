"""Lease state in Redis: the Lua scripts, their keys, and how a batch is passed to them.

Every key of one Kafka partition shares the hash tag `{<events topic>:<partition>}`, so a
partition's users, its applied offset and its fencing epoch live in one Redis Cluster slot
and one script call can decide the partition's whole batch atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import msgpack
import orjson
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from processor.policies import Policy
from processor.script_results import Decided, FencedError, Result, StateBehind, parse_result
from processor.wire import DecodedEvent

KEY_PREFIX = "sc"
# Lua numbers are doubles: exact integers up to 2**53. A record timestamp beyond this (year
# 144,000; a broker without a timestamp bound accepts up to 2**63-1) is taken as this, so
# expiries (timestamp + TTL) and stream time stay exact and never wrap negative.
MAX_EVENT_MS = 2**52


def _load_lua(name: str) -> str:
    return resources.files("processor").joinpath("lua", name).read_text(encoding="utf-8")


class PartitionCountChanged(RuntimeError):
    pass


@dataclass(frozen=True)
class Claim:
    epoch: int
    applied: int | None  # last offset applied in Redis, None when Redis knows nothing of it
    wiped: bool = False  # an earlier claim found the state gone and halted (mark_wiped)


@dataclass(frozen=True)
class Rules:
    max_streams: int
    lease_ttl_ms: int
    overflow_policy: str
    event_id_memory: int
    idle_user_ttl_ms: int
    # Index entries one script call may look at (0: no bound): a partition silent for longer than
    # the TTL would otherwise expire all its leases in one call, blocking that Redis meanwhile.
    max_expiries_per_call: int = 0


@dataclass
class DecideCall:
    """One partition's batch for the decide script.

    `events`: (offset, record timestamp ms, event) in log order. `committed`: the partition's
    committed offset (-1 if none); `last_offset`: the batch's last offset, dead letters
    included. `policies`: each event's policy (None: the settings' limit for all).
    `applied_before`: the highest offset already applied under this owner's epoch; an applied
    offset below it in Redis is refused as StateBehind (nothing written).
    """

    partition: int
    epoch: int
    committed: int
    last_offset: int
    events: list[tuple[int, int, DecodedEvent]]
    policies: list[Policy] | None = None
    applied_before: int = -1


@dataclass
class _BuiltCall:
    """A DecideCall's keys and arguments, built once, and its results so far."""

    call: DecideCall
    tag: str
    rows: list[tuple]
    user_keys: list[str]
    args: list
    results: list[Result] = field(default_factory=list)
    stuck: bool = False  # the last call stopped before deciding anything

    def command(self, due_keys: list[bytes]) -> tuple[list, list]:
        """(keys, args) of the next call: the records not decided yet."""
        done = len(self.results)
        self.args[8] = orjson.dumps(self.rows[done:] if done else self.rows)
        return [f"{self.tag}:p", *self.user_keys[done:], *due_keys, f"{self.tag}:x"], list(self.args)


def hash_tag(events_topic: str, partition: int) -> str:
    """The hash tag every key of one events partition carries: one partition, one cluster slot."""
    return f"{{{events_topic}:{partition}}}"


def partition_slot(events_topic: str, partition: int) -> int:
    """The Redis Cluster slot of an events partition's keys."""
    return key_slot(hash_tag(events_topic, partition).encode())


class LeaseStore:
    def __init__(self, redis: Redis, events_topic: str, rules: Rules) -> None:
        self.redis = redis
        self.events_topic = events_topic
        self.rules = rules
        self._decide = redis.register_script(_load_lua("decide_batch.lua"))
        self._claim = redis.register_script(_load_lua("claim_partition.lua"))
        self._accept = redis.register_script(_load_lua("accept_state_loss.lua"))
        self._settings_policy = Policy("d", rules.max_streams, rules.overflow_policy == "evict_oldest")
        # partition -> a lower bound of its expiry index's earliest score (-1: empty), from the
        # last script reply; unknown until this owner's first call (a claim forgets it).
        self._next_due: dict[int, int] = {}
        self._fixed_args = [
            rules.max_streams,
            rules.lease_ttl_ms,
            rules.overflow_policy,
        ]

    # -- keys ---------------------------------------------------------------------------
    def _tag(self, partition: int) -> str:
        return f"{KEY_PREFIX}:{hash_tag(self.events_topic, partition)}"

    def partition_key(self, partition: int) -> str:
        return self._tag(partition) + ":p"

    def user_key(self, partition: int, user_id: str) -> str:
        return f"{self._tag(partition)}:u:{user_id}"

    def expiry_index_key(self, partition: int) -> str:
        return self._tag(partition) + ":x"

    def partition_count_key(self) -> str:
        return f"{KEY_PREFIX}:topic:{self.events_topic}:partitions"

    # -- ownership ----------------------------------------------------------------------
    async def check_partition_count(self, partitions: int) -> None:
        """Refuse to run when the events topic's partition count changed since state was written."""
        key = self.partition_count_key()
        await self.redis.set(key, partitions, nx=True)
        stored = int(await self.redis.get(key))
        if stored != partitions:
            raise PartitionCountChanged(
                f"the events topic {self.events_topic!r} has {partitions} partitions but the lease state in "
                f"Redis was written for {stored}: users would be decided against the wrong state. "
                "See docs/operations.md, 'Changing the partition count'."
            )

    async def claim(self, partition: int) -> Claim:
        self._next_due.pop(partition, None)
        epoch, applied, wiped = await self._claim(keys=[self.partition_key(partition)])
        return Claim(int(epoch), None if applied is None else int(applied), wiped is not None)

    async def mark_wiped(self, partition: int) -> None:
        """Remember that the partition's state was found gone: the epoch its halted claim took
        must not read, at the next claim, as an owner's whose first writes were lost."""
        await self.redis.hset(self.partition_key(partition), "wiped", 1)

    async def accept_state_loss(self, partition: int, epoch: int, last_applied: int) -> None:
        reply = await self._accept(keys=[self.partition_key(partition)], args=[epoch, last_applied])
        if isinstance(reply, bytes):
            raise FencedError(partition, epoch, reply)

    # -- deciding -----------------------------------------------------------------------
    async def decide(
        self,
        partition: int,
        epoch: int,
        committed: int,
        last_offset: int,
        events: list[tuple[int, int, DecodedEvent]],
        policies: list[Policy] | None = None,
        applied_before: int = -1,
    ) -> Decided:
        """Decide one partition's batch (see DecideCall); raise FencedError or StateBehind."""
        call = DecideCall(partition, epoch, committed, last_offset, events, policies, applied_before)
        (outcome,) = await self.decide_many([call])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def decide_many(self, calls: list[DecideCall]) -> list[Decided | FencedError | StateBehind]:
        """Decide the batches of several partitions in one Redis round trip (a pipeline; on a
        cluster the client sends one per node, side by side). Each call is atomic on its own.

        Returns, per call, its Decided results or the refusal (FencedError: a newer owner;
        StateBehind: Redis lost writes) as a value, so one refused partition does not hold up
        the others. A transient Redis error raises, and the caller retries the calls.
        """
        built = [self._build(c) for c in calls]
        outcomes: list = [None] * len(calls)
        todo = list(range(len(calls)))
        while todo:
            # A call bounded by max_expiries_per_call stops before the record that has more due
            # (MORE): the rest of its batch goes again, from that record, until all is decided.
            due = await self._due_user_keys([built[i] for i in todo])
            replies = await self._run_decide(
                [built[i].command(keys) for i, keys in zip(todo, due, strict=True)]
            )
            again = []
            for i, reply in zip(todo, replies, strict=True):
                outcome = self._take_reply(built[i], reply)
                if outcome is None:
                    again.append(i)
                outcomes[i] = outcome
            todo = again
        return outcomes

    def _build(self, call: DecideCall) -> _BuiltCall:
        tag = self._tag(call.partition)
        policies = call.policies
        if policies is None:
            policies = [self._settings_policy] * len(call.events)
        # The batch's distinct policies go once; each event names its own by position (1-based).
        index: dict[int, int] = {}
        table = []
        numbers = []
        for policy, (_o, _t, ev) in zip(policies, call.events, strict=True):
            number = index.get(id(policy))
            if number is None:
                # A plan policy is stored as 'p:<plan>': a duplicate naming another plan must
                # still report the plan its stored result was decided under.
                kind = f"p:{ev.plan}" if policy.kind == "p" else policy.kind
                table.append((kind, policy.max_streams, 1 if policy.evict else 0, policy.classes))
                number = index[id(policy)] = len(table)
            numbers.append(number)
        rows = [
            (
                offset,
                ev.type,
                ev.session_id,
                timestamp if 0 < timestamp < MAX_EVENT_MS else (0 if timestamp <= 0 else MAX_EVENT_MS),
                ev.event_id or "",
                ev.device_id,
                ev.content_id,
                ev.target_session_id or "",
                ev.device_class or "",
                number,
            )
            for (offset, timestamp, ev), number in zip(call.events, numbers, strict=True)
        ]
        return _BuiltCall(
            call,
            tag,
            rows,
            [f"{tag}:u:{ev.user_id}" for _, _, ev in call.events],  # user_key(), inlined (hot path)
            [
                call.epoch,
                *self._fixed_args,
                call.committed,
                call.last_offset,
                self.rules.idle_user_ttl_ms,
                self.rules.event_id_memory,
                None,  # the rows not decided yet, filled per call
                orjson.dumps(table),
                call.applied_before,
                self.rules.max_expiries_per_call,
            ],
        )

    def _take_reply(self, b: _BuiltCall, reply: bytes) -> Decided | FencedError | StateBehind | None:
        """The call's outcome, or None when it stopped early (MORE) and must go again."""
        partition = b.call.partition
        if reply.startswith(b"FENCED"):
            self._next_due.pop(partition, None)
            return FencedError(partition, b.call.epoch, reply)
        if reply.startswith(b"BEHIND"):
            self._next_due.pop(partition, None)
            return StateBehind(partition, b.call.applied_before, reply)
        partial = reply.startswith(b"MORE:")
        leases, self._next_due[partition], *more = orjson.loads(reply[5:] if partial else reply)
        b.results += [parse_result(r) for r in more]
        if not partial:
            return Decided(b.results, leases)
        # Stopped before deciding anything: the entry it met may be due by a stream time above
        # this batch's records (a late lease's expiry); read the index's head whatever.
        b.stuck = not more
        return None

    async def _run_decide(self, commands: list[tuple[list, list]]) -> list:
        """The decide script's replies to (keys, args) commands: one command alone, several in
        one pipeline. A script Redis does not know (a restart, a failover) is loaded again."""
        if len(commands) == 1:
            keys, args = commands[0]
            return [await self._decide(keys=keys, args=args)]
        pipe = self.redis.pipeline(transaction=False)
        sha = self._decide.sha
        for keys, args in commands:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
        for n, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                keys, args = commands[n]
                replies[n] = await self._decide(keys=keys, args=args)  # loads the script
            elif isinstance(reply, Exception):
                raise reply
        return replies

    async def _due_user_keys(self, calls: list[_BuiltCall]) -> list[list[bytes]]:
        """Per call, the user keys of the index entries that may come due in it, in the script's
        order (score, member), so that it names every key it touches (DESIGN: keys in KEYS).
        Read (one pipeline for all) only when the last reply's nx says something may be due by
        the batch's latest record, or whatever the scores after a call that stopped at once."""
        bound = self.rules.max_expiries_per_call
        reads = []
        for n, b in enumerate(calls):
            rows = b.rows[len(b.results) :]
            if not rows:  # only dead letters: nothing can move stream time
                continue
            horizon: int | str = "+inf" if b.stuck else max(row[3] for row in rows)
            next_due = self._next_due.get(b.call.partition)
            if not b.stuck and next_due is not None and (next_due < 0 or next_due > horizon):
                continue
            reads.append((n, b.tag, horizon))
        due: list[list[bytes]] = [[] for _ in calls]
        if not reads:
            return due
        pipe = self.redis.pipeline(transaction=False)
        for _n, tag, horizon in reads:
            pipe.zrange(
                f"{tag}:x",  # expiry_index_key()
                "-inf",
                horizon,
                byscore=True,
                offset=0 if bound else None,
                num=bound + 64 if bound else None,
            )
        for (n, tag, _h), members in zip(reads, await pipe.execute(), strict=True):
            prefix = f"{tag}:u:".encode()
            due[n] = [prefix + m.split(b"\0\0", 1)[0].replace(b"\0\1", b"\0") for m in members]
        return due

    async def active_lease_counts(self, partition: int) -> dict[str, int]:
        """The partition's active leases per device class ('' = none), as the ledger counts them."""
        fields = await self.redis.hgetall(self.partition_key(partition))
        return {k[2:].decode(): int(v) for k, v in fields.items() if k.startswith(b"c:")}

    async def stream_time(self, partition: int) -> int | None:
        raw = await self.redis.hget(self.partition_key(partition), "st")
        return None if raw is None else int(raw)

    # -- reading, for operators and checkers --------------------------------------------
    async def user_state(self, partition: int, user_id: str) -> dict | None:
        raw = await self.redis.get(self.user_key(partition, user_id))
        return None if raw is None else msgpack.unpackb(raw, raw=False, strict_map_key=False)

    async def active_leases(self, partition: int, user_id: str, now: int | None = None) -> dict[str, dict]:
        """sessionId -> {expiresAt, deviceId, contentId} of leases active at `now` (default: user clock)."""
        state = await self.user_state(partition, user_id)
        return self._leases_at(state, self._user_clock(state) if now is None else now)

    async def leases_now(
        self, partition: int, user_id: str, wall_clock_ms: int
    ) -> tuple[int, dict[str, dict]]:
        """(time, leases active then) at the later of the user's event clock and `wall_clock_ms`.

        The user clock stops at the user's last event, so alone it keeps showing leases that
        lapsed since; the wall clock alone would show leases a user clock ahead of it expired.
        """
        state = await self.user_state(partition, user_id)
        at = max(self._user_clock(state), wall_clock_ms)
        return at, self._leases_at(state, at)

    @staticmethod
    def _user_clock(state: dict | None) -> int:
        return 0 if state is None else state["c"]

    @staticmethod
    def _leases_at(state: dict | None, at: int) -> dict[str, dict]:
        leases = (state or {}).get("l") or {}  # cmsgpack packs an empty table as a list
        return {
            sid: {
                "expiresAt": lease["e"],
                "deviceId": lease.get("d"),
                "deviceClass": lease.get("k"),
                "contentId": lease.get("t"),
                "startedAt": lease.get("s"),
            }
            for sid, lease in leases.items()
            if lease["e"] > at
        }

    async def applied_offset(self, partition: int) -> int | None:
        raw = await self.redis.hget(self.partition_key(partition), "applied")
        return None if raw is None else int(raw)
