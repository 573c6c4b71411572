"""A short curl session against a running gateway, printed command by command with its real output.

    python -m gateway.demo_session --url http://127.0.0.1:8000 [--secret S] [--user U]

Start x4 (the fourth denied 409 with its advice, at the default 3 streams), heartbeat, stop,
terminate, then the listing. Each step runs the real `curl`; the token is shown as $TOKEN.
Without --secret the token is signed with the configured GATEWAY_AUTH_SECRET, as
`concurrency-gateway token` does. Exits 1 when a step's status is not the expected one.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import jwt

from gateway.auth import dev_token
from gateway.settings import load_gateway_settings

WRITE_OUT = "\\nHTTP %{http_code}\\n"  # a literal backslash-n: curl writes the newline


def _token(user: str, secret: str | None) -> str:
    if secret is None:
        return dev_token(load_gateway_settings(allow_insecure_dev_secret=True), user)
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, secret, algorithm="HS256")


def _wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway at {url} is not healthy after {timeout:.0f} s")
        time.sleep(0.2)


def _curl(
    url: str, token: str, method: str, path: str, body: str | None, key: str | None
) -> tuple[str, list]:
    """(the command as a reader would type it, with $TOKEN; the argv that runs it)."""
    argv = ["curl", "-s", "-w", WRITE_OUT, "-X", method, f"{url}{path}", "-H", "AUTH"]
    if key is not None:
        argv += ["-H", f"Idempotency-Key: {key}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", body]
    line = " ".join('"Authorization: Bearer $TOKEN"' if a == "AUTH" else shlex.quote(a) for a in argv)
    return line, [f"Authorization: Bearer {token}" if a == "AUTH" else a for a in argv]


def run(url: str, user: str, secret: str | None) -> int:
    _wait_healthy(url)
    token = _token(user, secret)
    print(f"$ TOKEN=$(concurrency-gateway token {user})")  # noqa: T201 - the demo's output
    steps = [
        (
            "POST",
            "/v1/sessions",
            '{"sessionId": "tv", "deviceId": "tv-livingroom", "deviceClass": "tv"}',
            200,
        ),
        (
            "POST",
            "/v1/sessions",
            '{"sessionId": "phone", "deviceId": "phone-anna", "deviceClass": "mobile"}',
            200,
        ),
        ("POST", "/v1/sessions", '{"sessionId": "laptop", "deviceId": "laptop", "deviceClass": "web"}', 200),
        (
            "POST",
            "/v1/sessions",
            '{"sessionId": "tablet", "deviceId": "tablet", "deviceClass": "mobile"}',
            409,
        ),
        ("POST", "/v1/sessions/tv/heartbeat", None, 200),
        ("DELETE", "/v1/sessions/phone", None, 200),
        ("POST", "/v1/sessions/laptop/terminate", '{"sessionId": "tv"}', 200),
        ("GET", "/v1/sessions", None, 200),
    ]
    failed = 0
    for n, (method, path, body, expected) in enumerate(steps):
        key = f"demo-{n}" if method != "GET" else None
        line, argv = _curl(url, token, method, path, body, key)
        print(f"\n$ {line}")  # noqa: T201
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        output = done.stdout.rstrip("\n")
        print(output or done.stderr.rstrip())  # noqa: T201
        if not output.endswith(f"HTTP {expected}"):
            print(f"(expected HTTP {expected})")  # noqa: T201
            failed += 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo_session", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's base URL")
    parser.add_argument(
        "--secret", default=None, help="its GATEWAY_AUTH_SECRET (default: the configured one)"
    )
    parser.add_argument("--user", default=None, help="the demo's userId (default: a new one)")
    args = parser.parse_args(argv)
    return run(args.url.rstrip("/"), args.user or f"demo-{uuid.uuid4().hex[:6]}", args.secret)


if __name__ == "__main__":
    sys.exit(main())
