"""`concurrency-processor` / `python -m processor`: run the processor, or list a user's leases."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import orjson
from aiokafka.partitioner import murmur2
from redis.asyncio import Redis

from processor.app import Processor
from processor.config import SettingsError, load_settings
from processor.lease_store import LeaseStore, Rules
from processor.logs import setup_logging

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
    await processor.run()
    return 0


async def _list_leases(user_id: str) -> int:
    settings = load_settings(allow_insecure_dev_secret=True)
    redis = Redis.from_url(settings.redis_url)
    try:
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
        partition = (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions
        leases = await store.active_leases(partition, user_id)
        print(  # noqa: T201 - the listing is the command's output
            orjson.dumps(
                {"userId": user_id, "partition": partition, "leases": leases}, option=orjson.OPT_INDENT_2
            ).decode()
        )
        return 0
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concurrency-processor", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume events and publish verdicts (the default)")
    leases = sub.add_parser("leases", help="list a user's active leases (at the user's event clock)")
    leases.add_argument("user_id")
    args = parser.parse_args(argv)
    try:
        if args.command == "leases":
            return asyncio.run(_list_leases(args.user_id))
        return asyncio.run(_run())
    except SettingsError as exc:
        print(f"concurrency-processor: {exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
