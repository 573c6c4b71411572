"""The console's work behind its routes: an account's policy, sessions and recent decisions,
terminating a session on an agent's behalf, the live picture and the policies in force.

Everything goes through the gateway's own parts: sessions are read from Redis like
GET /v1/sessions (`Gateway.sessions`), a terminate is published and answered like a player's
(`Gateway.call`) with the contract's `issued-by` header; the policies are followed read-only
from the compacted topic as the processor follows them (`PolicyFollower`), and the ledger is
indexed from the verdicts topic (ledger_follower.py). It costs the processor nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiokafka.errors import KafkaError

from gateway.auth import Caller
from gateway.console.ledger import LedgerIndex
from gateway.console.ledger_follower import LedgerFollower
from gateway.console.settings import ConsoleSettings
from gateway.console.support_auth import Support
from gateway.events import now_ms
from gateway.service import Answer, Gateway
from gateway.settings import GatewaySettings
from processor.connections import kafka_access
from processor.kafka_checks import KafkaAccessError
from processor.metrics import Metrics
from processor.policies import POLICY_PARTITIONS, PolicyFollower, PolicyTable
from processor.topics import COMPACTED, ensure_topics

log = logging.getLogger("gateway.console")

# The terminate's `sessionId` names the requester (contract: Terminate); the console is one.
REQUESTER_SESSION = "support-console"
START_RETRY_SECONDS = 1.0


class ConsoleService:
    def __init__(self, settings: GatewaySettings, console: ConsoleSettings, gateway: Gateway) -> None:
        self.settings = settings
        self.console = console
        self.gateway = gateway
        self.index = LedgerIndex(
            console.console_recent_per_user, console.console_max_users, console.console_history_minutes
        )
        self.policies = PolicyTable(settings.max_streams, settings.overflow_policy)
        self._ledger: LedgerFollower | None = None
        self._policy_follower: PolicyFollower | None = None
        self._task: asyncio.Task | None = None
        self.state = "starting"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._start(), name="console-startup")

    async def _start(self) -> None:
        s = self.settings
        while True:
            if self.gateway.state != "running":
                # The gateway runs once the events topic exists: the processor made its topics then.
                self.state = f"waiting for the gateway: {self.gateway.state}"
            else:
                try:
                    await self._start_once(s)
                    self.state = "running"
                    return
                except KafkaAccessError as exc:  # an ACL the console needs: said, and retried
                    self.state = str(exc)
                    log.error("console not ready: retrying", extra={"why": self.state})
                except (KafkaError, OSError, TimeoutError) as exc:
                    self.state = f"cannot read the ledger or the policies from Kafka: {exc!r}"
                    log.warning("console not ready: retrying", extra={"why": self.state})
            await asyncio.sleep(START_RETRY_SECONDS)

    async def _start_once(self, s: GatewaySettings) -> None:
        kafka = kafka_access(s)  # the gateway's own principal and security settings
        if self._ledger is None:
            counts = await ensure_topics(
                kafka,
                [s.verdicts_topic],
                s.topic_partitions,
                s.topic_replication_factor,
                needs={s.verdicts_topic: ("Read",)},
            )
            ledger = LedgerFollower(kafka, s.verdicts_topic, self.index, self.console.console_check_seconds)
            await ledger.start(counts[s.verdicts_topic])
            self._ledger = ledger
        counts = await ensure_topics(
            kafka,
            [s.policies_topic],
            POLICY_PARTITIONS,
            s.topic_replication_factor,
            configs={s.policies_topic: COMPACTED},
            needs={s.policies_topic: ("Read",)},
        )
        follower = PolicyFollower(kafka, s.policies_topic, self.policies, Metrics())
        try:
            await follower.start(counts[s.policies_topic])
        except BaseException:
            await follower.stop()
            raise
        self._policy_follower = follower

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for part in (self._policy_follower, self._ledger):
            if part is not None:
                await part.stop()
        self.state = "stopped"

    def ledger_stale(self) -> str | None:
        """Why the ledger's figures and the policies are not live now (None: they are)."""
        if self._ledger is None or self.state != "running":
            return self.state
        return self._ledger.staleness(self.console.console_stale_after_seconds)

    # -- the views ----------------------------------------------------------------------
    async def account(self, user_id: str) -> dict:
        """The account's policy, its active sessions (from Redis) and its recent decisions."""
        answer = await self.gateway.sessions(Caller(user_id, None))
        body = orjson.loads(answer.body)
        sessions, sessions_stale = (
            (body["sessions"], None) if answer.status == 200 else (None, body["detail"])
        )
        return {
            "userId": user_id,
            "now": now_ms(),
            "policy": self._policy_of(user_id),
            "sessions": sessions,
            "sessionsStale": sessions_stale,
            "recent": self.index.recent(user_id),
            "ledgerStale": self.ledger_stale(),
        }

    def _policy_of(self, user_id: str) -> dict:
        """The policy its events get: the user's record, else its plan's (the plan named by its
        newest verdict: the console never sees the player's credentials), else the default."""
        plan = self.index.last_plan(user_id)
        policy = self.policies.resolve(user_id, plan)
        name = policy.name(user_id, plan)
        if policy.kind == "d" and "default" not in self.policies.listing():
            name = "settings"  # no default record: MAX_STREAMS and OVERFLOW_POLICY
        return {
            "name": name,
            "maxStreams": policy.max_streams,
            "overflow": "evict_oldest" if policy.evict else "reject",
            "deviceClasses": dict(policy.classes),
            "plan": plan,
        }

    async def terminate(self, support: Support, user_id: str, session_id: str, key: str | None) -> Answer:
        """A terminate event for the account, like a player's, naming the agent (issued-by)."""
        caller = Caller(user_id, self.index.last_plan(user_id))
        return await self.gateway.call(
            "terminate",
            caller,
            REQUESTER_SESSION,
            key,
            issued_by=support.principal,
            targetSessionId=session_id,
        )

    def live(self) -> dict:
        return {
            "now": now_ms(),
            **self.index.series(now_ms()),
            "stale": self.ledger_stale(),
            "ledger": self.index.stats(),
        }

    def policies_in_force(self) -> dict:
        return {
            "policies": self.policies.listing(),
            "settings": {"maxStreams": self.settings.max_streams, "overflow": self.settings.overflow_policy},
            "stale": self.ledger_stale(),
        }
