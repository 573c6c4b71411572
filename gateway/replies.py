"""Reply routing: each gateway instance reads only the replies to the events it sent.

Every instance joins one consumer group on the replies topic. On each assignment it reads its
partitions from their end (it only waits for replies to what it sends from then on) and names
the first of them in the `reply.partition` header of its events; the processor copies each
event's verdicts there. A reply is matched to its waiter by eventId and by being the event's
own verdict: a `revoke` (it carries the triggering eventId too) answers nobody, and so does a
verdict whose userId, type or sessionId is not the waiting call's (anyone who can write to the
replies topic could otherwise answer a victim's call under its predictable eventId). The wait
map is bounded, in all and per user (one user cannot hold every place), and every
waiter ends by its reply or its timeout, so nothing is kept for replies that never come; a
request in flight across a rebalance times out and its client retries with the same
Idempotency-Key (the same event, so the same verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError

from processor.connections import KafkaAccess
from processor.kafka_checks import KafkaAccessError, acl_command

log = logging.getLogger("gateway")


class WaitMapFull(RuntimeError):
    pass


class UserWaitsFull(WaitMapFull):
    """This user already has its share of the places (GATEWAY_MAX_IN_FLIGHT_PER_USER)."""


class Reply:
    __slots__ = ("value", "verdict")

    def __init__(self, value: bytes, verdict: dict) -> None:
        self.value = value  # the verdict's bytes, as on the verdicts topic
        self.verdict = verdict


class Waiter:
    """One call waiting: its future and what its verdict must say (userId, type, sessionId)."""

    __slots__ = ("future", "kind", "session_id", "user_id")

    def __init__(self, future: asyncio.Future[Reply], user_id: str, kind: str, session_id: str) -> None:
        self.future = future
        self.user_id = user_id
        self.kind = kind
        self.session_id = session_id

    def answered_by(self, verdict: dict) -> bool:
        return (
            verdict.get("userId") == self.user_id
            and verdict.get("type") == self.kind
            and verdict.get("sessionId") == self.session_id
        )


class WaitMap:
    """eventId -> the calls waiting for its verdict; at most `capacity` in all, `per_user` per user."""

    def __init__(self, capacity: int, per_user: int | None = None) -> None:
        self.capacity = capacity
        self.per_user = per_user if per_user is not None else capacity
        self._waiters: dict[str, list[Waiter]] = {}
        self._users: dict[str, int] = {}  # userId -> its waiters (absent at 0)
        self.size = 0

    def add(self, event_id: str, user_id: str, kind: str, session_id: str) -> Waiter:
        if self.size >= self.capacity:
            raise WaitMapFull(f"{self.size} requests are waiting for verdicts (GATEWAY_MAX_IN_FLIGHT)")
        held = self._users.get(user_id, 0)
        if held >= self.per_user:
            raise UserWaitsFull(
                f"this user has {held} requests waiting for verdicts (GATEWAY_MAX_IN_FLIGHT_PER_USER)"
            )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        waiter = Waiter(future, user_id, kind, session_id)
        self._waiters.setdefault(event_id, []).append(waiter)
        self._users[user_id] = held + 1
        self.size += 1
        return waiter

    def _forget(self, waiter: Waiter) -> None:
        self.size -= 1
        left = self._users[waiter.user_id] - 1
        if left:
            self._users[waiter.user_id] = left
        else:
            del self._users[waiter.user_id]

    def discard(self, event_id: str, waiter: Waiter) -> None:
        """Forget one waiter (answered, timed out or cancelled); a no-op when already gone."""
        waiters = self._waiters.get(event_id)
        if waiters is None or waiter not in waiters:
            return
        waiters.remove(waiter)
        self._forget(waiter)
        if not waiters:
            del self._waiters[event_id]

    def waiting(self, user_id: str) -> int:
        return self._users.get(user_id, 0)

    def resolve(self, value: bytes) -> str:
        """Hand a reply record to the waiters of its event; say what became of it (a metric label)."""
        try:
            verdict = orjson.loads(value)
            event_id = verdict["eventId"]
            if verdict["decision"] == "revoke":
                return "revoke"
        except (orjson.JSONDecodeError, TypeError, KeyError):
            log.warning("a reply that is not a verdict was ignored", extra={"value": value[:200]})
            return "not_a_verdict"
        waiters = self._waiters.get(event_id) if isinstance(event_id, str) else None
        if not waiters:
            return "no_waiter"  # its waiter timed out, or it was sent before this assignment
        answered = [w for w in waiters if w.answered_by(verdict)]
        if not answered:
            log.warning("a reply is not its waiting call's verdict", extra={"value": value[:200]})
            return "mismatch"
        reply = Reply(value, verdict)
        for waiter in answered:
            waiters.remove(waiter)
            self._forget(waiter)
            if not waiter.future.done():
                waiter.future.set_result(reply)
        if not waiters:
            del self._waiters[event_id]
        return "matched"


class _Listener(ConsumerRebalanceListener):
    def __init__(self, router: ReplyRouter) -> None:
        self._router = router

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._router.partition = None  # until the new assignment is read from its end

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._router.assigned(assigned)


class ReplyRouter:
    def __init__(
        self, kafka: KafkaAccess | str, topic: str, group: str, wait_map: WaitMap, on_reply=None
    ) -> None:
        self.topic = topic
        self.wait_map = wait_map
        self.partition: int | None = None  # the reply partition named in this instance's events
        self.assigned_partitions: list[int] = []
        self.assignments = 0  # assignments received so far
        self._on_reply = on_reply or (lambda outcome: None)
        self._kafka = KafkaAccess.of(kafka)
        self._group = group
        self._consumer: AIOKafkaConsumer | None = None  # made in start(): aiokafka needs the loop
        self._task: asyncio.Task | None = None
        self.on_fatal = lambda message: None  # the gateway ends on a refusal that no retry mends

    async def start(self) -> None:
        consumer = self._kafka.consumer(
            group_id=self._group,
            enable_auto_commit=False,  # it never commits: each assignment starts at the end
            auto_offset_reset="latest",
            # Kafka's default long poll: a fetch answers as soon as one reply is there (fetch_min_bytes
            # 1), so this only spaces out the polls of an idle instance (100 ms cost it 0.8 % of a core).
            fetch_max_wait_ms=500,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        await consumer.start()
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._task = asyncio.create_task(self._read(consumer), name="gateway-replies")

    def reading(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self.partition = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        mine = sorted(tp for tp in assigned if tp.topic == self.topic)
        self.assigned_partitions = [tp.partition for tp in mine]
        self.assignments += 1
        if not mine:
            self.partition = None
            log.warning("no reply partition assigned: more gateway instances than reply partitions")
            return
        # Positions resolved before the partition is named: a reply to an event sent after
        # this point can never land before the position the consumer reads from.
        assert self._consumer is not None
        await self._consumer.seek_to_end(*mine)
        for tp in mine:
            await self._consumer.position(tp)
        self.partition = mine[0].partition
        log.info("reply partitions assigned", extra={"partitions": self.assigned_partitions})

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._loop(consumer)
        except KafkaAccessError as exc:
            log.error("%s", exc)  # one line: what Kafka refuses and the ACL that grants it
            self.partition = None
            self.on_fatal(str(exc))
        except Exception:
            log.exception("the reply reader failed: no reply can be matched until a restart")
            self.partition = None  # /health 503, calls 503: never wait for replies nobody reads
            raise

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            except GroupAuthorizationFailedError:
                raise KafkaAccessError(
                    f"Kafka refuses Read on group {self._group} to {self._kafka.principal()}: grant it with "
                    f"`{acl_command(self._kafka, 'Read', 'group', self._group)}` (or with "
                    "--resource-pattern-type prefixed for every suffix)"
                ) from None
            except TopicAuthorizationFailedError:
                raise KafkaAccessError(
                    f"Kafka refuses Read on topic {self.topic} to {self._kafka.principal()}: grant it with "
                    f"`{acl_command(self._kafka, 'Read', 'topic', self.topic)}`"
                ) from None
            except KafkaError as exc:
                log.warning("reading replies failed: retrying", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            resolve, on_reply = self.wait_map.resolve, self._on_reply
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        on_reply(resolve(record.value))
