"""Limits by plan, by user and by device class, from the compacted `playback.policies` topic.

`PolicyTable` holds the last good value of every key and resolves an event's policy:
`user:<userId>`, else `plan:<plan>` (when the event names one), else `default`, else the
settings. `PolicyFollower` reads the topic to its end before the processor decides its
first event, then follows it live. A malformed record is logged with its key and offset,
counted, and ignored (the last good value of that key stays); a null value deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from processor.config import Settings
from processor.connections import KafkaAccess, kafka_access
from processor.metrics import Metrics
from processor.topics import COMPACTED, ensure_topics

log = logging.getLogger("processor")

Limit = Annotated[StrictInt, Field(ge=0, le=1000)]
ClassName = Annotated[str, Field(min_length=1, max_length=32)]
POLICY_PARTITIONS = 1  # a handful of small records; one partition keeps every change in order


async def ensure_policies_topic(settings: Settings, needs: tuple[str, ...] = ("Read",)) -> int:
    """Create the policies topic (compacted) when it is missing; return its partition count.

    `needs`: what the caller does with it (the processor reads, `policy set` writes)."""
    counts = await ensure_topics(
        kafka_access(settings),
        [settings.policies_topic],
        POLICY_PARTITIONS,
        settings.topic_replication_factor,
        configs={settings.policies_topic: COMPACTED},
        needs={settings.policies_topic: needs},
    )
    return counts[settings.policies_topic]


class PolicyValue(BaseModel):
    """Value of a `playback.policies` record (unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    maxStreams: Limit
    overflow: Literal["reject", "evict_oldest"] | None = None
    # At most 64 classes: the batch's policies go to the script with every call.
    deviceClasses: (
        Annotated[dict[Annotated[str, Field(min_length=1, max_length=32)], Limit], Field(max_length=64)]
        | None
    ) = None


@dataclass(frozen=True)
class Policy:
    """A resolved policy. `kind` is stored with each result so a redelivery names the same one."""

    kind: str  # 'u' (user), 'p' (plan) or 'd' (the default record, or the settings)
    max_streams: int
    evict: bool
    classes: dict[str, int] = field(default_factory=dict)

    def name(self, user_id: str, plan: str | None) -> str:
        return POLICY_NAMES[self.kind](user_id, plan)


POLICY_NAMES = {
    "u": lambda user, _plan: f"user:{user}",
    "p": lambda _user, plan: f"plan:{plan}",
    "d": lambda _user, _plan: "default",
}


class PolicyError(ValueError):
    pass


def parse_policy(key: str, value: bytes, default_overflow: str) -> Policy:
    """The policy of one record; PolicyError naming what is wrong."""
    kind = policy_kind(key)
    try:
        parsed = PolicyValue.model_validate(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        raise PolicyError(f"not JSON: {exc}") from None
    except ValidationError as exc:
        raise PolicyError(_first(exc)) from None
    overflow = parsed.overflow or default_overflow
    return Policy(kind, parsed.maxStreams, overflow == "evict_oldest", dict(parsed.deviceClasses or {}))


def policy_kind(key: str) -> str:
    if key == "default":
        return "d"
    if key.startswith("plan:") and len(key) > 5:
        return "p"
    if key.startswith("user:") and len(key) > 5:
        return "u"
    raise PolicyError(f"key {key!r} is none of default, plan:<plan>, user:<userId>")


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"


class PolicyTable:
    def __init__(self, max_streams: int, overflow: str, metrics: Metrics | None = None) -> None:
        self._overflow = overflow
        self._settings = Policy("d", max_streams, overflow == "evict_oldest")
        self._default: Policy | None = None
        self._plans: dict[str, Policy] = {}
        self._users: dict[str, Policy] = {}
        self._metrics = metrics

    def resolve(self, user_id: str, plan: str | None) -> Policy:
        policy = self._users.get(user_id)
        if policy is not None:
            return policy
        if plan is not None:
            policy = self._plans.get(plan)
            if policy is not None:
                return policy
        return self._default or self._settings

    def apply(self, key: bytes | None, value: bytes | None, where: str = "") -> bool:
        """Apply one record of the topic; False (logged, counted) when it is malformed."""
        try:
            if key is None:
                raise PolicyError("the record has no key")
            name = key.decode()
            kind = policy_kind(name)
            table = {"u": self._users, "p": self._plans}.get(kind)
            if value is None:  # a tombstone deletes the key's policy
                if table is None:
                    self._default = None
                else:
                    table.pop(name[5:], None)
                return True
            policy = parse_policy(name, value, self._overflow)
        except (PolicyError, UnicodeDecodeError) as exc:
            if self._metrics is not None:
                self._metrics.policy_errors.inc()
            log.error(
                "malformed policy record ignored; the last good value of its key stays",
                extra={"key": key.decode(errors="replace") if key else None, "at": where, "error": str(exc)},
            )
            return False
        if table is None:
            self._default = policy
        else:
            table[name[5:]] = policy
        return True

    def __len__(self) -> int:
        return len(self._users) + len(self._plans) + (self._default is not None)

    def listing(self) -> dict[str, dict]:
        out = {}
        if self._default is not None:
            out["default"] = _as_json(self._default)
        out |= {f"plan:{k}": _as_json(v) for k, v in sorted(self._plans.items())}
        out |= {f"user:{k}": _as_json(v) for k, v in sorted(self._users.items())}
        return out


def _as_json(p: Policy) -> dict:
    out: dict = {"maxStreams": p.max_streams, "overflow": "evict_oldest" if p.evict else "reject"}
    if p.classes:
        out["deviceClasses"] = dict(p.classes)
    return out


def whole_topic_reader(kafka: KafkaAccess | str) -> AIOKafkaConsumer:
    """A consumer without a group or commits, for reading topics whole by assignment (the
    policies here; the verdicts topic in the gateway's support console)."""
    # read_committed: a policy written in an aborted transaction was never set.
    return KafkaAccess.of(kafka).consumer(enable_auto_commit=False, isolation_level="read_committed")


class PolicyFollower:
    """Reads the whole policies topic into a PolicyTable, then follows it in the background."""

    def __init__(self, kafka: KafkaAccess | str, topic: str, table: PolicyTable, metrics: Metrics) -> None:
        self._kafka = KafkaAccess.of(kafka)
        self._topic = topic
        self.table = table
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self.changed_at: float | None = None  # time.monotonic() of the last record read while following

    async def start(self, partitions: int, timeout_s: float = 60.0, follow: bool = True) -> None:
        """Return once every record up to the topic's current end is applied; then follow it."""
        self._consumer = whole_topic_reader(self._kafka)
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in range(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        async with asyncio.timeout(timeout_s):
            while not await self._caught_up(ends):
                await self._poll()
        log.info("policies read", extra={"topic": self._topic, "policies": len(self.table)})
        if follow:
            self._task = asyncio.create_task(self._follow())

    async def _caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        assert self._consumer is not None
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def _poll(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=200)
        for tp, records in batch.items():
            for rec in records:
                self.table.apply(rec.key, rec.value, f"{tp.topic}/{tp.partition}@{rec.offset}")
        if batch:
            self._metrics.policies.set(len(self.table))
            if self._task is not None:  # following (not the first read): a repair may want to know
                self.changed_at = time.monotonic()

    async def _follow(self) -> None:
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the follower must outlive a broker hiccup
                log.warning("reading policies failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def read_policies(
    kafka: KafkaAccess | str, topic: str, partitions: int, max_streams: int, overflow: str
) -> PolicyTable:
    """The policies in force now: the topic read once to its end, as the processor reads it."""
    table = PolicyTable(max_streams, overflow)
    follower = PolicyFollower(kafka, topic, table, Metrics())
    try:
        await follower.start(partitions, follow=False)
    finally:
        await follower.stop()
    return table


async def follow_policies(settings: Settings, metrics: Metrics) -> PolicyFollower:
    """Create the topic if missing, read it to its end, and follow it from then on."""
    partitions = await ensure_policies_topic(settings)
    table = PolicyTable(settings.max_streams, settings.overflow_policy, metrics)
    follower = PolicyFollower(kafka_access(settings), settings.policies_topic, table, metrics)
    await follower.start(partitions)
    return follower
