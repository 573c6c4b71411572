"""`concurrency-gateway` / `python -m gateway`: serve the HTTP gateway, or print a dev token.

concurrency-gateway                          serve on GATEWAY_HOST:GATEWAY_PORT
concurrency-gateway token USER [--plan P] [--ttl S]
                                             a bearer token signed with GATEWAY_AUTH_SECRET
concurrency-gateway support-token AGENT [--ttl S]
                                             a support console token (role=support) for AGENT
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

import uvicorn

from gateway.app import create_app
from gateway.auth import dev_token
from gateway.console.support_auth import support_token
from gateway.settings import GatewaySettings, load_gateway_settings
from processor.config import SettingsError
from processor.connections import kafka_access
from processor.kafka_checks import KafkaAccessError, check_kafka_login
from processor.logs import setup_logging

log = logging.getLogger("gateway")


def serve(settings: GatewaySettings) -> int:
    """One uvicorn process; uvloop and httptools when installed (uvicorn[standard]).

    Ends with 2 and one line on stderr when Kafka refuses the gateway's login or certificate
    (asked before serving) or an ACL (found while connecting in the background).
    """
    setup_logging(settings.log_level)
    if settings.gateway_auth_secret is None and settings.gateway_auth_public_key_file is None:
        log.warning("ALLOW_INSECURE_DEV_SECRET is set: callers' tokens are checked with a public secret")
    try:
        asyncio.run(check_kafka_login(kafka_access(settings)))
    except KafkaAccessError as exc:
        print(f"concurrency-gateway: {exc}", file=sys.stderr)  # noqa: T201 - the command's error
        return 2
    app = create_app(settings)
    gateway = app.state.gateway
    run_server(app, settings.gateway_host, settings.gateway_port, gateway)
    if gateway.fatal is not None:
        print(f"concurrency-gateway: {gateway.fatal}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


def run_server(app: object, host: str, port: int, gateway=None) -> None:
    """Serve `app` with the gateway's server settings (bench.floor_app serves its floor with these too)."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="auto",
        http="auto",
        access_log=False,
        log_config=None,  # our JSON logging, not uvicorn's own handlers
        lifespan="on",
    )
    # What is alive now (modules, the app) lives as long as the process: keep it out of the
    # collector's scans, and collect young objects less often (a call allocates a few hundred).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    server = uvicorn.Server(config)
    if gateway is not None:
        gateway.on_fatal = lambda _message: setattr(server, "should_exit", True)
    server.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concurrency-gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser("token", help="print a development bearer token for USER")
    token.add_argument("user")
    token.add_argument("--plan", default=None, help="the token's plan claim (the policy by plan)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    support = commands.add_parser("support-token", help="print a support console token (role=support)")
    support.add_argument("agent", help="the support principal (the token's sub)")
    support.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    args = parser.parse_args(argv)
    try:
        settings = load_gateway_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the command's error
        return 2
    if args.command in ("token", "support-token"):
        try:
            if args.command == "token":
                print(dev_token(settings, args.user, args.plan, args.ttl))  # noqa: T201 - the output
            else:
                print(support_token(settings, args.agent, args.ttl))  # noqa: T201 - the output
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        return 0
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
