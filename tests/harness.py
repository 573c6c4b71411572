"""Driving a real processor through real Kafka and Redis in tests.

`Flow` owns one test's topics and consumer group: it sends events with explicit record
timestamps (the processor's event time), runs processors in-process or as OS processes,
and collects what comes out on the verdicts and dead-letter topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from processor.app import Processor
from processor.config import Settings, load_settings
from processor.partitioning import ProducerPartitioner
from processor.topics import ensure_topics
from producer_sim.processor_proc import ProcessorProcess

TEST_SECRET = "test-secret-0123456789abcdef-0123456789"


class _UserIdKey:
    """`send_raw`'s default key: the value's userId in UTF-8, as a correct producer keys it."""

    def __repr__(self) -> str:
        return "USER_ID_KEY"


USER_ID_KEY = _UserIdKey()


def user_id_key(value: bytes | None) -> bytes | None:
    """The value's string userId in UTF-8; None (no key) when the value has none."""
    try:
        obj = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    user_id = obj.get("userId") if isinstance(obj, dict) else None
    return user_id.encode() if isinstance(user_id, str) else None


def event_time_base() -> int:
    """An event-time origin the broker accepts (not in the future) with room to move forward."""
    return int(time.time() * 1000) - 40 * 60 * 1000


async def wait_until(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition()` (sync or async) until it is truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def only(verdicts: list[dict], event_id: str) -> dict:
    """The one verdict of `event_id` that is not a revoke (asserts there is exactly one)."""
    found = [v for v in verdicts if v["eventId"] == event_id and v["decision"] != "revoke"]
    assert len(found) == 1, found
    return found[0]


def revokes(verdicts: list[dict], event_id: str) -> list[dict]:
    """The revoke verdicts `event_id` yielded."""
    return [v for v in verdicts if v["eventId"] == event_id and v["decision"] == "revoke"]


class _TopicReader:
    """Reads a whole topic from the beginning into a list, in the background."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._partitions = partitions
        self.records: list[ConsumerRecord] = []
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._topic = topic
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                self.records.extend(recs)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@dataclass
class RunningProcessor:
    processor: Processor
    task: asyncio.Task

    async def stop(self) -> None:
        self.processor.stop()
        await asyncio.wait_for(self.task, 30)


@dataclass
class Flow:
    bootstrap: str
    redis_url: str
    partitions: int = 4
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.settings: Settings = load_settings(
            kafka_bootstrap_servers=self.bootstrap,
            redis_url=self.redis_url,
            events_topic=f"events-{suffix}",
            verdicts_topic=f"verdicts-{suffix}",
            dlq_topic=f"dlq-{suffix}",
            policies_topic=f"policies-{suffix}",
            consumer_group=f"group-{suffix}",
            reply_topics=r"replies-.*",  # the test topics of reply tests and gateways
            jwt_secret=TEST_SECRET,
            http_port=0,
            topic_partitions=self.partitions,
            fetch_timeout_ms=50,
            **self.overrides,
        )
        self._producer: AIOKafkaProducer | None = None
        self._verdicts: _TopicReader | None = None
        self._dlq: _TopicReader | None = None
        self._running: list[RunningProcessor] = []
        self._processes: list[ProcessorProcess] = []
        self._policies_ready = False
        self.t0 = event_time_base()

    async def __aenter__(self) -> Flow:
        s = self.settings
        await ensure_topics(
            s.kafka_bootstrap_servers, [s.events_topic, s.verdicts_topic, s.dlq_topic], s.topic_partitions, 1
        )
        try:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                enable_idempotence=True,
                partitioner=ProducerPartitioner(s.event_partitioner),  # where the processor looks
            )
            await self._producer.start()
            self._verdicts = _TopicReader(self.bootstrap, s.verdicts_topic, s.topic_partitions)
            self._dlq = _TopicReader(self.bootstrap, s.dlq_topic, s.topic_partitions)
            await self._verdicts.start()
            await self._dlq.start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for running in self._running:
            if not running.task.done():
                running.processor.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(running.task, 30)
        for proc in self._processes:
            proc.kill()
        if self._producer is not None:
            await self._producer.stop()
        for reader in (self._verdicts, self._dlq):
            if reader is not None:
                await reader.stop()

    # -- input --------------------------------------------------------------------------
    async def send(
        self,
        kind: str,
        user: str,
        session: str,
        at: int,
        event_id: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **fields: object,
    ) -> RecordMetadata:
        """Send one event whose record timestamp is `t0 + at` ms."""
        value = {"type": kind, "userId": user, "sessionId": session, **fields}
        if event_id is not None:
            value["eventId"] = event_id
        return await self.send_raw(orjson.dumps(value), key=user.encode(), at=at, headers=headers)

    async def send_raw(
        self,
        value: bytes | None,
        key: bytes | _UserIdKey | None = USER_ID_KEY,
        at: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> RecordMetadata:
        """Send one record as is; keyed by its userId unless `key` is given (None: no key)."""
        assert self._producer is not None
        if isinstance(key, _UserIdKey):
            key = user_id_key(value)
        return await self._producer.send_and_wait(
            self.settings.events_topic, key=key, value=value, timestamp_ms=self.t0 + at, headers=headers
        )

    async def send_policy(self, key: str, value: dict | bytes | None) -> RecordMetadata:
        """Write one record of the policies topic: a dict as JSON, bytes as is, None a tombstone.

        Creates the (compacted) policies topic on first use, as `policy set` does.
        """
        assert self._producer is not None
        if not self._policies_ready:
            from processor.policies import ensure_policies_topic

            await ensure_policies_topic(self.settings)
            self._policies_ready = True
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        return await self._producer.send_and_wait(self.settings.policies_topic, key=key.encode(), value=raw)

    async def wait_policy(
        self,
        user: str,
        policy: str,
        max_streams: int,
        plan: str | None = None,
        at: int = 0,
        timeout: float = 30.0,
    ) -> None:
        """Until the processor decides `user`'s events (naming `plan`) under `policy` / `max_streams`.

        Probes with `stop` events (eventId `policy-probe-...`) of a session that never started:
        allow `not_active`, no effect on leases; send them at a time no later than the next event.
        """
        deadline = time.monotonic() + timeout
        while True:
            event_id = f"policy-probe-{uuid.uuid4().hex[:12]}"
            extra = {"plan": plan} if plan is not None else {}
            await self.send("stop", user, "policy-probe", at=at, event_id=event_id, **extra)
            await wait_until(
                lambda event_id=event_id: any(v["eventId"] == event_id for v in self.verdicts()),
                max(1.0, deadline - time.monotonic()),
                what=f"the verdict of probe {event_id}",
            )
            seen = next(v for v in self.verdicts() if v["eventId"] == event_id)
            if (seen.get("policy"), seen.get("maxStreams")) == (policy, max_streams):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{user} still decided under {seen.get('policy')!r}/{seen.get('maxStreams')}"
                )
            await asyncio.sleep(0.1)

    async def wait_events(self, *event_ids: str, timeout: float = 30.0) -> list[dict]:
        """All verdicts so far, once each of `event_ids` has its own (non-revoke) verdict."""

        def decided() -> bool:
            have = {v["eventId"] for v in self.verdicts() if v["decision"] != "revoke"}
            return have.issuperset(event_ids)

        await wait_until(decided, timeout, what=f"verdicts of {event_ids}")
        return self.verdicts()

    # -- processors ---------------------------------------------------------------------
    def launch_processor(self, **overrides: object) -> RunningProcessor:
        """Start an in-process processor without waiting for it to be healthy."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        processor = Processor(settings)
        running = RunningProcessor(processor, asyncio.create_task(processor.run()))
        self._running.append(running)
        return running

    async def start_processor(self, **overrides: object) -> RunningProcessor:
        """Start an in-process processor and wait until it is assigned and consuming."""
        running = self.launch_processor(**overrides)
        processor, task = running.processor, running.task
        await wait_until(lambda: task.done() or processor.health()[0], what="processor consuming")
        if task.done():
            task.result()
        return running

    def spawn_processor(self, log_dir: Path, **env_overrides: str) -> ProcessorProcess:
        """A started `python -m processor` on this flow's topics and group (killed at the end)."""
        s = self.settings
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "REDIS_URL": s.redis_url,
            "REDIS_CLUSTER": "true" if s.redis_cluster else "false",
            "EVENTS_TOPIC": s.events_topic,
            "VERDICTS_TOPIC": s.verdicts_topic,
            "DLQ_TOPIC": s.dlq_topic,
            "POLICIES_TOPIC": s.policies_topic,
            "REPLY_TOPICS": s.reply_topics,
            "CONSUMER_GROUP": s.consumer_group,
            "JWT_SECRET": TEST_SECRET,
            "TOPIC_PARTITIONS": str(s.topic_partitions),
            "MAX_STREAMS": str(s.max_streams),
            "LEASE_TTL_SECONDS": str(s.lease_ttl_seconds),
            "OVERFLOW_POLICY": s.overflow_policy,
            "FETCH_TIMEOUT_MS": str(s.fetch_timeout_ms),
            "SESSION_TIMEOUT_MS": str(s.session_timeout_ms),
            "HEARTBEAT_INTERVAL_MS": str(s.heartbeat_interval_ms),
            **env_overrides,
        }
        port = int(env.pop("HTTP_PORT", 0)) or None  # a free port unless the test names one
        log_path = log_dir / f"processor-{len(self._processes)}.log"
        proc = ProcessorProcess(env, log_path, http_port=port).start()
        self._processes.append(proc)
        return proc

    # -- output -------------------------------------------------------------------------
    def verdict_records(self) -> list[ConsumerRecord]:
        assert self._verdicts is not None
        return list(self._verdicts.records)

    def verdicts(self) -> list[dict]:
        return [orjson.loads(r.value) for r in self.verdict_records()]

    async def wait_verdicts(self, count: int, timeout: float = 30.0) -> list[dict]:
        """All verdicts so far, once there are at least `count`."""
        await wait_until(
            lambda: len(self._verdicts.records) >= count,
            timeout,  # type: ignore[union-attr]
            what=f"{count} verdicts (have {len(self._verdicts.records)})",
        )  # type: ignore[union-attr]
        return self.verdicts()

    async def wait_dead_letters(self, count: int, timeout: float = 30.0) -> list[ConsumerRecord]:
        await wait_until(lambda: len(self._dlq.records) >= count, timeout, what=f"{count} dead letters")  # type: ignore[union-attr]
        return list(self._dlq.records)  # type: ignore[union-attr]

    def verdicts_by_event(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for v in self.verdicts():
            out.setdefault(v["eventId"], []).append(v)
        return out
