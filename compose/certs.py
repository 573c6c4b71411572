"""A throwaway certificate authority for the local secured services, made with ``openssl``.

``make_pki(folder)`` writes (PEM unless said otherwise, keys mode 0600)::

    ca.pem / ca.key                 the CA every client trusts (KAFKA_SSL_CA_FILE, REDIS_SSL_CA_FILE)
    server.pem / server.key         the servers' certificate, SAN IP:127.0.0.1, DNS:localhost
    server.p12                      the same as PKCS12, the Kafka broker's keystore
    mismatch.pem / mismatch.key     signed by the CA but for DNS:mismatch.invalid only: a listener
    mismatch.p12                    serving it is reached at 127.0.0.1, so a hostname check fails
    client.pem / client.key         a client certificate (CN=processor) for mutual TLS
    untrusted-ca.pem                a second CA nobody trusts (the "untrusted certificate" case)
    untrusted-server.pem / .key     a server certificate signed by it (same SANs as server.pem)

Every run makes new keys: nothing here is a secret worth keeping, and nothing is checked in.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compose.managed import LauncherError

SERVER_SAN = "IP:127.0.0.1,DNS:localhost"
MISMATCH_SAN = "DNS:mismatch.invalid"
CLIENT_CN = "processor"
DAYS = 30


@dataclass(frozen=True)
class Pki:
    """Paths of what ``make_pki`` wrote; ``keystore_password`` guards the .p12 keystores."""

    folder: Path
    ca_file: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_p12: Path
    mismatch_cert: Path
    mismatch_key: Path
    mismatch_p12: Path
    client_cert: Path
    client_key: Path
    untrusted_ca_file: Path
    untrusted_server_cert: Path
    untrusted_server_key: Path
    keystore_password: str


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise LauncherError("openssl not found: install it, e.g. `apt-get install -y openssl`")
    res = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise LauncherError(f"`openssl {args[0]}` failed: {(res.stdout + res.stderr)[-2000:]}")


def _key(path: Path) -> None:
    # EC P-256: quick to make (an RSA key takes a second on this machine) and every client speaks it.
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        str(path),
        cwd=path.parent,
    )
    path.chmod(0o600)


def _ca(folder: Path, stem: str, cn: str) -> tuple[Path, Path]:
    key, cert = folder / f"{stem}.key", folder / f"{stem}.pem"
    _key(key)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", str(DAYS), "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return cert, key


def issue(
    folder: Path, stem: str, cn: str, ca: tuple[Path, Path], *, san: str | None, client: bool = False
) -> tuple[Path, Path]:
    """A key and a certificate ``<stem>.pem``/``<stem>.key`` for ``cn`` signed by ``ca`` (cert, key);
    a server certificate names its addresses in ``san``, a client one is for client auth."""
    key, csr, cert = folder / f"{stem}.key", folder / f"{stem}.csr", folder / f"{stem}.pem"
    _key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}", cwd=folder)
    ext = folder / f"{stem}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    lines.append("extendedKeyUsage=clientAuth" if client else "extendedKeyUsage=serverAuth,clientAuth")
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-days", str(DAYS), "-sha256", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key


def _p12(cert: Path, key: Path, ca_file: Path, password: str) -> Path:
    out = cert.with_suffix(".p12")
    # The password goes through a file, never the command line (ps shows arguments).
    with tempfile.NamedTemporaryFile("w", dir=cert.parent, delete=False) as pw:
        pw.write(password)
    try:
        _openssl(
            "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile", str(ca_file),
            "-name", "server", "-out", str(out), "-passout", f"file:{pw.name}",
            cwd=cert.parent,
        )  # fmt: skip
    finally:
        Path(pw.name).unlink()
    out.chmod(0o600)
    return out


def make_pki(folder: Path | str) -> Pki:
    """A new CA, the server/mismatch/client certificates and an untrusted CA under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca = _ca(folder, "ca", "stream-concurrency local CA")
    untrusted = _ca(folder, "untrusted-ca", "untrusted CA")
    server = issue(folder, "server", "localhost", ca, san=SERVER_SAN)
    mismatch = issue(folder, "mismatch", "mismatch.invalid", ca, san=MISMATCH_SAN)
    client = issue(folder, "client", CLIENT_CN, ca, san=None, client=True)
    untrusted_server = issue(folder, "untrusted-server", "localhost", untrusted, san=SERVER_SAN)
    password = secrets.token_hex(16)
    return Pki(
        folder=folder,
        ca_file=ca[0],
        ca_key=ca[1],
        server_cert=server[0],
        server_key=server[1],
        server_p12=_p12(*server, ca[0], password),
        mismatch_cert=mismatch[0],
        mismatch_key=mismatch[1],
        mismatch_p12=_p12(*mismatch, ca[0], password),
        client_cert=client[0],
        client_key=client[1],
        untrusted_ca_file=untrusted[0],
        untrusted_server_cert=untrusted_server[0],
        untrusted_server_key=untrusted_server[1],
        keystore_password=password,
    )
