"""The gateway's work behind the HTTP routes: publish a call's event, wait for its verdict, answer.

It never decides anything: the status comes from the processor's verdict (the contract's
table), the body is the verdict's bytes. Without a verdict in time it answers 504, or, when
the operator chose GATEWAY_ON_TIMEOUT=allow, a degraded allow with a 60 s token for starts and
heartbeats. Listings are read from Redis, where the processor keeps the leases.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from gateway.auth import Caller
from gateway.events import EventPublisher, build_event, event_id, now_ms
from gateway.metrics import GatewayMetrics
from gateway.replies import ReplyRouter, UserWaitsFull, WaitMap, WaitMapFull
from gateway.settings import GatewaySettings
from processor.config import DEV_SECRET
from processor.connections import kafka_access, redis_access
from processor.kafka_checks import KafkaAccessError
from processor.lease_store import LeaseStore, Rules
from processor.redis_checks import RedisAccessError, check_redis_login
from processor.tokens import HS256Signer, PyJWTSigner, TokenSigner
from processor.topics import ensure_topics

log = logging.getLogger("gateway")

FAIL_OPEN_TOKEN_MS = 60_000
STARTUP_RETRY_SECONDS = 1.0
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def error(status: int, code: str, detail: str, **extra: object) -> Answer:
    return Answer(status, orjson.dumps({"error": code, "detail": detail, **extra}))


# The contract's status table: (event type, decision) -> HTTP status of the verdict's body.
_STATUS = {("start", "allow"): 200, ("start", "deny"): 409, ("heartbeat", "allow"): 200}
_STATUS[("heartbeat", "deny")] = 410  # no_lease: the player must stop


def _signer(settings: GatewaySettings) -> TokenSigner:
    if settings.jwt_algorithm == "HS256":
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else DEV_SECRET
        return HS256Signer(secret.encode())
    assert settings.jwt_private_key_file is not None  # checked by the settings
    return PyJWTSigner(settings.jwt_algorithm, settings.jwt_private_key_file.read_bytes())


def _connect_redis(settings: GatewaySettings):
    return redis_access(settings).client(socket_timeout=5, socket_connect_timeout=5)


class Gateway:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> None:
        s = self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.wait_map = WaitMap(s.gateway_max_in_flight, s.gateway_max_in_flight_per_user)
        self.kafka = kafka_access(s)
        self.publisher = EventPublisher(
            self.kafka, s.events_topic, s.gateway_replies_topic, s.event_partitioner
        )
        self.router = ReplyRouter(
            self.kafka,
            s.gateway_replies_topic,
            s.gateway_consumer_group,
            self.wait_map,
            on_reply=self._count_reply,
        )
        self._signer = _signer(s) if s.gateway_on_timeout == "allow" else None
        self._timeout = s.gateway_verdict_timeout_ms / 1000
        self._retry_after = {"retry-after": str(s.gateway_retry_after_seconds)}
        self._redis = None
        self._store: LeaseStore | None = None
        self._events_partitions = 0
        self._started: list[object] = []
        self._startup: asyncio.Task | None = None
        self._children: dict = {}  # metric children by labels
        self.state = "starting"
        # Set when Kafka or Redis refuses the gateway (TLS, login, ACL): no retry mends that, so
        # the server is asked to end (on_fatal, set by the CLI) and the process exits non-zero.
        self.fatal: str | None = None
        self.on_fatal = lambda message: None
        self.router.on_fatal = self._fail

    def _count_reply(self, outcome: str) -> None:
        child = self._children.get(("reply", outcome))  # a handful of constant outcomes
        if child is None:
            child = self._children[("reply", outcome)] = self.metrics.replies.labels(outcome)
        child.inc()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background: /health says 503 (and why) until replies can be routed."""
        self._startup = asyncio.create_task(self._start(), name="gateway-startup")

    def _fail(self, message: str) -> None:
        self.fatal = self.state = message
        self.on_fatal(message)

    async def _start(self) -> None:
        while True:
            try:
                if await self._start_once():
                    break
            except (KafkaAccessError, RedisAccessError) as exc:
                log.error("%s", exc)  # one line: what is refused and what grants it
                self._fail(str(exc))
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                self.state = f"cannot reach Kafka at {self.settings.kafka_bootstrap_servers}: {exc!r}"
            log.warning("gateway not ready: retrying", extra={"why": self.state})
            await asyncio.sleep(STARTUP_RETRY_SECONDS)
        self.state = "running"
        log.info(
            "gateway started",
            extra={
                "events_partitions": self._events_partitions,
                "event_partitioner": self.settings.event_partitioner,
            },
        )

    async def _start_once(self) -> bool:
        """One attempt at each step not done yet; False while the events topic does not exist."""
        s = self.settings
        await ensure_topics(
            self.kafka,
            [s.gateway_replies_topic],
            s.gateway_reply_partitions,
            s.topic_replication_factor,
            needs={s.gateway_replies_topic: ("Read",)},
        )
        if self.publisher not in self._started:
            await self.publisher.start()
            self._started.append(self.publisher)
        self._events_partitions = await self.publisher.events_partitions()
        if not self._events_partitions:
            self.state = f"the events topic {s.events_topic!r} does not exist yet (the processor creates it)"
            return False
        if self._store is None:
            redis = _connect_redis(s)
            try:
                await check_redis_login(redis, redis_access(s))  # a refused login or certificate ends it
            except RedisError:
                pass  # unreachable now: only GET /v1/sessions needs Redis, and it says so per call
            except BaseException:
                await redis.aclose()
                raise
            self._redis = redis
            rules = Rules(s.max_streams, s.lease_ttl_ms, s.overflow_policy, s.event_id_memory, 0)
            self._store = LeaseStore(self._redis, s.events_topic, rules)
        if self.router not in self._started:
            await self.router.start()
            self._started.append(self.router)
        return True

    async def stop(self) -> None:
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
            await asyncio.gather(self._startup, return_exceptions=True)
        for part in reversed(self._started):
            await part.stop()  # type: ignore[attr-defined]
        self._started.clear()
        if self._redis is not None:
            await self._redis.aclose()
        self.state = "stopped"

    def health(self) -> tuple[bool, dict]:
        partition = self.router.partition
        if self.state == "running" and not self.router.reading():
            return False, {"status": "DOWN", "detail": "the reply reader stopped (see the log): restart"}
        if self.state == "running" and partition is not None:
            return True, {"status": "UP", "replyPartition": partition, "inFlight": self.wait_map.size}
        if self.state != "running":
            detail = self.state
        elif self.router.assignments and not self.router.assigned_partitions:
            detail = "no reply partition assigned: more gateway instances than the replies topic's partitions"
        else:
            detail = "no reply partition assigned yet (joining the group or rebalancing)"
        return False, {"status": "DOWN", "detail": detail}

    # -- calls --------------------------------------------------------------------------
    async def call(
        self,
        kind: str,
        caller: Caller,
        session_id: str,
        key: str | None,
        *,
        issued_by: str | None = None,
        **fields: str | None,
    ) -> Answer:
        """Publish the event of one call and answer with its verdict (or the timeout's answer).

        `issued_by`: the support console's agent (`support:<sub>`), sent as the event's
        `issued-by` header; the verdicts then carry it as `issuedBy` (the contract)."""
        eid = event_id(caller.user_id, kind, session_id, fields.get("targetSessionId"), key, issued_by)
        answer = await self._call(kind, caller, session_id, eid, fields, issued_by)
        self._counted(kind, answer.status).inc()
        return answer

    async def _call(
        self,
        kind: str,
        caller: Caller,
        session_id: str,
        eid: str,
        fields: dict[str, str | None],
        issued_by: str | None = None,
    ) -> Answer:
        partition = self.router.partition
        if partition is None:
            self.metrics.rejected.labels("not_ready").inc()
            return self._unavailable("unavailable", "the gateway owns no reply partition yet: retry")
        try:
            waiter = self.wait_map.add(eid, caller.user_id, kind, session_id)
        except UserWaitsFull as exc:
            # Before the global cap's 503: one user's flood is its own 429, not everyone's outage.
            self.metrics.rejected.labels("user_in_flight").inc()
            answer = error(429, "too_many_requests", f"{exc}: wait for their answers, retry later")
            answer.headers.update(self._retry_after)
            return answer
        except WaitMapFull as exc:
            self.metrics.rejected.labels("in_flight").inc()
            return self._unavailable("overloaded", f"{exc}: retry later")
        self.metrics.in_flight.inc()
        started = asyncio.get_running_loop().time()
        at = now_ms()
        value = build_event(kind, caller.user_id, session_id, eid, caller.plan, at, **fields)
        try:
            async with asyncio.timeout(self._timeout):
                await self.publisher.publish(caller.user_id, value, at, partition, issued_by)
                reply = await waiter.future
        except TimeoutError:
            return self._timed_out(kind, caller, session_id, eid, at)
        except KafkaError as exc:
            log.warning("event not published", extra={"user_id": caller.user_id, "error": repr(exc)})
            self.metrics.rejected.labels("kafka").inc()
            return self._unavailable("unavailable", f"the event could not be published ({exc!r}): retry")
        finally:
            self.wait_map.discard(eid, waiter)
            self.metrics.in_flight.dec()
        self._timed(kind).observe(asyncio.get_running_loop().time() - started)
        status = _STATUS.get((kind, reply.verdict.get("decision")), 200)
        return Answer(status, reply.value)

    def _counted(self, kind: str, status: int):
        """The labelled counter child of (call, status), looked up once (labels() costs per call)."""
        child = self._children.get((kind, status))
        if child is None:
            child = self._children[(kind, status)] = self.metrics.requests.labels(kind, str(status))
        return child

    def _timed(self, kind: str):
        child = self._children.get(kind)
        if child is None:
            child = self._children[kind] = self.metrics.seconds.labels(kind)
        return child

    def _unavailable(self, code: str, detail: str) -> Answer:
        answer = error(503, code, detail)
        answer.headers.update(self._retry_after)
        return answer

    def _timed_out(self, kind: str, caller: Caller, session_id: str, eid: str, at: int) -> Answer:
        self.metrics.timeouts.labels(kind).inc()
        log.warning("no verdict in time", extra={"user_id": caller.user_id, "session_id": session_id})
        if self._signer is not None and kind in ("start", "heartbeat"):
            self.metrics.fail_open.labels(kind).inc()
            verdict_id = "degraded-" + eid
            expires = at + FAIL_OPEN_TOKEN_MS
            body = {
                "verdictId": verdict_id,
                "eventId": eid,
                "userId": caller.user_id,
                "sessionId": session_id,
                "type": kind,
                "decision": "allow",
                "reason": "degraded",
                "activeStreams": None,
                "maxStreams": None,
                "leaseExpiresAt": expires,
                "decidedAt": at,
                "token": self._signer.sign(caller.user_id, session_id, expires, at, verdict_id),
                "policy": None,
            }
            return Answer(200, orjson.dumps(body))
        answer = error(
            504,
            "verdict_timeout",
            f"no verdict within {self.settings.gateway_verdict_timeout_ms} ms; the event may still be "
            "decided: retry with the same Idempotency-Key",
            eventId=eid,
        )
        answer.headers.update(self._retry_after)
        return answer

    async def sessions(self, caller: Caller) -> Answer:
        """The caller's active leases, read from Redis at the later of their event clock and now."""
        if self._store is None:
            return self._unavailable("unavailable", f"the gateway is not ready: {self.state}")
        partition = self.publisher.partition_of(caller.user_id)
        try:
            _at, leases = await self._store.leases_now(partition, caller.user_id, now_ms())
        except (RedisError, OSError) as exc:
            self.metrics.rejected.labels("redis").inc()
            return self._unavailable("unavailable", f"cannot read the sessions from Redis ({exc!r}): retry")
        sessions = [
            {
                "sessionId": sid,
                "deviceId": lease["deviceId"],
                "deviceClass": lease["deviceClass"],
                "contentId": lease["contentId"],
                "startedAt": lease["startedAt"],
                "leaseExpiresAt": lease["expiresAt"],
            }
            for sid, lease in leases.items()
        ]
        sessions.sort(key=lambda x: (x["startedAt"] or 0, x["sessionId"]))
        self._counted("list", 200).inc()
        return Answer(200, orjson.dumps({"userId": caller.user_id, "sessions": sessions}))
