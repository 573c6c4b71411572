"""`python -m bench.secure_start [--rounds 3]`: what the secured local services cost to start.

Alternating rounds, fresh data dirs (storage format included): the plain broker
(compose/kafka_broker.py), the secured broker alone, and everything the ``secure_services``
fixture and ``make services-secure`` start (CA, passwords, secured broker, TLS Redis, the
contract's topics and 26 ACLs, granted and seen applied). Prints one JSON line per round.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from compose.kafka_acls import Topics
from compose.kafka_broker import KafkaBroker
from compose.secure_services import start_secure_services


def one_round() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        plain = KafkaBroker(data_dir=Path(tmp) / "plain")
        plain.start(300)
        plain.stop()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        svc = start_secure_services(Path(tmp), contract_topics=Topics(), timeout=300)
        everything = time.monotonic() - t0
        assert svc.broker is not None and svc.redis is not None
        secured, redis = svc.broker.start_seconds or 0.0, svc.redis.start_seconds or 0.0
        t0 = time.monotonic()
        svc.admin().acls()
        describe = time.monotonic() - t0
        svc.stop()
    return {
        "plain_broker_s": round(plain.start_seconds or 0.0, 1),
        "secured_broker_s": round(secured, 1),
        "tls_redis_s": round(redis, 2),
        "everything_s": round(everything, 1),
        "describe_acls_s": round(describe, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.secure_start", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
        print(json.dumps(one_round()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
