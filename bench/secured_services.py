"""What TLS + SASL cost the processor, measured side by side (docs/security.md, "What it costs").

`python -m bench.secured_services DIR` starts one Kafka broker and one Redis that serve both ways at
once: the secured local broker (compose/kafka_secure.py: SASL_SSL, the authorizer on) with one more
listener, PLAINTEXT, whose anonymous clients are super users; and a redis-server with a plain port
and a TLS port. It prints the `bench.run --only live_cost` command whose two processor variants
alternate on the same broker, the same Redis, the same run: PLAINTEXT + redis:// (the bench's
defaults) against SASL_SSL (SCRAM-SHA-512, the admin user) + rediss://. Ctrl-C stops both.

A measuring tool only: no component should ever be given a listener like the PLAINTEXT one here.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from compose.certs import make_pki
from compose.kafka_secure import SecureKafkaBroker
from compose.managed import free_port
from compose.redis_server import RedisServer
from compose.secure_services import KAFKA_USERS, _write_passwords


class DualRedisServer(RedisServer):
    """redis-server on a plain port and on a TLS port (no client certificate asked)."""

    def __init__(self, pki, tls_port: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pki = pki
        self.tls_port = tls_port

    def _listen_args(self) -> list[str]:
        return [
            *super()._listen_args(),
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


def dual_broker(folder: Path, pki, users: dict[str, str]) -> SecureKafkaBroker:
    plain_port = free_port()
    broker = SecureKafkaBroker(pki, users, data_dir=folder / "kafka")
    props = broker._properties()  # the secured listeners, to which PLAIN is added
    broker.extra_properties = {
        "listeners": f"{props['listeners']},PLAIN://127.0.0.1:{plain_port}",
        "advertised.listeners": f"{props['advertised.listeners']},PLAIN://127.0.0.1:{plain_port}",
        "listener.security.protocol.map": f"{props['listener.security.protocol.map']},PLAIN:PLAINTEXT",
        "super.users": "User:admin;User:ANONYMOUS",
    }
    broker.plain_bootstrap = f"127.0.0.1:{plain_port}"  # type: ignore[attr-defined]
    return broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.secured_services", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path, help="where the CA, the passwords and the data go")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    pki = make_pki(folder / "pki")
    users = _write_passwords(folder, "kafka", KAFKA_USERS)
    broker = dual_broker(folder, pki, users)
    redis = DualRedisServer(pki, free_port(), port=free_port(), data_dir=folder / "redis")
    broker.start(180)
    try:
        redis.start(60)
        try:
            secured = {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "admin",
                "KAFKA_SASL_PASSWORD_FILE": str(folder / "secrets" / "kafka-admin.password"),
                "KAFKA_SSL_CA_FILE": str(pki.ca_file),
                "REDIS_URL": f"rediss://127.0.0.1:{redis.tls_port}/0",
                "REDIS_SSL_CA_FILE": str(pki.ca_file),
            }
            variant = ",".join(f"{k}={v}" for k, v in secured.items())
            command = [
                "python", "-m", "bench.run", "--only", "live_cost",
                "--bootstrap", broker.plain_bootstrap,  # type: ignore[attr-defined]
                "--redis-url", f"redis://127.0.0.1:{redis.port}/0",
                "--processor-env", "", "--processor-env", variant,
            ]  # fmt: skip
            print("PLAINTEXT and SASL_SSL side by side; run:\n" + shlex.join(command), flush=True)
            stop = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop)
            signal.sigwait(stop)
        finally:
            redis.stop()
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
