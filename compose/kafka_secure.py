"""A secured single-node Kafka broker: compose/kafka_broker.py's broker with TLS, SASL and ACLs.

Listeners (all on 127.0.0.1, advertised as such)::

    SASL_SSL  port          SASL_SSL, mechanisms SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN
    MTLS      mtls_port     SSL with ssl.client.auth=required; the principal is the certificate's
                            CN (a client certificate CN=processor acts as User:processor)
    MISMATCH  mismatch_port SASL_SSL like the first, but its certificate is for mismatch.invalid
                            only: a client that checks the hostname refuses it
    CONTROLLER              SASL_PLAINTEXT + PLAIN, KRaft's own (clients never use it)

The StandardAuthorizer runs with ``allow.everyone.if.no.acl.found=false`` and
``super.users=User:admin``; the broker talks to itself as admin over PLAIN. SCRAM users are
created at format time (``--add-scram``), PLAIN users are inline in the listener's JAAS line.
The users' passwords come in; nothing here prints them (the data dir is mode 0700).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Mapping
from pathlib import Path

from compose.certs import Pki
from compose.kafka_broker import KAFKA_JARS_DIR, KafkaBroker, metadata_broker_count
from compose.managed import RUN_DIR, LauncherError, free_port

SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
ADMIN = "admin"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# A certificate's subject "CN=processor" becomes the principal User:processor on the MTLS listener.
PRINCIPAL_FROM_CN = "RULE:^CN=([^,]+).*$/$1/,DEFAULT"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _check_password(name: str, password: str) -> None:
    # JAAS and --add-scram quote nothing: keep passwords to characters that need no quoting.
    if not password.isalnum() or not name.replace("-", "").replace("_", "").isalnum():
        raise LauncherError(f"Kafka user {name!r}: names and passwords must be alphanumeric here")


class SecureKafkaBroker(KafkaBroker):
    """One KRaft node with SASL_SSL, mutual-TLS and hostname-mismatch listeners and ACLs on."""

    name = "kafka-secure"

    def __init__(
        self,
        pki: Pki,
        users: Mapping[str, str],
        port: int | None = None,
        mtls_port: int | None = None,
        mismatch_port: int | None = None,
        controller_port: int | None = None,
        data_dir: Path | str = RUN_DIR / "kafka-secure",
        jars_dir: Path | str = KAFKA_JARS_DIR,
        detached: bool = False,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        if ADMIN not in users:
            raise LauncherError("the secured broker needs an 'admin' user (its super user)")
        for name, password in users.items():
            _check_password(name, password)
        super().__init__(
            port=port,
            controller_port=controller_port,
            data_dir=data_dir,
            jars_dir=jars_dir,
            detached=detached,
            extra_properties=extra_properties,
        )
        self.pki = pki
        self.users = dict(users)
        self.mtls_port = mtls_port or free_port()
        self.mismatch_port = mismatch_port or free_port()

    @property
    def mtls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def mismatch_bootstrap(self) -> str:
        return f"127.0.0.1:{self.mismatch_port}"

    def _sasl_listener(self, listener: str, keystore: Path) -> dict[str, str]:
        admin_pw = self.users[ADMIN]
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
        prefix = f"listener.name.{listener}"
        return {
            f"{prefix}.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            f"{prefix}.plain.sasl.jaas.config": (
                f'{_PLAIN_MODULE} required username="{ADMIN}" password="{admin_pw}" {plain_users};'
            ),
            f"{prefix}.scram-sha-512.sasl.jaas.config": f"{_SCRAM_MODULE} required;",
            f"{prefix}.scram-sha-256.sasl.jaas.config": f"{_SCRAM_MODULE} required;",
            f"{prefix}.ssl.keystore.location": str(keystore),
            f"{prefix}.ssl.keystore.type": "PKCS12",
            f"{prefix}.ssl.keystore.password": self.pki.keystore_password,
            f"{prefix}.ssl.key.password": self.pki.keystore_password,
        }

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        admin_pw = self.users[ADMIN]
        props.update(
            {
                "listeners": (
                    f"SASL_SSL://127.0.0.1:{self.port},MTLS://127.0.0.1:{self.mtls_port},"
                    f"MISMATCH://127.0.0.1:{self.mismatch_port},CONTROLLER://127.0.0.1:{self.controller_port}"
                ),
                "advertised.listeners": (
                    f"SASL_SSL://127.0.0.1:{self.port},MTLS://127.0.0.1:{self.mtls_port},"
                    f"MISMATCH://127.0.0.1:{self.mismatch_port}"
                ),
                "listener.security.protocol.map": (
                    "SASL_SSL:SASL_SSL,MTLS:SSL,MISMATCH:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
                ),
                "inter.broker.listener.name": "SASL_SSL",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "sasl.mechanism.controller.protocol": "PLAIN",
                "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
                "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
                "listener.name.controller.plain.sasl.jaas.config": (
                    f'{_PLAIN_MODULE} required username="{ADMIN}" password="{admin_pw}" '
                    f'user_{ADMIN}="{admin_pw}";'
                ),
                **self._sasl_listener("sasl_ssl", self.pki.server_p12),
                **self._sasl_listener("mismatch", self.pki.mismatch_p12),
                "ssl.keystore.location": str(self.pki.server_p12),
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.password": self.pki.keystore_password,
                "ssl.key.password": self.pki.keystore_password,
                "ssl.truststore.location": str(self.pki.ca_file),
                "ssl.truststore.type": "PEM",
                "listener.name.mtls.ssl.client.auth": "required",
                "ssl.principal.mapping.rules": PRINCIPAL_FROM_CN,
                "authorizer.class.name": AUTHORIZER,
                "allow.everyone.if.no.acl.found": "false",
                "super.users": f"User:{ADMIN}",
            }
        )
        props.update(self.extra_properties)
        return props

    def _prepare(self) -> None:
        # server.properties holds the passwords: only the owner may read the data dir.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        try:
            super()._prepare()
        except LauncherError as exc:  # StorageTool's message may quote an --add-scram argument
            raise LauncherError(self._redacted(str(exc))) from None

    def _redacted(self, text: str) -> str:
        for secret in (*self.users.values(), self.pki.keystore_password):
            text = text.replace(secret, "***")
        return text

    def _format_args(self) -> list[str]:
        return [
            arg
            for name, password in self.users.items()
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]

    def _wait_ready(self, deadline: float) -> None:
        """Ready when a Metadata request over the MTLS listener (client certificate) lists a broker:
        all listeners open together, and this needs no SASL exchange written by hand."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise LauncherError("the Kafka process exited during start-up")
            try:
                with socket.create_connection(("127.0.0.1", self.mtls_port), timeout=2.0) as raw:
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                        sock.settimeout(2.0)
                        if metadata_broker_count(sock) >= 1:
                            return
            except (OSError, struct.error) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"secured Kafka on {self.mtls_bootstrap} did not answer in time (last: {last!r})")
