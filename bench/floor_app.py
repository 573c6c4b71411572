"""The HTTP floor of the gateway benchmark: a bare ASGI app on the gateway's own server settings.

    python -m bench.floor_app --port 8001

Every request gets 200 and one fixed JSON body (no Kafka, no auth, no parsing), served by
uvicorn exactly as `python -m gateway` serves the gateway (gateway.cli.server_config: same loop,
HTTP parser, logging and gc settings). Its CPU per call, driven by the same generator in the same
run, is what the gateway's CPU per call is compared with: what any Python HTTP service on this
server pays, whatever it does.
"""

from __future__ import annotations

import argparse

BODY = b'{"decision":"allow","reason":"started"}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read (and drop) the request body, as any handler must
        more = (await receive()).get("more_body", False)
    await send(_START)
    await send(_BODY)


def main(argv: list[str] | None = None) -> int:
    from gateway.cli import run_server

    parser = argparse.ArgumentParser(prog="python -m bench.floor_app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    run_server(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
