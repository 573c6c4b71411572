"""`concurrency-processor` / `python -m processor`: run the processor, or list a user's leases."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from datetime import UTC, datetime

import orjson

from processor import commands
from processor.app import Processor
from processor.config import SettingsError, load_settings
from processor.connections import kafka_access, redis_access
from processor.kafka_checks import AUTHORIZATION_ERRORS, KafkaAccessError, check_kafka_login, refusal
from processor.lease_store import LeaseStore, Rules
from processor.logs import setup_logging
from processor.partitioning import partition_for
from processor.redis_checks import (
    RedisAccessError,
    RedisModeError,
    UnsafeRedisError,
    check_redis_login,
    check_redis_mode,
)

log = logging.getLogger("processor")


async def _run() -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    if settings.jwt_secret is None and settings.jwt_algorithm == "HS256":
        log.warning("ALLOW_INSECURE_DEV_SECRET is set: tokens are signed with a public development secret")
    processor = Processor(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, processor.stop)
    try:
        await processor.run()
    except AUTHORIZATION_ERRORS as exc:  # met by a client (the group's join, a fetch): one line
        s = settings
        uses = {
            s.events_topic: "Read",
            s.verdicts_topic: "Write",
            s.dlq_topic: "Write",
            s.policies_topic: "Read",
        }
        raise refusal(exc, kafka_access(settings), uses) from None
    return 0


async def _list_leases(user_id: str) -> int:
    settings = load_settings(allow_insecure_dev_secret=True)  # listing signs nothing
    access = redis_access(settings)
    redis = access.client()
    try:
        await check_redis_login(redis, access)
        await check_redis_mode(redis, settings.redis_cluster)
        store = LeaseStore(
            redis,
            settings.events_topic,
            Rules(
                settings.max_streams,
                settings.lease_ttl_ms,
                settings.overflow_policy,
                settings.event_id_memory,
                settings.idle_user_ttl_seconds * 1000,
            ),
        )
        partitions = int(await redis.get(store.partition_count_key()) or settings.topic_partitions)
        partition = partition_for(settings.event_partitioner, user_id.encode(), partitions)
        wall = time.time_ns() // 1_000_000
        at, leases = await store.leases_now(partition, user_id, wall)
        listing = {
            "userId": user_id,
            "partition": partition,
            "evaluatedAt": at,
            "evaluatedAtUtc": datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds"),
            "evaluatedBy": "user event clock" if at > wall else "wall clock",
            "leases": leases,
        }
        print(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode())  # noqa: T201 - the output
        return 0
    finally:
        await redis.aclose()


def _print(obj: dict) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())  # noqa: T201 - the command's output


async def _command(args: argparse.Namespace) -> int:
    settings = load_settings(allow_insecure_dev_secret=True)  # these commands sign nothing
    kafka = kafka_access(settings)
    await check_kafka_login(kafka)
    try:
        if args.command == "policy":
            if args.action == "set":
                _print(await commands.policy_set(settings, args.key, args.json))
            elif args.action == "delete":
                _print(await commands.policy_delete(settings, args.key))
            else:
                _print(await commands.policy_list(settings))
        else:
            _print(await commands.terminate(settings, args.user_id, args.session_id, args.requester))
    except AUTHORIZATION_ERRORS as exc:  # a write refused: one line naming the ACL
        uses = {settings.policies_topic: "Write", settings.events_topic: "Write"}
        if args.command == "policy" and args.action == "list":
            uses = {settings.policies_topic: "Read"}
        raise refusal(exc, kafka, uses) from None
    return 0


# What ends a start or a command with one line on stderr (and exit 2): the line says what to fix.
ACCESS_ERRORS = (
    SettingsError,
    UnsafeRedisError,
    RedisModeError,
    commands.CommandError,
    KafkaAccessError,
    RedisAccessError,
)

SETTINGS_HINT = (
    "Settings come from environment variables (or .env), as for the processor: "
    "see docs/contract.md, Settings."
)


def _add_policy_commands(sub) -> None:
    policy = sub.add_parser(
        "policy",
        help="write, delete or list the limits by plan, user and device class",
        description=(
            "Limits live in the compacted POLICIES_TOPIC (default playback.policies); the processor "
            "follows it live. Keys: default, plan:<plan>, user:<userId>. Value: "
            '{"maxStreams": 0..1000, "overflow": "reject"|"evict_oldest", '
            '"deviceClasses": {"tv": 2, ...}} (overflow and deviceClasses optional).'
        ),
        epilog=SETTINGS_HINT + " Uses KAFKA_BOOTSTRAP_SERVERS and POLICIES_TOPIC.",
    )
    actions = policy.add_subparsers(dest="action", metavar="{set,delete,list}", required=True)
    set_ = actions.add_parser(
        "set",
        help="write one policy (validated first)",
        description="Validate and write one policy record. Example: "
        'policy set plan:premium \'{"maxStreams": 4, "deviceClasses": {"tv": 2}}\'',
    )
    set_.add_argument("key", metavar="KEY", help="default, plan:<plan> or user:<userId>")
    set_.add_argument("json", metavar="JSON", help="the policy, JSON")
    delete = actions.add_parser(
        "delete", help="delete one policy (a tombstone)", description="Write a tombstone for KEY."
    )
    delete.add_argument("key", metavar="KEY", help="default, plan:<plan> or user:<userId>")
    actions.add_parser(
        "list",
        help="print every policy in force",
        description="Read the policies topic to its end and print every policy in force, as the processor "
        "reads them (malformed records are skipped), and the settings used when none applies.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="concurrency-processor",
        description="Decide video-stream leases from Kafka player events (Redis state), or inspect them.",
        epilog="Without a command, runs the processor. " + SETTINGS_HINT,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,leases,policy,terminate}")
    sub.add_parser(
        "run",
        help="consume events and publish verdicts (the default)",
        description=(
            "Consume player events, decide leases in Redis and publish verdicts, until SIGTERM/SIGINT "
            "(which finishes the batch, commits and leaves the group). Serves /health, /live and "
            "/metrics on HTTP_PORT."
        ),
        epilog=SETTINGS_HINT + " At least KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and JWT_SECRET.",
    )
    leases = sub.add_parser(
        "leases",
        help="list a user's leases active now",
        description=(
            "Print, as JSON, the user's leases that are active now: at the later of the user's event "
            "clock (the latest record timestamp decided for them) and this machine's wall clock. "
            "'evaluatedAt' says which time that was. Reads Redis only."
        ),
        epilog=SETTINGS_HINT + " Uses REDIS_URL, EVENTS_TOPIC and TOPIC_PARTITIONS.",
    )
    leases.add_argument("user_id", metavar="USER_ID", help="the userId (the events' record key)")
    _add_policy_commands(sub)
    terminate = sub.add_parser(
        "terminate",
        help="end one of a user's sessions (publishes a terminate event)",
        description=(
            "Publish a `terminate` player event for USER_ID's session SESSION_ID to EVENTS_TOPIC. "
            "The processor removes the lease and publishes a revoke verdict (reason terminated) "
            "for that session, or answers not_active. Prints the event it published."
        ),
        epilog=SETTINGS_HINT + " Uses KAFKA_BOOTSTRAP_SERVERS and EVENTS_TOPIC.",
    )
    terminate.add_argument("user_id", metavar="USER_ID", help="the user whose session ends")
    terminate.add_argument("session_id", metavar="SESSION_ID", help="the session to end (targetSessionId)")
    terminate.add_argument(
        "--requester", metavar="SESSION_ID", help="the requesting session (default: operator-<random>)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "leases":
            return asyncio.run(_list_leases(args.user_id))
        if args.command in ("policy", "terminate"):
            return asyncio.run(_command(args))
        return asyncio.run(_run())
    except ACCESS_ERRORS as exc:
        print(f"concurrency-processor: {exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
