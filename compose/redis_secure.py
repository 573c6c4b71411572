"""Redis with TLS only and ACL users: compose/redis_server.py's server on ``--port 0 --tls-port``.

Clients must speak TLS (no plain port is open) and trust the throwaway CA; a client certificate
signed by it is accepted but not required (``--tls-auth-clients optional``), so mutual TLS can
be tested. Users and their rules come from compose/redis_acls.py; the ACL file holds only the
passwords' SHA-256.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path

from compose.certs import Pki
from compose.managed import RUN_DIR, LauncherError
from compose.redis_acls import USER_RULES, acl_file
from compose.redis_server import RedisServer


def _resp(*parts: str) -> bytes:
    return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)


class SecureRedisServer(RedisServer):
    """``redis-server`` on a TLS port only, ``default`` user off, the contract's ACL users on."""

    name = "redis-secure"

    def __init__(
        self,
        pki: Pki,
        passwords: Mapping[str, str],
        port: int | None = None,
        data_dir: Path | str = RUN_DIR / "redis-secure",
        detached: bool = False,
        extra_args: list[str] | None = None,
        cluster: bool = False,
    ) -> None:
        missing = set(USER_RULES) - set(passwords)
        if missing:
            raise LauncherError(f"the secured Redis needs passwords for {sorted(missing)}")
        super().__init__(port=port, data_dir=data_dir, detached=detached, extra_args=extra_args)
        self.pki = pki
        self.passwords = dict(passwords)
        self.cluster = cluster  # a cluster node: its users may also run the cluster client's commands

    @property
    def acl_path(self) -> Path:
        return self.data_dir / "users.acl"

    @property
    def url(self) -> str:
        """No user in it: see ``url_for``."""
        return f"rediss://127.0.0.1:{self.port}/0"

    def url_for(self, user: str) -> str:
        """``rediss://<user>@127.0.0.1:<port>/0``: the password comes from REDIS_PASSWORD_FILE."""
        return f"rediss://{user}@127.0.0.1:{self.port}/0"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "secrets.conf"

    def _prepare(self) -> None:
        super()._prepare()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.acl_path.write_text(acl_file(self.passwords, cluster=self.cluster))
        self.acl_path.chmod(0o600)
        # A cluster node's replica logs in to its master as admin. The password goes in a config
        # file (mode 0600), not on the command line, which `ps` shows to every user.
        self.conf_path.touch(mode=0o600)
        self.conf_path.chmod(0o600)
        masterauth = f"masteruser admin\nmasterauth {self.passwords['admin']}\n" if self.cluster else ""
        self.conf_path.write_text(masterauth)

    def _command(self) -> list[str]:
        binary, *args = super()._command()
        return [binary, str(self.conf_path), *args]  # a config file must come first

    def _listen_args(self) -> list[str]:
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca_file),
            "--tls-auth-clients", "optional",
            "--aclfile", str(self.acl_path),
        ]  # fmt: skip

    def _wait_ready(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        hello = _resp("AUTH", "admin", self.passwords["admin"]) + _resp("PING")
        while time.monotonic() < deadline:
            if not self.running:
                raise LauncherError("redis-server exited during start-up")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw:
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                        sock.settimeout(1.0)
                        sock.sendall(hello)
                        reply = b""
                        while reply.count(b"\r\n") < 2:
                            chunk = sock.recv(256)
                            if not chunk:
                                break
                            reply += chunk
                        if reply == b"+OK\r\n+PONG\r\n":
                            return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"TLS Redis on 127.0.0.1:{self.port} did not answer PING in time")
